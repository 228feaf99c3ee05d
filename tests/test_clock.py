"""Durations run on the monotonic clock: a step of the wall clock moves none of them."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from taskbus import (
    RetryPolicy,
    TaskBus,
    TaskCompleted,
    TaskContext,
    TaskFailed,
    TaskRetrying,
    TaskStarted,
    TaskState,
)
from taskbus.testing import EventRecorder, FakeClock

pytestmark = pytest.mark.anyio
MakeBus = Callable[..., TaskBus]
HOUR = 3600.0


async def settle() -> None:
    """Let the bus's tasks run what is due (a handful of loop turns)."""
    for _ in range(20):
        await anyio.lowlevel.checkpoint()


async def test_a_wall_clock_step_neither_fires_nor_stops_a_timeout(
    make_bus: MakeBus, fake_clock: FakeClock
) -> None:
    bus = make_bus(clock=fake_clock)

    @bus.task("t:slow", timeout=5, retry=RetryPolicy(max_attempts=1))
    async def slow(ctx: TaskContext) -> None:
        await anyio.sleep_forever()

    async with bus:
        recorder = EventRecorder(bus)
        handle = await bus.submit("t:slow")
        await recorder.wait_for(TaskStarted, task_id=handle.id)
        fake_clock.jump(HOUR)  # forward: must not time out everything at once
        await settle()
        assert (await bus.get(handle.id)).state is TaskState.RUNNING
        fake_clock.jump(-2 * HOUR)  # back: must not hold the timeout for hours
        fake_clock.advance(5)
        failed = await recorder.wait_for(TaskFailed, task_id=handle.id)
    assert "timed out after 5s" in failed.error


async def test_a_wall_clock_step_does_not_move_a_delay_or_a_back_off(
    make_bus: MakeBus, fake_clock: FakeClock
) -> None:
    bus = make_bus(clock=fake_clock)
    attempts: list[int] = []

    @bus.task("t:flaky", retry=RetryPolicy(max_attempts=2, base_delay=30, jitter=0))
    async def flaky(ctx: TaskContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise ConnectionError("try again")
        return "ok"

    async with bus:
        recorder = EventRecorder(bus)
        delayed = await bus.submit("t:flaky", delay=60)
        fake_clock.jump(HOUR)
        await settle()
        assert attempts == [], "a wall clock step forward started a delayed task"
        fake_clock.jump(-3 * HOUR)
        fake_clock.advance(60)
        await recorder.wait_for(TaskRetrying, task_id=delayed.id)
        fake_clock.jump(HOUR)
        await settle()
        assert attempts == [1], "a wall clock step forward cut the back-off short"
        fake_clock.jump(-HOUR)
        fake_clock.advance(30)
        await recorder.wait_for(TaskCompleted, task_id=delayed.id)
    assert attempts == [1, 2]


async def test_a_wall_clock_step_does_not_skew_the_eta(
    make_bus: MakeBus, fake_clock: FakeClock
) -> None:
    bus = make_bus(clock=fake_clock)
    halfway = anyio.Event()
    report = anyio.Event()
    finish = anyio.Event()

    @bus.task("t:steady")
    async def steady(ctx: TaskContext) -> None:
        await report.wait()
        await ctx.progress(50, "half")
        halfway.set()
        await finish.wait()

    async with bus:
        recorder = EventRecorder(bus)
        handle = await bus.submit("t:steady")
        await recorder.wait_for(TaskStarted, task_id=handle.id)
        fake_clock.advance(10)
        fake_clock.jump(HOUR)
        report.set()
        with anyio.fail_after(5):
            await halfway.wait()
        snap = await bus.get(handle.id)
        finish.set()
    assert snap.eta == pytest.approx(10.0)
