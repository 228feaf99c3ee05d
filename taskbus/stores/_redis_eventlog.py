"""The Redis store's event log: a stream every process reads (`follow`)."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import anyio
from redis.exceptions import RedisError

from .._errors import StoreError
from .._events import Event, event_order
from ._event_codec import event_from_text
from ._redis_base import RedisBase
from ._redis_items import item

__all__ = ["RedisEventLog"]

logger = logging.getLogger("taskbus.stores.redis")

_READ_BATCH = 1000
_BLOCK_MS = 1000
_RETRY_PAUSE = 0.5


class RedisEventLog(RedisBase):
    """`EventBroker` on Redis: events on a stream whose entry ids are their ids."""

    def deliver_events(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` for each logged event, in log order, as `follow`
        reads it (this store's own and every other process's)."""
        self._deliver = callback

    def log_event(self, event: Event) -> None:
        """Log an event that changes no task (progress, a batch's), not waited for."""
        if self._client is None:
            logger.error("%r is not open: %s is lost", self, event.name)
            return
        self._write_soon(item("", events=[event]))

    async def events_after(self, after: str | None, *, limit: int = 1000) -> builtins.list[Event]:
        """Up to `limit` events logged after the one with id `after` (from the oldest
        kept for None), oldest first; none for an id this log never issued."""
        if after is None:
            start = "-"
        else:
            try:
                ms, seq = event_order(after)
            except ValueError:
                return []
            start = f"({ms}-{seq}"
        entries = await self._read(
            lambda client: client.xrange(self._key("events"), start, "+", count=limit)
        )
        return _events(entries)

    async def last_event_id(self) -> str | None:
        last: str | None = await self._read(self._last_id)
        return last

    async def flush(self) -> None:
        """Wait until every write made so far is on the server and, while `follow`
        runs, until its events are delivered."""
        _, calls = self._require()
        await calls.send_pending()
        with anyio.move_on_after(10):
            while self._following and event_order(self._last_read) < self._logged_up_to:
                await self._delivered.wait()

    async def follow(self) -> None:
        """Send the writes nobody waits for, and deliver every logged event in log
        order, until cancelled. A lost connection is retried (and logged once)."""
        _, calls = self._require()
        self._following = True
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(calls.serve)
                await self._read_log()
        finally:
            self._following = False
            reader = self._reader
            if reader is not None:
                # A read cancelled mid-flight leaves its socket closing: close it now,
                # before the event loop may end.
                with anyio.CancelScope(shield=True):
                    await reader.connection_pool.disconnect()

    async def _read_log(self) -> None:
        failing = False
        while True:
            reader = self._reader
            if reader is None:
                raise StoreError(f"{self!r} is not open")
            try:
                answer: Any = await reader.xread(
                    {self._key("events"): self._last_read}, count=_READ_BATCH, block=_BLOCK_MS
                )
            except (RedisError, OSError) as exc:
                self._watch.lost("event log", exc)
                if not failing:
                    logger.error("%r: reading the event log failed: %s", self, exc)
                failing = True
                await anyio.sleep(_RETRY_PAUSE)
                continue
            if failing:
                self._watch.reached("event log")
                logger.warning("%r: reading the event log works again", self)
                failing = False
            for _stream, entries in answer or []:
                if entries:
                    self._last_read = entries[-1][0]
                for event in _events(entries):
                    if self._deliver is not None:
                        try:
                            self._deliver(event)
                        except Exception:
                            logger.exception("%r: delivering %s", self, event.name)
            delivered, self._delivered = self._delivered, anyio.Event()
            delivered.set()


def _events(entries: Iterable[tuple[str, Mapping[str, str]]]) -> builtins.list[Event]:
    events: builtins.list[Event] = []
    for event_id, body in entries:
        event = event_from_text(event_id, body.get("n", ""), body.get("b", ""))
        if event is not None:
            events.append(event)
    return events
