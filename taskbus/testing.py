"""Helpers for testing code that uses taskbus: an event recorder and a fake clock."""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

from ._bus import ALL_EVENTS
from ._events import Event

__all__ = ["EventRecorder", "FakeClock"]

E = TypeVar("E", bound=Event)


class FakeClock:
    """A `Clock` whose time moves only when `advance()` (or `jump()`) is called.

    `advance` moves wall and monotonic time together; `jump` steps only the wall
    clock, as NTP or a user changing the time would. Sleepers wake, in deadline
    order, as monotonic time passes their deadline. Use it from the event loop's
    thread.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._monotonic = 1_000.0
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._monotonic

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        if not math.isinf(seconds):
            heapq.heappush(self._sleepers, (self._monotonic + seconds, next(self._seq), event))
        await event.wait()

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._now += seconds
        self._monotonic += seconds
        while self._sleepers and self._sleepers[0][0] <= self._monotonic:
            heapq.heappop(self._sleepers)[2].set()

    def jump(self, seconds: float) -> None:
        """Step the wall clock by `seconds` (either way); durations do not notice."""
        self._now += seconds

    @property
    def sleepers(self) -> int:
        """Sleepers still waiting (cancelled ones included until their deadline)."""
        return len(self._sleepers)


class EventRecorder:
    """Records every event of a bus, and waits for the ones a test expects.

    ``recorder = EventRecorder(bus)`` then ``await recorder.wait_for(TaskCompleted,
    task_id=...)``. Waits are bounded (`timeout`, default 5 s).
    """

    def __init__(self, bus: Any, *, timeout: float = 5.0) -> None:
        self.events: list[Event] = []
        self.timeout = timeout
        self._changed = anyio.Event()
        self._bus = bus
        bus.on(ALL_EVENTS, self._record)

    def _record(self, event: Event) -> None:
        self.events.append(event)
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    def close(self) -> None:
        self._bus.off(ALL_EVENTS, self._record)

    def names(self, task_id: str | None = None) -> list[str]:
        """Event names in order, for one task or all."""
        return [
            e.name for e in self.events if task_id is None or getattr(e, "task_id", None) == task_id
        ]

    def of(self, kind: type[E], task_id: str | None = None) -> list[E]:
        """Recorded events of one class, optionally for one task."""
        return [
            e
            for e in self.events
            if isinstance(e, kind) and (task_id is None or getattr(e, "task_id", None) == task_id)
        ]

    async def wait_for(
        self,
        kind: type[E],
        *,
        task_id: str | None = None,
        count: int = 1,
        where: Callable[[E], bool] | None = None,
        timeout: float | None = None,
    ) -> E:
        """Wait until `count` matching events were recorded; return the last one."""

        def matching() -> list[E]:
            return [e for e in self.of(kind, task_id) if where is None or where(e)]

        with anyio.fail_after(self.timeout if timeout is None else timeout):
            while len(found := matching()) < count:
                await self._changed.wait()
        return found[count - 1]
