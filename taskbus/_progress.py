"""Debounced progress: at most one task-progress event per task per interval.

The first update goes out at once (leading edge); later ones within the
interval only update the record, and one trailing event carries the latest
value when the interval ends. `finish()` flushes a pending value before the
final event and forgets the task, so no progress event can follow it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from ._clock import Clock
from ._timers import TimerHandle, Timers

__all__ = ["ProgressDebouncer", "estimate_remaining"]


def estimate_remaining(percent: float, started_at: float | None, now: float) -> float | None:
    """Seconds left at the rate so far, or None until progress has moved."""
    if started_at is None or percent <= 0:
        return None
    elapsed = max(now - started_at, 0.0)
    return elapsed * (100.0 - percent) / percent


class _Keyed(Protocol):
    @property
    def id(self) -> str: ...


K = TypeVar("K", bound=_Keyed)


class _Slot:
    __slots__ = ("last_sent", "pending", "timer")

    def __init__(self) -> None:
        self.last_sent = float("-inf")
        self.pending = False
        self.timer: TimerHandle | None = None


class ProgressDebouncer(Generic[K]):
    """Rate-limits `emit(item)` per item id (a task, a batch) to one call per `interval`."""

    def __init__(
        self,
        clock: Clock,
        timers: Timers,
        emit: Callable[[K], None],
        interval: float = 0.1,
    ) -> None:
        if interval < 0:
            raise ValueError(f"progress interval must be >= 0, not {interval}")
        self._clock = clock
        self._timers = timers
        self._emit = emit
        self.interval = interval
        self._slots: dict[str, tuple[_Slot, K]] = {}

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def active(self) -> bool:
        """True while any task has debounce state (so `finish` has work to do)."""
        return bool(self._slots)

    def update(self, record: K) -> None:
        """The record's progress fields changed; emit now or schedule a trailing emit."""
        entry = self._slots.get(record.id)
        if entry is None:
            entry = (_Slot(), record)
            self._slots[record.id] = entry
        slot = entry[0]
        now = self._clock.monotonic()
        due = slot.last_sent + self.interval
        if now >= due:
            self._send(slot, record, now)
        elif slot.timer is None:
            slot.pending = True
            slot.timer = self._timers.call_at(due, lambda: self._flush_due(record.id))
        else:
            slot.pending = True

    def _send(self, slot: _Slot, record: K, now: float) -> None:
        slot.last_sent = now
        slot.pending = False
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        self._emit(record)

    def _flush_due(self, task_id: str) -> None:
        entry = self._slots.get(task_id)
        if entry is not None:
            entry[0].timer = None
            if entry[0].pending:
                self._send(entry[0], entry[1], self._clock.monotonic())

    def finish(self, task_id: str) -> None:
        """Flush a pending update now and forget the task (call before its final event)."""
        entry = self._slots.pop(task_id, None)
        if entry is not None and entry[0].pending:
            self._send(entry[0], entry[1], self._clock.monotonic())
        elif entry is not None and entry[0].timer is not None:
            entry[0].timer.cancel()
