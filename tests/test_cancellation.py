"""Cancellation that cannot be lost, swallowed, or outrun by a retry."""

from __future__ import annotations

import threading
from collections.abc import Callable

import anyio
import pytest

from taskbus import (
    RetryPolicy,
    TaskBus,
    TaskCancellation,
    TaskContext,
    TaskRetrying,
    TaskStarted,
    TaskState,
)
from taskbus.testing import EventRecorder, FakeClock

pytestmark = pytest.mark.anyio
MakeBus = Callable[..., TaskBus]


async def test_a_cancel_that_lands_as_the_attempt_times_out_wins_and_is_never_retried(
    make_bus: MakeBus,
) -> None:
    bus = make_bus(workers=1)
    timed_out = anyio.Event()
    release = anyio.Event()
    runs: list[int] = []

    @bus.task("t:slow", timeout=0.05, retry=RetryPolicy(max_attempts=3, base_delay=0))
    async def slow(ctx: TaskContext) -> None:
        runs.append(ctx.attempt)
        # Shielded, so the attempt has timed out but not yet unwound when the cancel lands.
        with anyio.CancelScope(shield=True):
            while not ctx.cancelled:  # noqa: ASYNC110 - a flag, not an event
                await anyio.sleep(0.005)
            timed_out.set()
            await release.wait()

    async with bus:
        recorder = EventRecorder(bus)
        handle = await bus.submit("t:slow")
        with anyio.fail_after(5):
            await timed_out.wait()
        answers: list[bool] = []

        async def cancel() -> None:
            answers.append(await bus.cancel(handle.id, reason="user pressed stop"))

        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel)
            await anyio.lowlevel.checkpoint()
            release.set()
        snap = await bus.wait(handle.id, timeout=5)
    assert answers == [True]
    assert snap.state is TaskState.CANCELLED and snap.cancel_reason == "user pressed stop"
    assert runs == [1] and recorder.of(TaskRetrying) == []


async def test_raise_if_cancelled_cannot_be_swallowed_by_except_exception(
    make_bus: MakeBus,
) -> None:
    bus = make_bus()
    started = anyio.Event()
    carried_on: list[str] = []

    @bus.task("t:loop")
    async def loop(ctx: TaskContext) -> None:
        started.set()
        while True:
            try:
                with anyio.CancelScope(shield=True):
                    await anyio.sleep(0.01)
                ctx.raise_if_cancelled()
            except Exception:  # noqa: BLE001 - a catch-all that must not swallow it
                carried_on.append("swallowed")
                return

    async with bus:
        handle = await bus.submit("t:loop")
        with anyio.fail_after(5):
            await started.wait()
        assert await bus.cancel(handle.id, reason="stop")
    assert carried_on == []
    assert issubclass(TaskCancellation, BaseException)
    assert not issubclass(TaskCancellation, Exception)


async def test_a_timed_out_thread_holds_its_worker_and_slot_until_it_returns(
    make_bus: MakeBus, fake_clock: FakeClock
) -> None:
    bus = make_bus(workers=1, clock=fake_clock)
    lock = threading.Lock()
    release = threading.Event()
    inside = threading.Event()
    running = 0
    most = 0

    @bus.task(
        "t:sleepy",
        timeout=0.2,
        concurrency=1,
        retry=RetryPolicy(max_attempts=3, base_delay=0.1, jitter=0),
    )
    def sleepy(ctx: TaskContext) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        inside.set()
        try:
            release.wait(5)  # ignores its cancellation, as a blocking call does
        finally:
            with lock:
                running -= 1

    async with bus:
        recorder = EventRecorder(bus)
        handle = await bus.submit("t:sleepy")
        assert await anyio.to_thread.run_sync(inside.wait, 5)
        fake_clock.advance(0.2)  # times out: the task is settled at once ...
        await recorder.wait_for(TaskRetrying, task_id=handle.id)
        fake_clock.advance(0.1)  # ... its back-off is over ...
        for _ in range(50):
            await anyio.lowlevel.checkpoint()
        # ... but the retry waits for the one worker, which waits for its thread.
        assert len(recorder.of(TaskStarted)) == 1
        release.set()
        await recorder.wait_for(TaskStarted, task_id=handle.id, count=2)
        snap = await bus.wait(handle.id, timeout=5)
    assert snap.state is TaskState.COMPLETED
    assert most == 1, f"{most} copies of one task ran at once"
