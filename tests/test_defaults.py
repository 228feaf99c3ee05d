"""The default bus serves 100+ concurrent async tasks; threads keep their own limit."""

from __future__ import annotations

import threading

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest

from taskbus import TaskBus, TaskContext
from taskbus._taskbus import default_thread_limit, default_workers

pytestmark = pytest.mark.anyio


async def test_default_bus_runs_100_async_tasks_at_once() -> None:
    bus = TaskBus(shutdown_grace=1.0)
    started = 0
    all_started = anyio.Event()

    @bus.task("d:wait")
    async def wait_for_all(ctx: TaskContext) -> None:
        nonlocal started
        started += 1
        if started == 100:
            all_started.set()
        with anyio.fail_after(5):  # fails the task unless all 100 run at once
            await all_started.wait()

    async with bus:
        handles = [await wait_for_all.submit() for _ in range(100)]
        with anyio.fail_after(10):
            for handle in handles:
                await handle.result()
    assert bus.executor.workers == default_workers() >= 100


async def test_sync_handlers_stay_within_the_thread_limit() -> None:
    bus = TaskBus(shutdown_grace=1.0, thread_limit=3)
    lock = threading.Lock()
    running = peak = 0
    release = threading.Event()
    three_running = anyio.Event()
    token = anyio.lowlevel.current_token()

    @bus.task("d:block")
    def block(ctx: TaskContext) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
            if running == 3:
                anyio.from_thread.run_sync(three_running.set, token=token)
        try:
            release.wait(10)
        finally:
            with lock:
                running -= 1

    async with bus:
        handles = [await block.submit() for _ in range(12)]
        with anyio.fail_after(5):
            await three_running.wait()
        release.set()
        with anyio.fail_after(10):
            for handle in handles:
                await handle.result()
    assert peak == 3
    assert bus.executor.thread_limit == 3


async def test_an_abandoned_thread_keeps_its_thread_slot() -> None:
    bus = TaskBus(shutdown_grace=1.0, thread_limit=1)
    entered = threading.Event()
    release = threading.Event()

    @bus.task("d:deaf")
    def deaf(ctx: TaskContext) -> None:
        entered.set()
        release.wait(10)

    @bus.task("d:next")
    def after(ctx: TaskContext) -> bool:
        return release.is_set()  # the deaf thread had returned when this one started

    async with bus:
        first = await deaf.submit()
        with anyio.fail_after(5):
            await anyio.to_thread.run_sync(entered.wait)
        await first.cancel("stop")
        second = await after.submit()
        release.set()
        assert await second.result(timeout=5) is True


def test_default_thread_limit_is_bounded() -> None:
    assert 4 <= default_thread_limit() <= 32


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_thread_limit_must_be_a_positive_int(bad: object) -> None:
    with pytest.raises(ValueError, match="thread_limit"):
        TaskBus(thread_limit=bad)  # type: ignore[arg-type]
