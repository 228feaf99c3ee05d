"""Schedules kept in a dict: the memory store's, and the reference of what each
`ScheduleStore` method means (every method is one step: no await inside)."""

from __future__ import annotations

import builtins
from collections.abc import Callable

from .._events import Event
from .._record import TaskRecord
from .._schedule import Schedule, to_datetime

__all__ = ["SCHEDULE_TOLERANCE", "MemorySchedules", "merge_schedule"]

#: Fire times compare equal within this (seconds): stored ones hold microseconds.
SCHEDULE_TOLERANCE = 1e-6


def merge_schedule(old: Schedule | None, new: Schedule, *, keep_paused: bool) -> Schedule:
    """What `put_schedule` stores: `new`, keeping `old`'s state if the timing is the same."""
    if old is None or old.timing != new.timing:
        return new
    kept: dict[str, object] = {
        "next_fire_at": old.next_fire_at,
        "last_fire_at": old.last_fire_at,
        "last_task_id": old.last_task_id,
        "created_at": old.created_at,
    }
    if keep_paused:
        kept["paused"] = old.paused
    return new.model_copy(update=kept)


class MemorySchedules:
    """`ScheduleStore` in memory; ``add(record, event)`` adds a fire's task (and logs
    its event) in the task store, at once."""

    def __init__(self, add: Callable[[TaskRecord, Event | None], None]) -> None:
        self._schedules: dict[str, Schedule] = {}
        self._add = add

    async def put_schedule(self, schedule: Schedule, *, keep_paused: bool = False) -> Schedule:
        stored = merge_schedule(self._schedules.get(schedule.id), schedule, keep_paused=keep_paused)
        self._schedules[schedule.id] = stored
        return stored

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        return self._schedules.get(schedule_id)

    async def list_schedules(self, *, owner: str | None = None) -> builtins.list[Schedule]:
        return sorted(
            (s for s in self._schedules.values() if owner is None or s.owner == owner),
            key=lambda s: s.id,
        )

    async def remove_schedule(self, schedule_id: str) -> bool:
        return self._schedules.pop(schedule_id, None) is not None

    async def pause_schedule(
        self, schedule_id: str, *, paused: bool, next_fire_at: float | None = None
    ) -> Schedule | None:
        old = self._schedules.get(schedule_id)
        if old is None:
            return None
        update: dict[str, object] = {"paused": paused}
        if next_fire_at is not None:
            update["next_fire_at"] = to_datetime(next_fire_at)
        self._schedules[schedule_id] = new = old.model_copy(update=update)
        return new

    async def due_schedules(self, until: float, *, limit: int = 1000) -> builtins.list[Schedule]:
        due = [
            s
            for s in self._schedules.values()
            if not s.paused and s.next_fire is not None and s.next_fire <= until
        ]
        due.sort(key=lambda s: (s.next_fire, s.id))
        return due[:limit]

    async def fire_schedule(
        self,
        schedule_id: str,
        *,
        due: float,
        next_fire_at: float,
        record: TaskRecord | None,
        fired_for: float | None = None,
        event: Event | None = None,
    ) -> bool:
        old = self._schedules.get(schedule_id)
        if (
            old is None
            or old.paused
            or old.next_fire is None
            or abs(old.next_fire - due) > SCHEDULE_TOLERANCE
        ):
            return False
        update: dict[str, object] = {"next_fire_at": to_datetime(next_fire_at)}
        if record is not None:
            self._add(record, event)
            update["last_task_id"] = record.id
            update["last_fire_at"] = to_datetime(fired_for)
        self._schedules[schedule_id] = old.model_copy(update=update)
        return True
