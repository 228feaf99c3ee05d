"""One timer task for everything that must happen at a time.

Timeouts, not-before times and progress flushes all register here, so the
runtime pays a heap push per timer instead of a cancel scope or a sleeping task.
Times are on the clock's monotonic scale, so a step of the wall clock moves none.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable

import anyio

from ._clock import Clock

__all__ = ["TimerHandle", "Timers"]

logger = logging.getLogger("taskbus.timers")

_COMPACT_MIN = 256


class TimerHandle:
    """A scheduled callback; `cancel()` makes sure it never runs."""

    __slots__ = ("_owner", "callback", "cancelled", "when")

    def __init__(self, owner: Timers, when: float, callback: Callable[[], None]) -> None:
        self._owner = owner
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        if not self.cancelled:
            self.cancelled = True
            self._owner._cancelled_count += 1


class Timers:
    """A heap of callbacks run by a single task on the injected clock."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._cancelled_count = 0
        self._armed_for = math.inf
        self._sleep_scope: anyio.CancelScope | None = None

    def __len__(self) -> int:
        return len(self._heap) - self._cancelled_count

    def call_at(self, when: float, callback: Callable[[], None]) -> TimerHandle:
        """Run `callback` (sync, quick) once the monotonic clock reaches `when`."""
        handle = TimerHandle(self, when, callback)
        heapq.heappush(self._heap, (when, next(self._seq), handle))
        if when < self._armed_for and self._sleep_scope is not None:
            self._sleep_scope.cancel()
        if self._cancelled_count > _COMPACT_MIN and self._cancelled_count * 2 > len(self._heap):
            self._compact()
        return handle

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        return self.call_at(self._clock.monotonic() + delay, callback)

    def _compact(self) -> None:
        # In place: run_due may hold the list while a callback adds a timer.
        self._heap[:] = [entry for entry in self._heap if not entry[2].cancelled]
        heapq.heapify(self._heap)
        self._cancelled_count = 0

    def run_due(self) -> float:
        """Run every due callback; return when the next one is due (inf: none)."""
        heap = self._heap
        while heap:
            when, _, handle = heap[0]
            if handle.cancelled:
                heapq.heappop(heap)
                self._cancelled_count -= 1
                continue
            if when > self._clock.monotonic():
                return when
            heapq.heappop(heap)
            handle.cancelled = True
            try:
                handle.callback()
            except Exception:
                logger.exception("timer callback %r raised", handle.callback)
        return math.inf

    async def run(self) -> None:
        """Serve timers until cancelled."""
        while True:
            next_due = self.run_due()
            self._armed_for = next_due
            with anyio.CancelScope() as scope:
                self._sleep_scope = scope
                await self._clock.sleep(next_due - self._clock.monotonic())
            self._sleep_scope = None
