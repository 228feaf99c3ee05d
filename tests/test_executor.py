"""Scheduling and execution semantics, on asyncio and trio."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import _process_handlers
import anyio
import pytest

from taskbus import (
    RetryableError,
    RetryPolicy,
    TaskBus,
    TaskCancelled,
    TaskCancelledError,
    TaskCompleted,
    TaskContext,
    TaskFailed,
    TaskFailedError,
    TaskRetrying,
    TaskStarted,
    TaskState,
    current_context,
)
from taskbus.testing import EventRecorder, FakeClock

pytestmark = pytest.mark.anyio
MakeBus = Callable[..., TaskBus]


async def test_priority_order_and_fifo_within_a_level(make_bus: MakeBus) -> None:
    bus = make_bus(workers=1)
    gate = anyio.Event()
    order: list[str] = []

    @bus.task("s:gate")
    async def hold(ctx: TaskContext) -> None:
        await gate.wait()

    @bus.task("s:item")
    async def item(ctx: TaskContext, label: str) -> None:
        order.append(label)

    async with bus:
        recorder = EventRecorder(bus)
        blocker = await hold.submit()
        await recorder.wait_for(TaskStarted, task_id=blocker.id)
        handles = [
            await item.submit(label, priority=priority)
            for label, priority in [("low", 1), ("mid-1", 5), ("urgent", 10), ("mid-2", 5)]
        ]
        gate.set()
        for handle in handles:
            await handle.result(timeout=5)
    assert order == ["urgent", "mid-1", "mid-2", "low"]


async def test_type_at_its_limit_never_blocks_other_types(make_bus: MakeBus) -> None:
    bus = make_bus(workers=3)
    gate = anyio.Event()

    @bus.task("s:limited", concurrency=1)
    async def limited(ctx: TaskContext) -> None:
        await gate.wait()

    @bus.task("s:free")
    async def free(ctx: TaskContext) -> str:
        return "ran"

    async with bus:
        recorder = EventRecorder(bus)
        blocked = [await limited.submit(priority=10) for _ in range(3)]
        await recorder.wait_for(TaskStarted, task_id=blocked[0].id)
        other = await free.submit(priority=1)
        assert await other.result(timeout=5) == "ran"
        assert (await blocked[1].get()).state is TaskState.QUEUED
        gate.set()
        for handle in blocked:
            await handle.result(timeout=5)


@pytest.mark.parametrize(("workers", "concurrency"), [(3, None), (4, 2)], ids=["global", "type"])
async def test_running_at_once_never_exceeds_the_limits(
    make_bus: MakeBus, workers: int, concurrency: int | None
) -> None:
    bus = make_bus(workers=workers)
    running = 0
    peak = 0
    limit = concurrency or workers
    reached = anyio.Event()
    gate = anyio.Event()

    @bus.task("s:count", concurrency=concurrency)
    async def count(ctx: TaskContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == limit:
            reached.set()
        await gate.wait()
        running -= 1

    async with bus:
        handles = [await count.submit() for _ in range(10)]
        with anyio.fail_after(5):
            await reached.wait()
        stats = await bus.stats()
        gate.set()
        for handle in handles:
            await handle.result(timeout=5)
    assert peak == limit
    assert stats.running == limit


async def test_a_retry_waiting_out_its_backoff_holds_no_worker(
    make_bus: MakeBus, fake_clock: FakeClock
) -> None:
    bus = make_bus(workers=1, clock=fake_clock)

    @bus.task("r:flaky", retry=RetryPolicy(max_attempts=3, base_delay=60, max_delay=600, jitter=0))
    async def flaky(ctx: TaskContext) -> int:
        if ctx.attempt < 3:
            raise RetryableError(f"attempt {ctx.attempt} failed")
        return ctx.attempt

    @bus.task("r:other")
    async def other(ctx: TaskContext) -> str:
        return "other ran"

    async with bus:
        recorder = EventRecorder(bus)
        handle = await flaky.submit()
        retrying = await recorder.wait_for(TaskRetrying, task_id=handle.id)
        assert (retrying.attempt, retrying.delay) == (1, 60)
        assert await (await other.submit()).result(timeout=5) == "other ran"
        snap = await handle.get()
        assert snap.state is TaskState.QUEUED and snap.attempts == 1
        assert snap.error is not None and "attempt 1" in snap.error.message
        fake_clock.advance(60)
        second = await recorder.wait_for(TaskRetrying, task_id=handle.id, count=2)
        assert (second.attempt, second.delay) == (2, 120)
        fake_clock.advance(120)
        assert await handle.result(timeout=5) == 3
    assert recorder.names(handle.id) == [
        "task-queued",
        "task-started",
        "task-retrying",
        "task-started",
        "task-retrying",
        "task-started",
        "task-completed",
    ]
    assert [e.attempt for e in recorder.of(TaskStarted, handle.id)] == [1, 2, 3]


async def test_retries_run_out_and_the_task_fails(make_bus: MakeBus) -> None:
    bus = make_bus()

    @bus.task("r:always", retry=RetryPolicy(max_attempts=2, base_delay=0, jitter=0))
    async def always(ctx: TaskContext) -> None:
        raise ConnectionError("down")

    async with bus:
        recorder = EventRecorder(bus)
        handle = await always.submit()
        with pytest.raises(TaskFailedError, match="down"):
            await handle.result(timeout=5)
    failed = recorder.of(TaskFailed, handle.id)
    assert len(failed) == 1
    assert (failed[0].attempt_count, failed[0].retryable, failed[0].error_type.value) == (
        2,
        True,
        "retryable",
    )


async def test_timeout_cancels_an_async_handler(make_bus: MakeBus, fake_clock: FakeClock) -> None:
    bus = make_bus(clock=fake_clock)
    cleaned_up: list[int] = []

    @bus.task("t:stuck", timeout=5, retry=RetryPolicy(max_attempts=2, base_delay=1, jitter=0))
    async def stuck(ctx: TaskContext) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cleaned_up.append(ctx.attempt)

    async with bus:
        recorder = EventRecorder(bus)
        handle = await stuck.submit()
        await recorder.wait_for(TaskStarted, task_id=handle.id)
        fake_clock.advance(5)
        retrying = await recorder.wait_for(TaskRetrying, task_id=handle.id)
        assert "timed out after 5s" in retrying.error
        fake_clock.advance(1)
        await recorder.wait_for(TaskStarted, task_id=handle.id, count=2)
        fake_clock.advance(5)
        failed = await recorder.wait_for(TaskFailed, task_id=handle.id)
    assert failed.attempt_count == 2 and "timed out" in failed.error
    assert cleaned_up == [1, 2], "the handler's finally ran before the outcome"
    snap = await bus.get(handle.id)
    assert snap.error is not None and snap.error.exception_type.endswith("TaskTimeoutError")


async def test_cancelling_a_running_task_cancels_its_handler_and_is_never_retried(
    make_bus: MakeBus,
) -> None:
    bus = make_bus()
    cleaned_up = anyio.Event()

    @bus.task("c:long", retry=RetryPolicy(max_attempts=5, base_delay=0))
    async def long(ctx: TaskContext) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            cleaned_up.set()

    async with bus:
        recorder = EventRecorder(bus)
        handle = await long.submit()
        await recorder.wait_for(TaskStarted, task_id=handle.id)
        assert await bus.cancel(handle.id, reason="user pressed stop") is True
        assert cleaned_up.is_set()
        with pytest.raises(TaskCancelledError, match="user pressed stop"):
            await handle.result(timeout=5)
        snap = await handle.get()
    assert snap.state is TaskState.CANCELLED and snap.attempts == 1
    assert recorder.names(handle.id) == ["task-queued", "task-started", "task-cancelled"]


async def test_cancel_during_backoff_means_no_further_attempt(
    make_bus: MakeBus, fake_clock: FakeClock
) -> None:
    bus = make_bus(clock=fake_clock)
    attempts: list[int] = []

    @bus.task("c:flaky", retry=RetryPolicy(max_attempts=3, base_delay=10, jitter=0))
    async def flaky(ctx: TaskContext) -> None:
        attempts.append(ctx.attempt)
        raise RetryableError("again")

    async with bus:
        recorder = EventRecorder(bus)
        handle = await flaky.submit()
        await recorder.wait_for(TaskRetrying, task_id=handle.id)
        assert await handle.cancel("enough") is True
        fake_clock.advance(100)
        await recorder.wait_for(TaskCancelled, task_id=handle.id)
        probe = await bus.submit("c:flaky")  # proves the worker pool moved on
        await recorder.wait_for(TaskRetrying, task_id=probe.id)
    assert attempts == [1, 1]
    assert recorder.names(handle.id)[-1] == "task-cancelled"


async def test_sync_handler_runs_on_a_thread_and_stops_cooperatively(make_bus: MakeBus) -> None:
    bus = make_bus()
    loop_thread = threading.get_ident()
    entered = threading.Event()
    stopped = threading.Event()

    @bus.task("th:loop")
    def spin(ctx: TaskContext) -> None:
        assert threading.get_ident() != loop_thread
        assert current_context() is ctx
        ctx.progress(1, "spinning")
        entered.set()
        try:
            while True:
                ctx.raise_if_cancelled()
                time.sleep(0.001)
        finally:
            stopped.set()

    async with bus:
        recorder = EventRecorder(bus)
        handle = await spin.submit()
        with anyio.fail_after(5):
            await anyio.to_thread.run_sync(entered.wait)
        assert await handle.cancel("stop") is True
        with anyio.fail_after(5):
            await anyio.to_thread.run_sync(stopped.wait)
        snap = await handle.get()
    assert snap.state is TaskState.CANCELLED and snap.message == "spinning"
    assert recorder.names(handle.id)[-1] == "task-cancelled"


async def test_sync_handler_that_ignores_cancel_is_abandoned_and_discarded(
    make_bus: MakeBus,
) -> None:
    bus = make_bus()
    entered = threading.Event()
    release = threading.Event()
    returned = threading.Event()

    @bus.task("th:deaf")
    def deaf(ctx: TaskContext) -> str:
        entered.set()
        release.wait(10)
        returned.set()
        return "too late"

    async with bus:
        recorder = EventRecorder(bus)
        handle = await deaf.submit()
        with anyio.fail_after(5):
            await anyio.to_thread.run_sync(entered.wait)
        assert await handle.cancel("stop") is True  # returns without waiting for the thread
        release.set()
        with anyio.fail_after(5):
            await anyio.to_thread.run_sync(returned.wait)
        snap = await handle.get()
    assert snap.state is TaskState.CANCELLED and snap.result is None
    assert recorder.names(handle.id) == ["task-queued", "task-started", "task-cancelled"]


async def test_process_handler_returns_its_result(make_bus: MakeBus) -> None:
    bus = make_bus()
    square = bus.task("p:square", run_in="process")(_process_handlers.square)
    async with bus:
        assert await (await square.submit(12)).result(timeout=20) == 144


async def test_process_handler_is_killed_on_timeout(make_bus: MakeBus, tmp_path: Path) -> None:
    bus = make_bus()
    sleeper = bus.task("p:sleep", run_in="process", timeout=1.0, retry=RetryPolicy.never())(
        _process_handlers.write_pid_and_sleep
    )
    pid_file = tmp_path / "pid"
    async with bus:
        handle = await sleeper.submit(str(pid_file))
        with pytest.raises(TaskFailedError, match="timed out"):
            await handle.result(timeout=20)
    pid = int(pid_file.read_text())
    assert not _alive(pid), "the worker process was killed and reaped before the task failed"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a reaped-late zombie counts as dead
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


async def test_a_handler_that_swallows_cancellation_does_not_break_its_worker(
    make_bus: MakeBus,
) -> None:
    bus = make_bus(workers=1)
    started = anyio.Event()

    @bus.task("c:stubborn")
    async def stubborn(ctx: TaskContext) -> str:
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            return "swallowed"
        return "unreachable"

    @bus.task("c:next")
    async def after(ctx: TaskContext) -> str:
        return "next ran"

    async with bus:
        handle = await stubborn.submit()
        with anyio.fail_after(5):
            await started.wait()
        assert await handle.cancel("stop") is True
        assert (await handle.get()).state is TaskState.CANCELLED
        assert await (await after.submit()).result(timeout=5) == "next ran"


async def test_each_task_publishes_exactly_one_final_event_under_cancel_races(
    make_bus: MakeBus,
) -> None:
    bus = make_bus(workers=4)

    @bus.task("x:quick")
    async def quick(ctx: TaskContext, n: int) -> int:
        for _ in range(n % 3):
            await anyio.lowlevel.checkpoint()
        return n

    async with bus:
        recorder = EventRecorder(bus)
        handles = [await quick.submit(n) for n in range(300)]
        for n, handle in enumerate(handles):
            if n % 2:
                await handle.cancel("race")
            if n % 7 == 0:
                await anyio.lowlevel.checkpoint()
        for handle in handles:
            await handle.wait(timeout=5)
    finals = {"task-completed", "task-failed", "task-cancelled"}
    for handle in handles:
        names = recorder.names(handle.id)
        assert sum(name in finals for name in names) == 1, names
        assert names[-1] in finals, names
        assert names[0] == "task-queued"


async def test_unregistered_type_fails_its_queued_tasks_clearly(make_bus: MakeBus) -> None:
    bus = make_bus(workers=1)
    gate = anyio.Event()

    @bus.task("u:gate")
    async def hold(ctx: TaskContext) -> None:
        await gate.wait()

    @bus.task("u:gone")
    async def gone(ctx: TaskContext) -> None: ...

    async with bus:
        recorder = EventRecorder(bus)
        blocker = await hold.submit()
        await recorder.wait_for(TaskStarted, task_id=blocker.id)
        orphan = await gone.submit()
        bus.registry.unregister("u:gone")
        gate.set()
        with pytest.raises(TaskFailedError, match="no task type named 'u:gone'"):
            await orphan.result(timeout=5)
    assert recorder.names(orphan.id) == ["task-queued", "task-failed"]


async def test_shutdown_grace_then_cancel_and_report(make_bus: MakeBus) -> None:
    bus = make_bus(workers=2, shutdown_grace=0.3)
    started = anyio.Event()

    @bus.task("sd:short")
    async def short(ctx: TaskContext) -> str:
        await anyio.sleep(0.05)
        return "finished in grace"

    @bus.task("sd:forever")
    async def forever(ctx: TaskContext) -> None:
        started.set()
        await anyio.sleep_forever()

    async with bus:
        recorder = EventRecorder(bus)
        quick = await short.submit()
        stuck = await forever.submit()
        left = await short.submit()
        with anyio.fail_after(5):
            await started.wait()
    report = bus.shutdown_report
    assert report is not None
    assert report.cancelled == [stuck.id]
    assert report.left_queued == [left.id]
    assert report.finished_in_grace == 1
    assert (await bus.get(quick.id)).state is TaskState.COMPLETED
    assert (await bus.get(stuck.id)).state is TaskState.CANCELLED
    assert (await bus.get(left.id)).state is TaskState.QUEUED
    assert recorder.of(TaskCancelled, stuck.id)[0].reason == "bus shutdown"
    assert recorder.of(TaskCompleted, quick.id)


async def test_an_error_in_the_body_propagates_unwrapped(make_bus: MakeBus) -> None:
    with pytest.raises(KeyError, match="mine"):
        async with make_bus():
            raise KeyError("mine")


async def test_a_bus_can_be_started_again(make_bus: MakeBus) -> None:
    bus = make_bus()

    @bus.task("re:run")
    async def run(ctx: TaskContext) -> int:
        return 1

    for _ in range(2):
        async with bus:
            assert await (await run.submit()).result(timeout=5) == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_stray_asyncio_cancellation_fails_the_task_not_the_worker(
    make_bus: MakeBus,
) -> None:
    import asyncio

    bus = make_bus(workers=1)

    @bus.task("c:leaky", retry=RetryPolicy.never())
    async def leaky(ctx: TaskContext) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.cancel()
        await future  # raises CancelledError, though nobody cancelled the task

    @bus.task("c:after")
    async def after(ctx: TaskContext) -> str:
        return "worker alive"

    async with bus:
        with pytest.raises(TaskFailedError, match="cancellation nobody requested"):
            await (await leaky.submit()).result(timeout=5)
        assert await (await after.submit()).result(timeout=5) == "worker alive"


async def test_waiters_and_subscriptions_end_when_the_bus_stops(make_bus: MakeBus) -> None:
    from taskbus import BusNotRunning

    bus = make_bus()

    @bus.task("sd:later")
    async def later(ctx: TaskContext) -> None: ...

    outcome: list[str] = []
    subscribed = anyio.Event()

    async def wait_for_result(handle_id: str) -> None:
        try:
            await bus.result(handle_id)
        except BusNotRunning as exc:
            outcome.append(f"waiter: {exc}")

    async def follow() -> None:
        async with bus.subscribe() as events:
            subscribed.set()
            async for _ in events:
                pass
        outcome.append("subscription ended")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg, bus:
            handle = await later.submit(delay=60)
            tg.start_soon(wait_for_result, handle.id)
            tg.start_soon(follow)
            await subscribed.wait()
    assert "subscription ended" in outcome
    assert any("stopped before task" in line for line in outcome)
