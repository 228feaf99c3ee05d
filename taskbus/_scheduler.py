"""Firing stored schedules: which fires are due after a pause or a downtime (the
misfire policy), and the loop that fires them in every running bus.

Any process with a bus open may fire a schedule: each fire is claimed with the
add of its task in one step of the store (`ScheduleStore.fire_schedule`), so N
processes make one task per fire, and a crash between two fires loses none.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio
from pydantic import ValidationError

from ._clock import Clock
from ._errors import TaskbusError
from ._schedule import Schedule, fire_instant
from ._schedule_timing import Timing, timing_of
from .stores._base import ScheduleStore

if TYPE_CHECKING:
    from ._intake import Intake
    from ._record import TaskRecord
    from ._registry import TaskDefinition, TaskRegistry

__all__ = ["Fire", "Scheduler", "plan"]

logger = logging.getLogger("taskbus.schedules")

#: Longest sleep between two looks at the store: another process may have added
#: or changed a schedule meanwhile.
DEFAULT_POLL = 1.0
#: Timings (parsed cron expressions) kept for reuse.
_TIMINGS_KEPT = 1000
#: Most seconds between tries after the store failed.
_BACKOFF_MOST = 30.0


class Fire(NamedTuple):
    """One step of a schedule: from the stored next fire time `due` to `next_fire_at`,
    firing a task for `fires_for` (None: the times between are skipped)."""

    due: float
    next_fire_at: float
    fires_for: float | None


def plan(schedule: Schedule, timing: Timing, now: float) -> list[Fire]:
    """The steps that bring a due schedule up to `now` under its misfire policy."""
    first = schedule.next_fire
    if first is None:
        return []
    most = schedule.misfire_limit if schedule.misfire == "all" else 1
    due = timing.latest_due(first, now, most)
    if not due:
        return []
    latest = due[-1]
    if schedule.misfire == "skip" and now - latest > schedule.misfire_grace:
        fires: list[float] = []
    elif schedule.misfire == "all":
        fires = due
    else:  # "once", or "skip" on time: one task for every time due
        fires = [latest]
    after = timing.following(latest)
    if not fires:
        return [Fire(first, after, None)]
    steps: list[Fire] = []
    expected = first
    for index, fires_for in enumerate(fires):
        following = fires[index + 1] if index + 1 < len(fires) else after
        steps.append(Fire(expected, following, fires_for))
        expected = following
    return steps


class Scheduler:
    """The loop that fires a bus's due schedules (see the module docstring)."""

    def __init__(
        self,
        *,
        store: ScheduleStore,
        intake: Intake,
        registry: TaskRegistry,
        clock: Clock,
        accepting: Callable[[], bool],
        poll: float = DEFAULT_POLL,
    ) -> None:
        self._store = store
        self._intake = intake
        self._registry = registry
        self._clock = clock
        self._accepting = accepting
        self.poll = poll
        self._timings: dict[str, Timing] = {}
        self._sleep_scope: anyio.CancelScope | None = None
        self._woken = False
        self._reported: set[str] = set()
        #: Schedules due within the poll, as last read: fired at their time unread.
        self._upcoming: list[Schedule] = []

    def timing(self, schedule: Schedule) -> Timing:
        """The schedule's timing (croniter parses an expression once)."""
        timing = self._timings.get(schedule.timing)
        if timing is None:
            timing = timing_of(schedule.cron, schedule.every, schedule.tz)
            if len(self._timings) >= _TIMINGS_KEPT:  # schedules come and go: start afresh
                self._timings.clear()
            self._timings[schedule.timing] = timing
        return timing

    def wake(self) -> None:
        """Look at the store again now (a schedule was added or changed here)."""
        self._woken = True
        if self._sleep_scope is not None:
            self._sleep_scope.cancel()

    async def run(self) -> None:
        """Fire due schedules until cancelled; a store that fails is tried again with
        back-off, never stopping the bus."""
        failures = 0
        while True:
            try:
                wake_at = await self.fire_due()
                failures = 0
            except Exception:
                failures += 1
                backoff = min(_BACKOFF_MOST, 0.5 * 2 ** min(failures, 6))
                logger.exception("firing schedules failed; trying again in %.1f s", backoff)
                wake_at = self._clock.now() + backoff
            with anyio.CancelScope() as scope:
                self._sleep_scope = scope
                # No await between reading the clock and sleeping on it: time that
                # passed during `fire_due` (a test's fake clock too) is not slept again.
                if not self._woken:
                    await self._clock.sleep(wake_at - self._clock.now())
            self._sleep_scope = None

    async def fire_due(self) -> float:
        """Fire what is due now; return when to look again (wall time)."""
        woken, self._woken = self._woken, False
        now = fire_instant(self._clock.now())  # to the microsecond, as fire times are
        upcoming, self._upcoming = self._upcoming, []
        if not woken and await self._fire_all(upcoming, now):
            # Woken by the time of a schedule read before: fired without reading it
            # again (a round trip less of drift). A change made meanwhile in another
            # process fails the fire's claim, unless it kept the timing (a fire with
            # the input it had a moment ago, then).
            return now
        wake_at = now + self.poll
        due: list[Schedule] = []
        for schedule in await self._store.due_schedules(now + self.poll):
            at = schedule.next_fire
            if at is None or self._registry.find(schedule.task_type) is None:
                continue  # a type another process has: that one fires it
            if at > now:
                wake_at = min(wake_at, at)
                self._upcoming.append(schedule)
            else:
                due.append(schedule)
        return now if await self._fire_all(due, now) else wake_at

    async def _fire_all(self, schedules: list[Schedule], now: float) -> bool:
        """Fire those of `schedules` due at `now`; whether any was (or was claimed)."""
        fired = False
        for schedule in schedules:
            at = schedule.next_fire
            if at is not None and at <= now and self._accepting():
                fired = await self._fire(schedule, now) or fired
        return fired

    async def _fire(self, schedule: Schedule, now: float) -> bool:
        """Bring one due schedule up to `now`; False if it cannot be (left to others)."""
        try:
            steps = plan(schedule, self.timing(schedule), now)
        except TaskbusError as exc:  # croniter missing in this process, say
            self._report(schedule, f"cannot compute its fire times: {exc}")
            return False
        for step in steps:
            tracing = self._intake.tracing
            if tracing is None or step.fires_for is None:
                claimed = await self._step(schedule, step)
            else:
                with tracing.firing(schedule.id, schedule.task_type, step.fires_for) as fire:
                    claimed = await self._step(schedule, step)
                    if not claimed:
                        fire.lost()
            if not claimed:
                return True  # fired by another process (or changed meanwhile): look again
        return True

    async def _step(self, schedule: Schedule, step: Fire) -> bool:
        """Take one step of `plan`; False if another process took it first."""
        fired = None
        if step.fires_for is not None:
            fired = self._record(schedule, step.fires_for)
        claimed = await self._intake.add_fire(
            self._store,
            schedule.id,
            due=step.due,
            next_fire_at=step.next_fire_at,
            fired=fired,
            fires_for=step.fires_for,
        )
        if not claimed:
            return False
        if fired is not None:
            logger.info("schedule %s fired task %s (%s)", schedule.id, fired[0].id, fired[0].type)
        elif step.fires_for is None:
            logger.info("schedule %s skipped the fires it missed", schedule.id)
        return True

    def _record(
        self, schedule: Schedule, fires_for: float
    ) -> tuple[TaskRecord, TaskDefinition[Any, Any]] | None:
        jitter = schedule.jitter
        not_before = fires_for + random.uniform(0.0, jitter) if jitter else None
        try:
            return self._intake.scheduled(schedule, fires_for, not_before)
        except (TaskbusError, ValidationError) as exc:
            # The type's input model changed since: the fire passes, logged.
            self._report(schedule, f"cannot fire: {exc}")
            return None

    def _report(self, schedule: Schedule, problem: str) -> None:
        if schedule.id not in self._reported:
            self._reported.add(schedule.id)
            logger.error("schedule %s %s", schedule.id, problem)
