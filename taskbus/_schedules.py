"""`ScheduleBook`: what `TaskBus.schedule` and its siblings do: check a schedule,
store it (an upsert), list, pause, resume and remove schedules."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

from ._clock import Clock
from ._errors import BusNotRunning, InvalidSchedule, ScheduleNotFound, StoreError
from ._schedule import (
    MisfirePolicy,
    Schedule,
    check_options,
    check_seconds,
    new_schedule_id,
    to_datetime,
)
from ._schedule_timing import timing_of
from ._scheduler import Scheduler
from .stores import Store
from .stores._base import ScheduleStore

if TYPE_CHECKING:
    from ._registry import TaskRegistry

__all__ = ["ScheduleBook"]


class ScheduleBook:
    """The schedules of one bus's store."""

    def __init__(
        self,
        *,
        store: Store,
        registry: TaskRegistry,
        clock: Clock,
        scheduler: Scheduler | None,
        running: Callable[[], bool],
    ) -> None:
        self._store = store if isinstance(store, ScheduleStore) else None
        self._store_name = type(store).__name__
        self._registry = registry
        self._clock = clock
        self._scheduler = scheduler
        self._running = running

    def _require(self, *, writes: bool = False) -> ScheduleStore:
        if writes and not self._running():
            raise BusNotRunning("the bus is not running: change schedules inside `async with bus:`")
        if self._store is None:
            raise StoreError(f"{self._store_name} keeps no schedules (not a ScheduleStore)")
        return self._store

    def _wake(self) -> None:
        if self._scheduler is not None:
            self._scheduler.wake()

    async def add(
        self,
        task_type: str,
        *,
        cron: str | None,
        every: timedelta | float | None,
        tz: str,
        input: Any,
        schedule_id: str | None,
        jitter: timedelta | float | None,
        misfire: MisfirePolicy,
        misfire_limit: int,
        misfire_grace: timedelta | float,
        priority: int | None,
        owner: str | None,
        metadata: dict[str, Any] | None,
        paused: bool | None,
    ) -> Schedule:
        """Check and store a schedule (see `TaskBus.schedule`)."""
        store = self._require(writes=True)
        seconds = check_seconds(every, "every", positive=True)
        timing = timing_of(cron, seconds, tz)
        definition = self._registry.get(task_type)  # UnknownTaskType
        value = (
            None
            if input is None and not definition.takes_input
            else definition.validate_input(input)  # InvalidTaskInput
        )
        schedule_id = new_schedule_id(task_type, owner) if schedule_id is None else schedule_id
        priority, checked_metadata = check_options(
            schedule_id=schedule_id,
            priority=priority,
            owner=owner,
            metadata=metadata,
            misfire=misfire,
            misfire_limit=misfire_limit,
        )
        existing = await store.get_schedule(schedule_id)
        if existing is not None and existing.owner != owner:
            raise InvalidSchedule(f"schedule id {schedule_id!r} is taken by another owner")
        now = self._clock.now()
        schedule = Schedule(
            id=schedule_id,
            task_type=task_type,
            cron=cron,
            every=seconds,
            tz=tz,
            input=to_jsonable_python(value),
            priority=priority,
            owner=owner,
            metadata=checked_metadata,
            jitter=check_seconds(jitter, "jitter", positive=False),
            misfire=misfire,
            misfire_limit=misfire_limit,
            misfire_grace=check_seconds(misfire_grace, "misfire_grace", positive=False) or 0.0,
            paused=bool(paused),
            next_fire_at=to_datetime(timing.first(now)),
            created_at=to_datetime(now),
        )
        stored = await store.put_schedule(schedule, keep_paused=paused is None)
        self._wake()
        return stored

    async def get(self, schedule_id: str) -> Schedule:
        schedule = await self._require().get_schedule(schedule_id)
        if schedule is None:
            raise ScheduleNotFound(schedule_id)
        return schedule

    async def list(self, owner: str | None) -> builtins.list[Schedule]:
        return await self._require().list_schedules(owner=owner)

    async def pause(self, schedule_id: str) -> Schedule:
        schedule = await self._require(writes=True).pause_schedule(schedule_id, paused=True)
        if schedule is None:
            raise ScheduleNotFound(schedule_id)
        self._wake()
        return schedule

    async def resume(self, schedule_id: str) -> Schedule:
        """Resume a schedule: its next fire time counts from now (no catch-up)."""
        store = self._require(writes=True)
        current = await self.get(schedule_id)
        timing = timing_of(current.cron, current.every, current.tz)
        schedule = await store.pause_schedule(
            schedule_id, paused=False, next_fire_at=timing.first(self._clock.now())
        )
        if schedule is None:
            raise ScheduleNotFound(schedule_id)
        self._wake()
        return schedule

    async def remove(self, schedule_id: str) -> None:
        if not await self._require(writes=True).remove_schedule(schedule_id):
            raise ScheduleNotFound(schedule_id)
        self._wake()
