"""`RateGate`: a task starts only while its type's rate allows (`TaskOptions.rate`).

Each start takes a slot of a `limits` moving window (per type, or per rate key),
in a storage every process on the store shares: the store's own when it offers one
(`SharesRates`: Redis, SQLite), else `limits`' in-process memory storage (the memory
store lives in one process anyway). A task refused a slot does not start: it goes
back to the queue, its attempt not counted and no task-started published, not
before the window has room again, and says so in its snapshot (``waiting_for``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._task_keys import rate_key_of

if TYPE_CHECKING:
    from limits import RateLimitItem

    from ._record import TaskRecord
    from ._registry import TaskDefinition

__all__ = ["RateGate", "SharesRates", "rate_reason"]

#: The shortest wait before a refused task is tried again (a window's edge).
_MIN_WAIT = 0.001
#: Windows known full, past which the ones that have room again are forgotten.
_PRUNE_AT = 1000


@runtime_checkable
class SharesRates(Protocol):
    """A store whose processes share rate limits: it offers a `limits` moving-window
    limiter (`limits.aio.strategies.MovingWindowRateLimiter`) on its own storage."""

    def rate_limiter(self) -> Any:
        """The limiter (made on first use, closed with the store)."""
        ...


class _MemoryLimiter:
    """`limits`' in-process memory storage behind the async calls the gate makes (its
    calls never block, so they run on asyncio and trio alike)."""

    def __init__(self) -> None:
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    async def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        return self._limiter.hit(item, *identifiers)

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> Any:
        return self._limiter.get_window_stats(item, *identifiers)


def rate_reason(definition: TaskDefinition[Any, Any], record: TaskRecord) -> str:
    """What a task held back by its rate shows as ``waiting_for``."""
    key = rate_key_of(record)
    text = f"rate limit {definition.rate_text()}"
    return text if key is None else f"{text} (key '{key}')"


class RateGate:
    """Takes a rate slot for each task about to start (see the module docstring)."""

    def __init__(self, store: object) -> None:
        self._shared = store if isinstance(store, SharesRates) else None
        self._memory: _MemoryLimiter | None = None
        #: Windows known full, by (type, rate key), until when (epoch seconds): a
        #: moving window has no room before its oldest start leaves it, whichever
        #: process looks, so until then a task is refused without asking the storage.
        self._full_until: dict[tuple[str, str | None], float] = {}

    def _limiter(self) -> Any:
        if self._shared is not None:
            return self._shared.rate_limiter()
        if self._memory is None:
            self._memory = _MemoryLimiter()
        return self._memory

    async def admit(self, definition: TaskDefinition[Any, Any], record: TaskRecord) -> float | None:
        """None if the task may start now (its slot is taken), else the seconds until
        its window has room."""
        item = definition.rate_item
        if item is None:
            return None
        key = rate_key_of(record)
        window = (record.type, key)
        now = time.time()
        if len(self._full_until) > _PRUNE_AT:
            self._prune(now)
        until = self._full_until.get(window)
        if until is not None:
            if now < until:
                return until - now
            del self._full_until[window]
        limiter = self._limiter()
        identifiers = ("taskbus", record.type) if key is None else ("taskbus", record.type, key)
        if await limiter.hit(item, *identifiers):
            return None
        stats = await limiter.get_window_stats(item, *identifiers)
        until = self._full_until[window] = float(stats.reset_time)
        return max(until - time.time(), _MIN_WAIT)

    def _prune(self, now: float) -> None:
        for window, until in list(self._full_until.items()):
            if until <= now:
                del self._full_until[window]
