"""The SQLite store's event log: logging, replaying and following it.

Events are written by the writer thread with the changes they describe (see
`_sqlite_events`); `OrderedDelivery` hands them to the runtime in id order,
this process's as they commit, other processes' as `follow` reads them.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable

import anyio

from .._errors import StoreError
from .._events import Event, event_order
from ._sqlite_base import SqliteBase
from ._sqlite_events import last_event_id, read_events_after

__all__ = ["SqliteEventLog"]

logger = logging.getLogger("taskbus.stores.sqlite")

_POLL_MIN = 0.005
_POLL_MAX = 0.1
_POLL_BATCH = 1000


class SqliteEventLog(SqliteBase):
    """`EventBroker` on SQLite: an events table, numbered as it commits."""

    def deliver_events(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` on the event loop for each logged event, numbered,
        once it is committed, in id order (with those other processes log, once
        `follow` runs)."""
        self._delivery.deliver = callback

    def log_event(self, event: Event) -> None:
        """Log an event that comes with no change to a task (progress, a batch's);
        committed by the next transaction, at the latest one pass of the event loop
        from now."""
        try:
            self._require_writer().log(event, soon=True)
        except StoreError as exc:
            if "writer" not in self._reported:
                self._reported.add("writer")
                logger.error("%s; events are not logged", exc)

    async def events_after(self, after: str | None, *, limit: int = 1000) -> builtins.list[Event]:
        """Up to `limit` committed events after the one with id `after` (from the
        oldest the log keeps for None), oldest first."""
        start = _event_number(after)
        if start is None:
            return []
        return await self._read(lambda conn: read_events_after(conn, start, limit))

    async def last_event_id(self) -> str | None:
        """The id of the newest event ever committed to the log, or None."""
        last = await self._read(last_event_id)
        return str(last) if last else None

    async def follow(self) -> None:
        """Deliver the events other processes log, in id order, until cancelled.

        SQLite has no notifications: the log is read every 5 ms while events keep
        coming, backing off to every 100 ms when idle (one indexed read each), and at
        once when a commit of this process leaves a gap, or when another process on
        this machine says it committed (`_sqlite_wake`).
        """
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._wake_channel.listen, self._woken)
            await self._poll()
            tg.cancel_scope.cancel()

    def _woken(self) -> None:
        if self._poll_wake is not None:
            self._poll_wake.set()

    async def _poll(self) -> None:
        interval = _POLL_MIN
        failing = False
        self._poll_wake = anyio.Event()
        while True:
            with anyio.move_on_after(interval):
                await self._poll_wake.wait()
            # Before the read: a wake-up during it is for a commit it may miss.
            self._poll_wake = anyio.Event()
            try:
                found = await self._poll_once()
            except StoreError as exc:
                if not failing:
                    logger.error("%r: reading the event log failed: %s", self, exc)
                failing = True
                interval = 1.0
                continue
            failing = False
            interval = _POLL_MIN if found else min(interval * 2, _POLL_MAX)

    async def _poll_once(self) -> int:
        """Read the log once; how many events it found that were news here."""
        delivery = self._delivery
        start = delivery.next_id - 1
        # Events committed before the one at the gap's end are all visible to a read
        # that starts now; a gap that opens during the read is the next read's.
        gap_end = delivery.gap_end
        events = await self._read(lambda conn: read_events_after(conn, start, _POLL_BATCH))
        # Those this process delivered as it committed them, during the read, are
        # not news: they must not keep the poll at its shortest interval.
        fresh = sum(1 for event in events if int(event.id or 0) >= delivery.next_id)
        delivery.offer(events)
        if gap_end is not None and len(events) < _POLL_BATCH:
            delivery.skip_missing(gap_end)
        return fresh


def _event_number(event_id: str | None) -> int | None:
    """The log position after `event_id` (0 for None); None for an id this store
    never issues."""
    if event_id is None:
        return 0
    try:
        number, sequence = event_order(event_id)
    except ValueError:
        return None
    return number if not sequence and number < 2**63 else None
