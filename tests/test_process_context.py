"""Process handlers with a context: progress up and cancellation down, across the boundary."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import _process_handlers
import anyio
import pytest

from taskbus import (
    InvalidTaskDefinition,
    ProcessContext,
    RetryPolicy,
    TaskBus,
    TaskCancelledError,
    TaskCompleted,
    TaskFailedError,
    TaskProgress,
    TaskState,
)
from taskbus._process_run import PROCESS_STOP_GRACE
from taskbus.testing import EventRecorder, FakeClock

pytestmark = pytest.mark.anyio
MakeBus = Callable[..., TaskBus]


async def test_progress_reaches_listeners_in_order_and_debounced(make_bus: MakeBus) -> None:
    bus = make_bus(clock=FakeClock())  # fake time never moves: only leading and final edges
    counter = bus.task("pp:count", run_in="process")(_process_handlers.count_with_progress)
    async with bus:
        recorder = EventRecorder(bus)
        handle = await counter.submit(200)
        assert await handle.result(timeout=30) == 200
        await recorder.wait_for(TaskCompleted, task_id=handle.id)
    progress = recorder.of(TaskProgress, handle.id)
    assert [(e.current, e.total, e.message) for e in progress] == [
        (1, 200, "step 1"),
        (200, 200, "step 200"),
    ]
    assert progress[-1].progress == 100.0
    assert recorder.names(handle.id)[-2:] == ["task-progress", "task-completed"]
    snap = await handle.get()
    assert snap.current == 200 and snap.message == "step 200"


async def test_a_process_handler_that_asks_fails_with_a_clear_error(make_bus: MakeBus) -> None:
    bus = make_bus()
    asking = bus.task("pp:ask", run_in="process")(_process_handlers.ask_in_a_process)
    async with bus:
        handle = await asking.submit()
        with pytest.raises(TaskFailedError, match=r"ctx\.ask needs an async handler"):
            await handle.result(timeout=30)


async def test_progress_arrives_while_the_handler_runs(make_bus: MakeBus, tmp_path: Path) -> None:
    bus = make_bus()
    waiter = bus.task("pp:wait", run_in="process")(_process_handlers.report_then_wait)
    go = tmp_path / "go"
    async with bus:
        recorder = EventRecorder(bus)
        handle = await waiter.submit(str(go))
        event = await recorder.wait_for(TaskProgress, task_id=handle.id, timeout=30)
        assert (event.progress, event.message) == (50.0, "half way")
        assert (await handle.get()).state is TaskState.RUNNING
        go.touch()
        assert await handle.result(timeout=30) == "done"


async def test_cancelled_handler_that_polls_stops_cleanly(
    make_bus: MakeBus, tmp_path: Path
) -> None:
    bus = make_bus()
    spinner = bus.task("pp:spin", run_in="process")(_process_handlers.spin_until_cancelled)
    marker = tmp_path / "marker"
    async with bus:
        recorder = EventRecorder(bus)
        handle = await spinner.submit(str(marker))
        await recorder.wait_for(TaskProgress, task_id=handle.id, timeout=30)
        await handle.cancel("user pressed stop")
        with anyio.fail_after(PROCESS_STOP_GRACE + 5), pytest.raises(TaskCancelledError):
            await handle.result()
    # Written by the handler's finally as raise_if_cancelled() raised: it was not killed.
    assert marker.read_text() == "cleaned up"
    assert recorder.names(handle.id)[-1] == "task-cancelled"


async def test_timeout_reaches_a_polling_handler(make_bus: MakeBus, tmp_path: Path) -> None:
    bus = make_bus()
    spinner = bus.task("pp:spin", run_in="process", timeout=1.0, retry=RetryPolicy.never())(
        _process_handlers.spin_until_cancelled
    )
    marker = tmp_path / "marker"
    async with bus:
        handle = await spinner.submit(str(marker))
        with anyio.fail_after(30), pytest.raises(TaskFailedError, match="timed out"):
            await handle.result()
    assert marker.read_text() == "cleaned up"


async def test_handler_deaf_to_cancel_is_killed_after_the_grace(
    make_bus: MakeBus, tmp_path: Path
) -> None:
    bus = make_bus()
    deaf = bus.task("pp:deaf", run_in="process")(_process_handlers.deaf_to_cancel)
    pid_file = tmp_path / "pid"
    async with bus:
        recorder = EventRecorder(bus)
        handle = await deaf.submit(str(pid_file))
        await recorder.wait_for(TaskProgress, task_id=handle.id, timeout=30)
        await handle.cancel("stop")
        with anyio.fail_after(PROCESS_STOP_GRACE + 10), pytest.raises(TaskCancelledError):
            await handle.result()
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped before the task was settled


async def test_context_tells_the_handler_about_its_task(make_bus: MakeBus) -> None:
    bus = make_bus()
    describe = bus.task("pp:describe", run_in="process")(_process_handlers.describe)
    async with bus:
        handle = await describe.submit(owner="alice", metadata={"k": [1, 2]})
        seen = await handle.result(timeout=30)
    assert seen["pid"] != os.getpid()
    assert {k: v for k, v in seen.items() if k != "pid"} == {
        "task_id": handle.id,
        "task_type": "pp:describe",
        "attempt": 1,
        "owner": "alice",
        "metadata": {"k": [1, 2]},
        "cancelled": False,
    }


async def test_handler_without_context_still_runs(make_bus: MakeBus) -> None:
    bus = make_bus()
    square = bus.task("pp:square", run_in="process")(_process_handlers.square)
    async with bus:
        assert await (await square.submit(7)).result(timeout=30) == 49


def test_process_context_is_only_for_process_handlers(make_bus: MakeBus) -> None:
    bus = make_bus()

    def on_a_thread(ctx: ProcessContext) -> None:
        return None

    with pytest.raises(InvalidTaskDefinition, match="run_in='process'"):
        bus.task("pp:thread")(on_a_thread)
    assert bus.task("pp:ok", run_in="process")(_process_handlers.describe).takes_context
