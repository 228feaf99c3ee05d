"""The clock every time-based part of taskbus reads, injectable for tests."""

from __future__ import annotations

import math
import time
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Wall time in epoch seconds, and a way to sleep on it.

    `taskbus.testing.FakeClock` implements it with time that only moves when a
    test says so.
    """

    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of this clock's time (`math.inf`: until cancelled)."""
        ...


class SystemClock:
    """The real clock: `time.time()` and anyio's sleep."""

    __slots__ = ()

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        if math.isinf(seconds):
            await anyio.sleep_forever()
        else:
            await anyio.sleep(max(seconds, 0.0))
