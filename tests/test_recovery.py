"""Recovery at start: what a bus does with tasks a dead process left behind."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from pydantic import BaseModel

from taskbus import (
    RetryPolicy,
    TaskBus,
    TaskContext,
    TaskFailedError,
    TaskRetrying,
    TaskState,
)
from taskbus._record import TaskRecord
from taskbus._states import TaskState as State
from taskbus.stores.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


class Params(BaseModel):
    n: int


async def leave_behind(path: Path, *records: TaskRecord) -> None:
    """Write records as a crashed process would have left them."""
    store = SqliteStore(path)
    await store.open()
    try:
        for record in records:
            state = record.state
            record.state = State.QUEUED
            await store.add(record)
            if state is State.RUNNING:
                record.move(State.RUNNING)
                record.attempt += 1
                record.started_at = record.created_at + 1
                await store.claim(record)
        await store.flush()
    finally:
        await store.close()


def record(
    task_id: str,
    state: State,
    *,
    max_attempts: int = 3,
    payload: object = None,
    task_type: str = "rec:work",
    priority: int = 5,
) -> TaskRecord:
    made = TaskRecord(
        task_id,
        task_type,
        payload if payload is not None else {"n": 1},
        priority,
        1_700_000_000.0,
        max_attempts,
    )
    made.state = state
    return made


async def until_held(bus: TaskBus) -> None:
    """Wait (bounded) until a worker has met a task of an unknown type and held it."""
    with anyio.fail_after(5):
        while not len(bus._held):  # noqa: ASYNC110 - a count, no event
            await anyio.sleep(0.01)


def make_bus(path: Path, *, on_interrupt: str = "retry", ran: list[str] | None = None) -> TaskBus:
    bus = TaskBus(store=SqliteStore(path), workers=2, shutdown_grace=1)

    @bus.task("rec:work", on_interrupt=on_interrupt, retry=RetryPolicy(max_attempts=3))
    async def work(ctx: TaskContext, params: Params) -> int:
        if ran is not None:
            ran.append(ctx.task_id)
        return params.n * 10

    return bus


async def test_running_tasks_are_queued_again_and_queued_ones_run(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    await leave_behind(path, record("r1", State.RUNNING), record("q1", State.QUEUED))
    ran: list[str] = []
    async with make_bus(path, ran=ran) as bus:
        assert await bus.result("r1", timeout=5) == 10
        assert await bus.result("q1", timeout=5) == 10
        snap = await bus.get("r1")
    assert sorted(ran) == ["q1", "r1"]
    assert snap.attempts == 2, "the interrupted attempt counts"
    assert snap.state is TaskState.COMPLETED


async def test_an_interrupted_task_without_attempts_left_fails(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    await leave_behind(path, record("last", State.RUNNING, max_attempts=1))
    async with make_bus(path) as bus:
        with pytest.raises(TaskFailedError, match="interrupted"):
            await bus.result("last", timeout=5)
        snap = await bus.get("last")
    assert snap.error is not None and snap.error.exception_type.endswith("TaskInterruptedError")


async def test_a_definition_can_ask_to_fail_interrupted_tasks(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    await leave_behind(path, record("once", State.RUNNING))
    ran: list[str] = []
    async with make_bus(path, on_interrupt="fail", ran=ran) as bus:
        with pytest.raises(TaskFailedError, match="interrupted"):
            await bus.result("once", timeout=5)
    assert ran == []


async def test_stored_input_that_no_longer_validates_fails_clearly(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    await leave_behind(path, record("old", State.QUEUED, payload={"count": 1}))
    async with make_bus(path) as bus:
        with pytest.raises(TaskFailedError, match="n"):
            await bus.result("old", timeout=5)


async def test_recovered_work_keeps_priority_order(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    await leave_behind(
        path,
        *(record(f"p{p}", State.QUEUED, priority=p) for p in (1, 9, 5)),
    )
    ran: list[str] = []
    bus = TaskBus(store=SqliteStore(path), workers=1, shutdown_grace=1)

    @bus.task("rec:work")
    async def work(ctx: TaskContext, params: Params) -> int:
        ran.append(ctx.task_id)
        return 0

    async with bus:
        for task_id in ("p1", "p5", "p9"):
            await bus.result(task_id, timeout=5)
    assert ran == ["p9", "p5", "p1"]


async def test_a_plugin_that_registers_after_start_gets_its_recovered_tasks_typed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    await leave_behind(
        path,
        record("late-q", State.QUEUED, task_type="plugin:work"),
        record("late-r", State.RUNNING, task_type="plugin:work"),
    )
    seen: list[object] = []
    async with TaskBus(store=SqliteStore(path), workers=2, shutdown_grace=1) as bus:
        with anyio.fail_after(5):  # the workers meet the tasks before the plugin loads
            while len(bus._held) < 2:  # noqa: ASYNC110 - a count, no event
                await anyio.sleep(0.01)
        assert (await bus.get("late-q")).state is TaskState.QUEUED
        scope = bus.registry.scope("plugin")

        @scope.task("work")
        async def work(ctx: TaskContext, params: Params) -> int:
            seen.append(params)
            return params.n

        assert await bus.result("late-q", timeout=5) == 1
        assert await bus.result("late-r", timeout=5) == 1
    assert seen == [Params(n=1), Params(n=1)], "the handler got its model, not a dict"


async def test_tasks_of_a_type_that_never_registers_fail_after_the_grace(
    tmp_path: Path,
) -> None:
    from taskbus.testing import FakeClock

    path = tmp_path / "jobs.db"
    await leave_behind(path, record("ghost", State.QUEUED, task_type="gone:away"))
    clock = FakeClock()
    bus = TaskBus(
        store=SqliteStore(path), workers=1, shutdown_grace=1, clock=clock, unknown_type_grace=60
    )
    async with bus:
        await until_held(bus)  # claimed from the store, met by a worker, held
        clock.advance(59)
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        assert (await bus.get("ghost")).state is TaskState.QUEUED
        clock.advance(1)
        with pytest.raises(TaskFailedError, match="no task type named 'gone:away'"):
            await bus.result("ghost", timeout=5)


async def test_held_tasks_of_unknown_types_fail_on_an_explicit_call(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    await leave_behind(path, record("ghost", State.QUEUED, task_type="gone:away"))
    async with TaskBus(store=SqliteStore(path), workers=1, unknown_type_grace=None) as bus:
        await until_held(bus)
        assert await bus.fail_unknown_types(reason="plugin removed") == 1
        with pytest.raises(TaskFailedError, match="plugin removed"):
            await bus.result("ghost", timeout=5)


async def test_recovery_publishes_no_retrying_event_for_requeued_tasks(tmp_path: Path) -> None:
    from taskbus.testing import EventRecorder

    path = tmp_path / "jobs.db"
    await leave_behind(path, record("r2", State.RUNNING))
    bus = make_bus(path)
    seen: list[str] = []
    bus.on("*", lambda event: seen.append(event.name))
    async with bus:
        recorder = EventRecorder(bus)
        await bus.result("r2", timeout=5)
    assert not recorder.of(TaskRetrying)
    assert seen[-2:] == ["task-started", "task-completed"]


async def test_cancelling_a_held_task_lets_it_go(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    await leave_behind(path, record("ghost", State.QUEUED, task_type="gone:away"))
    async with TaskBus(store=SqliteStore(path), workers=1, unknown_type_grace=None) as bus:
        await until_held(bus)
        assert await bus.cancel("ghost", reason="not wanted")
        assert len(bus._held) == 0
        assert await bus.fail_unknown_types() == 0
        assert (await bus.get("ghost")).state is TaskState.CANCELLED


@pytest.mark.parametrize("kind", ["async", "thread"])
async def test_a_graceful_stop_hands_running_tasks_back_and_they_run_on_the_next_start(
    tmp_path: Path, kind: str
) -> None:
    import threading

    path = tmp_path / "jobs.db"
    started = threading.Event()
    release = threading.Event()
    bus = TaskBus(store=SqliteStore(path), workers=1, shutdown_grace=0.1)

    if kind == "async":

        @bus.task("rec:work", retry=RetryPolicy(max_attempts=1))
        async def work(ctx: TaskContext, params: Params) -> int:
            started.set()
            await anyio.sleep_forever()
            return 0

    else:

        @bus.task("rec:work", retry=RetryPolicy(max_attempts=1))
        def work_in_thread(ctx: TaskContext, params: Params) -> int:
            started.set()
            release.wait(5)
            return 0

    try:
        async with bus:
            handle = await bus.submit("rec:work", {"n": 2})
            assert await anyio.to_thread.run_sync(started.wait, 5)
    finally:
        release.set()
    report = bus.shutdown_report
    assert report is not None
    assert report.handed_back == [handle.id] and report.cancelled == []
    ran: list[str] = []
    async with make_bus(path, ran=ran) as again:
        assert await again.result(handle.id, timeout=5) == 20
        snap = await again.get(handle.id)
    assert ran == [handle.id]
    assert snap.attempts == 1, "the attempt the stop interrupted is not counted"


async def test_a_graceful_stop_of_the_memory_store_still_cancels() -> None:
    started = anyio.Event()
    bus = TaskBus(workers=1, shutdown_grace=0.1)

    @bus.task("mem:work")
    async def work(ctx: TaskContext) -> None:
        started.set()
        await anyio.sleep_forever()

    async with bus:
        handle = await bus.submit("mem:work")
        with anyio.fail_after(5):
            await started.wait()
    report = bus.shutdown_report
    assert report is not None and report.cancelled == [handle.id] and report.handed_back == []
