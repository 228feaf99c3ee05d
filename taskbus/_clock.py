"""The clock every time-based part of taskbus reads, injectable for tests."""

from __future__ import annotations

import math
import time
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Wall time for timestamps, monotonic time for durations, and a way to sleep.

    Timeouts, back-off, delays and debouncing are measured on `monotonic()`, so a
    step of the system clock (NTP, a user changing the time) moves none of them;
    `now()` only stamps events and records. `taskbus.testing.FakeClock`
    implements it with time that only moves when a test says so.
    """

    def now(self) -> float:
        """Wall time: seconds since the epoch (for timestamps and stored times)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never steps (for durations); any origin."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of this clock's monotonic time (`math.inf`: until cancelled)."""
        ...


class SystemClock:
    """The real clock: `time.time()`, `time.monotonic()` and anyio's sleep."""

    __slots__ = ()

    # The functions themselves, not methods wrapping them: read on every task.
    now = staticmethod(time.time)
    monotonic = staticmethod(time.monotonic)

    async def sleep(self, seconds: float) -> None:
        if math.isinf(seconds):
            await anyio.sleep_forever()
        else:
            await anyio.sleep(max(seconds, 0.0))
