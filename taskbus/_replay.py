"""Subscriptions that miss nothing: past events from the store's log or the bus's
history, replayed before the live ones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from ._bus import EventBus
from ._events import Event
from ._lifecycle import Lifecycle, final_event
from ._record import TaskRecord
from ._validation import check_event_id

__all__ = ["EventReplay"]


class EventReplay:
    """Past and live events for one bus's subscribers."""

    def __init__(
        self,
        *,
        events: EventBus,
        lifecycle: Lifecycle,
        record: Callable[[str], Awaitable[TaskRecord]],
    ) -> None:
        self._events = events
        self._lifecycle = lifecycle
        self._record = record

    @asynccontextmanager
    async def subscribe(
        self,
        *,
        task_id: str | None,
        task_type: str | None,
        events: list[str | type[Event]] | None,
        buffer: int,
        after: str | None,
    ) -> AsyncIterator[Any]:
        """A subscription, the events since `after` (or the task's final event, if it
        has finished) put in it first."""
        if after is not None:
            check_event_id(after)
        async with self._events.subscribe(
            task_id=task_id, task_type=task_type, events=events, buffer=buffer
        ) as stream:
            # Read the task only once the live subscription is open: a final event
            # published while it is read is then either heard live or replayed here
            # (the stream closes at the first one, so never both).
            record = await self._record(task_id) if task_id is not None else None
            if after is not None:
                stream.replay(await self.events_after(after, limit=stream.hard_limit))
            elif record is not None and self._lifecycle.settled(record):
                stream.put(final_event(record))
            yield stream

    async def flush(self) -> None:
        """Wait until the store's event log (if any) has logged and delivered everything."""
        if self._lifecycle.log is not None:
            await self._lifecycle.log.flush()

    async def events_after(self, after: str | None, *, limit: int) -> list[Event]:
        """Up to `limit` events after id `after`, from the log if the store keeps one."""
        if after is not None:
            check_event_id(after)
        if type(limit) is not int or not 1 <= limit <= 100_000:
            raise ValueError(f"limit must be an int from 1 to 100000, not {limit!r}")
        log = self._lifecycle.log
        if log is not None:
            return await log.events_after(after, limit=limit)
        return self._events.recent_after(after)[:limit]
