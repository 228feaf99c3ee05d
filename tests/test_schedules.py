"""Schedules: fire times (intervals, cron in a time zone, daylight saving), the
misfire plan, the checks of `TaskBus.schedule`, the threaded facade, and a
scheduler that outlives a failing store. Store behaviour is in
stores/test_contract_schedules.py, bus behaviour on every store in
test_bus_scenarios.py."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest
from pydantic import BaseModel

from taskbus import (
    BusNotRunning,
    InvalidSchedule,
    InvalidSubmission,
    InvalidTaskInput,
    Schedule,
    ScheduleNotFound,
    StoreError,
    TaskBus,
    TaskContext,
    TaskQueued,
    UnknownTaskType,
)
from taskbus._schedule_timing import CronTiming, EveryTiming, timing_of
from taskbus._scheduler import Fire, plan
from taskbus.stores import MemoryStore
from taskbus.testing import EventRecorder, FakeClock

pytestmark = pytest.mark.anyio

PARIS = ZoneInfo("Europe/Paris")
T0 = 1_700_000_000.0


def paris(year: int, month: int, day: int, hour: int) -> float:
    return datetime(year, month, day, hour, tzinfo=PARIS).timestamp()


def local(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, PARIS).isoformat()


def fires_between(timing: CronTiming, start: float, end: float) -> list[str]:
    times, stamp = [], start
    while (stamp := timing.following(stamp)) < end:
        times.append(local(stamp))
    return times


# -- fire times -------------------------------------------------------------------------


def test_every_counts_from_the_first_fire_without_drift() -> None:
    timing = EveryTiming(10.0)
    assert timing.first(T0) == T0 + 10
    assert timing.following(T0 + 10) == T0 + 20
    assert timing.latest_due(T0 + 10, T0 + 55, 3) == [T0 + 30, T0 + 40, T0 + 50]
    assert timing.latest_due(T0 + 10, T0 + 5, 3) == []


def test_a_daily_job_fires_once_on_the_spring_forward_day() -> None:
    timing = CronTiming("30 2 * * *", PARIS)
    times = fires_between(timing, paris(2026, 3, 28, 12), paris(2026, 3, 30, 12))
    # 02:30 does not exist on 29 March: it fires once, at the first time after the gap.
    assert times == ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]


def test_a_daily_job_fires_once_on_the_fall_back_day() -> None:
    timing = CronTiming("30 2 * * *", PARIS)
    times = fires_between(timing, paris(2026, 10, 24, 12), paris(2026, 10, 26, 12))
    # 02:30 happens twice on 25 October: it fires the first time only.
    assert times == ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]


def test_missed_cron_times_across_a_fall_back_are_each_listed_once() -> None:
    timing = CronTiming("30 2 * * *", PARIS)
    first = timing.following(paris(2026, 10, 23, 12))
    due = timing.latest_due(first, paris(2026, 10, 26, 12), 10)
    assert [local(t) for t in due] == [
        "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_a_cron_expression_reads_in_its_time_zone() -> None:
    timing = timing_of("0 9 * * 1-5", None, "America/New_York")
    friday = datetime(2026, 1, 2, 15, tzinfo=UTC).timestamp()  # 10:00 in New York
    monday = datetime.fromtimestamp(timing.following(friday), ZoneInfo("America/New_York"))
    assert monday.isoformat() == "2026-01-05T09:00:00-05:00"


def test_a_long_downtime_walks_back_from_now() -> None:
    timing = CronTiming("* * * * *", ZoneInfo("UTC"))
    first = timing.following(T0)
    now = first + 20_000 * 60 + 30  # 20,000 minutes missed
    due = timing.latest_due(first, now, 3)
    assert due == [first + 19_998 * 60, first + 19_999 * 60, first + 20_000 * 60]


async def caught_up(bus: TaskBus, schedule_id: str, clock: FakeClock) -> None:
    """Wait (bounded) until the schedule's next fire is after the clock's now."""
    with anyio.fail_after(5):
        while True:
            next_fire = (await bus.get_schedule(schedule_id)).next_fire
            if next_fire is not None and next_fire > clock.now():
                return
            await anyio.sleep(0.001)  # the store tells nobody: read it again


async def test_a_daily_paris_job_fires_once_a_day_through_both_dst_changes() -> None:
    """The bus, on a fake clock, through the spring-forward and fall-back weekends."""
    for start, days in (
        (paris(2026, 3, 28, 12), ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
        (paris(2026, 10, 24, 12), ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
    ):
        clock = FakeClock(start=start)
        async with make_bus(clock=clock) as bus:
            recorder = EventRecorder(bus)
            await bus.schedule("jobs:count", cron="30 2 * * *", tz="Europe/Paris", input={"n": 1})
            for _ in range(48):  # two days, an hour at a time
                clock.advance(3600)
                await caught_up(bus, "jobs:count", clock)
        fired = [
            local(datetime.fromisoformat(e.metadata["scheduled_for"]).timestamp())
            for e in recorder.of(TaskQueued)
        ]
        assert fired == days


# -- the misfire plan ---------------------------------------------------------------------


def schedule(**fields: Any) -> Schedule:
    values: dict[str, Any] = {
        "id": "s",
        "task_type": "t",
        "every": 10.0,
        "next_fire_at": datetime.fromtimestamp(T0 + 10, UTC),
        "created_at": datetime.fromtimestamp(T0, UTC),
    }
    values.update(fields)
    return Schedule(**values)


def test_an_on_time_fire_is_one_step() -> None:
    steps = plan(schedule(), EveryTiming(10.0), T0 + 10.2)
    assert steps == [Fire(T0 + 10, T0 + 20, T0 + 10)]


def test_nothing_is_planned_before_the_fire_time() -> None:
    assert plan(schedule(), EveryTiming(10.0), T0 + 9) == []


@pytest.mark.parametrize(
    ("misfire", "steps"),
    [
        ("skip", [Fire(T0 + 10, T0 + 60, None)]),
        ("once", [Fire(T0 + 10, T0 + 60, T0 + 50)]),
        (
            "all",
            [
                Fire(T0 + 10, T0 + 40, T0 + 30),
                Fire(T0 + 40, T0 + 50, T0 + 40),
                Fire(T0 + 50, T0 + 60, T0 + 50),
            ],
        ),
    ],
)
def test_missed_fires_follow_the_policy(misfire: Any, steps: list[Fire]) -> None:
    missed = schedule(misfire=misfire, misfire_limit=3, misfire_grace=1.0)
    assert plan(missed, EveryTiming(10.0), T0 + 55) == steps


def test_skip_still_fires_a_time_within_the_grace() -> None:
    late = schedule(misfire="skip", misfire_grace=10.0)
    assert plan(late, EveryTiming(10.0), T0 + 55) == [Fire(T0 + 10, T0 + 60, T0 + 50)]


# -- TaskBus.schedule's checks ----------------------------------------------------------------


class Params(BaseModel):
    n: int


def make_bus(**kwargs: Any) -> TaskBus:
    bus = TaskBus(workers=1, **kwargs)

    @bus.task("jobs:count")
    async def count(ctx: TaskContext, params: Params) -> int:
        return params.n

    return bus


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"input": {"n": 1}}, InvalidSchedule, "exactly one of cron= and every="),
        ({"input": {"n": 1}, "cron": "* * * * *", "every": 5}, InvalidSchedule, "exactly one"),
        ({"input": {"n": 1}, "cron": "61 * * * *"}, InvalidSchedule, "not a cron expression"),
        ({"input": {"n": 1}, "cron": "every day"}, InvalidSchedule, "not a cron expression"),
        ({"input": {"n": 1}, "every": 0}, InvalidSchedule, "every must be > 0"),
        ({"input": {"n": 1}, "every": timedelta(seconds=-1)}, InvalidSchedule, "every must"),
        ({"input": {"n": 1}, "every": float("nan")}, InvalidSchedule, "every must"),
        ({"input": {"n": 1}, "every": "5s"}, InvalidSchedule, "every must"),
        ({"input": {"n": 1}, "every": 5, "tz": "Mars/Olympus"}, InvalidSchedule, "time zone"),
        ({"input": {"n": 1}, "every": 5, "jitter": -1}, InvalidSchedule, "jitter"),
        ({"input": {"n": 1}, "every": 5, "misfire": "never"}, InvalidSchedule, "misfire"),
        ({"input": {"n": 1}, "every": 5, "misfire_limit": 0}, InvalidSchedule, "misfire_limit"),
        ({"input": {"n": 1}, "every": 5, "id": ""}, InvalidSchedule, "schedule id"),
        ({"input": {"n": 1}, "every": 5, "priority": 99}, InvalidSubmission, "priority"),
        (
            {"input": {"n": 1}, "every": 5, "metadata": {"x": float("inf")}},
            InvalidSubmission,
            "metadata",
        ),
        ({"input": {"n": "many"}, "every": 5}, InvalidTaskInput, "jobs:count"),
        (
            {"input": {"n": 1}, "every": 5, "metadata": {"after": ["0" * 32]}},
            InvalidSubmission,
            "metadata key 'after' is taskbus's",
        ),
    ],
)
async def test_bad_schedules_raise_at_the_call_and_store_nothing(
    options: dict[str, Any], error: type[Exception], match: str
) -> None:
    async with make_bus() as bus:
        with pytest.raises(error, match=match):
            await bus.schedule("jobs:count", **options)
        assert await bus.schedules() == []


async def test_an_unknown_task_type_cannot_be_scheduled() -> None:
    async with make_bus() as bus:
        with pytest.raises(UnknownTaskType):
            await bus.schedule("jobs:nothing", every=5)
        assert await bus.schedules() == []


async def test_an_unknown_schedule_id_raises_schedule_not_found() -> None:
    async with make_bus() as bus:
        for call in (bus.get_schedule, bus.pause_schedule, bus.resume_schedule):
            with pytest.raises(ScheduleNotFound, match="'nope'"):
                await call("nope")
        with pytest.raises(ScheduleNotFound):
            await bus.remove_schedule("nope")


async def test_schedules_change_only_while_the_bus_runs() -> None:
    bus = make_bus()
    with pytest.raises(BusNotRunning):
        await bus.schedule("jobs:count", every=5, input={"n": 1})
    async with bus:
        await bus.schedule("jobs:count", every=5, input={"n": 1})
    for change in (bus.pause_schedule, bus.resume_schedule, bus.remove_schedule):
        with pytest.raises(BusNotRunning):
            await change("jobs:count")


async def test_an_id_of_another_owner_is_refused() -> None:
    async with make_bus() as bus:
        await bus.schedule("jobs:count", id="shared", every=5, input={"n": 1}, owner="alice")
        with pytest.raises(InvalidSchedule, match="another owner"):
            await bus.schedule("jobs:count", id="shared", every=5, input={"n": 2}, owner="bob")
        assert (await bus.get_schedule("shared")).input == {"n": 1}


async def test_jitter_delays_a_fire_by_at_most_its_value() -> None:
    clock = FakeClock()
    async with make_bus(clock=clock) as bus:
        recorder = EventRecorder(bus)
        await bus.schedule("jobs:count", every=10, input={"n": 1}, jitter=timedelta(seconds=5))
        clock.advance(10)
        queued = await recorder.wait_for(TaskQueued)
        task = await bus.get(queued.task_id)
    assert task.not_before is not None
    delay = task.not_before.timestamp() - (T0 + 10)
    assert 0 <= delay <= 5


async def test_a_fire_of_a_keyed_type_carries_its_keys() -> None:
    clock = FakeClock()
    bus = make_bus(clock=clock)

    @bus.task("jobs:per-owner", concurrency_key="owner")
    async def per_owner(ctx: TaskContext) -> None:
        pass

    async with bus:
        recorder = EventRecorder(bus)
        await bus.schedule("jobs:per-owner", every=10, owner="alice")
        clock.advance(10)
        queued = await recorder.wait_for(TaskQueued)
        task = await bus.wait(queued.task_id, timeout=5)
    assert task.metadata["concurrency_key"] == "alice"
    assert task.metadata["schedule_id"] == "alice/jobs:per-owner"


def test_the_threaded_facade_schedules_too() -> None:
    tb = TaskBus.start_threaded(workers=1)
    try:

        @tb.task("jobs:count")
        async def count(ctx: TaskContext, params: Params) -> int:
            return params.n

        stored = tb.schedule("jobs:count", every=3600, input={"n": 1})
        assert tb.get_schedule(stored.id) == stored
        assert tb.pause_schedule(stored.id).paused
        assert not tb.resume_schedule(stored.id).paused
        assert [s.id for s in tb.schedules()] == ["jobs:count"]
        tb.remove_schedule(stored.id)
        assert tb.schedules() == []
    finally:
        tb.close()


class FailingSchedules(MemoryStore):
    """A store whose due-schedule reads fail until told otherwise."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = True
        self.tried = anyio.Event()

    async def due_schedules(self, until: float, *, limit: int = 1000) -> list[Schedule]:
        self.tried.set()
        if self.failing:
            raise StoreError("the disk is gone")
        return await super().due_schedules(until, limit=limit)


async def test_a_failing_store_never_stops_the_bus(caplog: pytest.LogCaptureFixture) -> None:
    store = FailingSchedules()
    clock = FakeClock()
    async with make_bus(store=store, clock=clock) as bus:
        recorder = EventRecorder(bus)
        with anyio.fail_after(5):
            await store.tried.wait()
        handle = await bus.submit("jobs:count", {"n": 3})
        assert await handle.result(timeout=5) == 3, "tasks still run"
        await bus.schedule("jobs:count", every=1, input={"n": 4})
        store.failing = False
        clock.advance(60)  # past the back-off
        queued = await recorder.wait_for(TaskQueued, where=lambda e: e.task_id != handle.id)
        assert queued.metadata["schedule_id"] == "jobs:count"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("firing schedules failed" in r.getMessage() for r in errors)
