"""Dependencies beyond the store contract and the bus scenarios: what each kind of
handler sees in its parents, the threaded facade, purged parents, a stop while
children wait, and the pieces (`check_after`, `ParentWaits`)."""

from __future__ import annotations

import _process_handlers
import anyio
import pytest
from pydantic import BaseModel
from stores._fake import ValueStore

from taskbus import (
    InvalidSubmission,
    TaskBus,
    TaskContext,
    TaskHandle,
    TaskStarted,
    TaskState,
    UnknownTaskType,
)
from taskbus._dependencies import ParentWaits, RecentFinals, check_after
from taskbus._record import TaskRecord
from taskbus._threaded import ThreadedTaskBus
from taskbus.testing import EventRecorder

pytestmark = pytest.mark.anyio

WAIT = 5.0


class Rows(BaseModel):
    rows: int


def test_check_after_takes_ids_and_handles_in_order_without_duplicates() -> None:
    handle = TaskHandle[int](TaskBus(), "b", "t")
    assert check_after(["a", handle, "a", "c"], "cancel") == ["a", "b", "c"]
    assert check_after(None, "run") == []
    for bad in ([1], [None], [""], [b"a"]):
        with pytest.raises(InvalidSubmission, match="ids or handles"):
            check_after(bad, "cancel")  # type: ignore[arg-type]


def test_parent_waits_releases_a_child_once_its_last_parent_ends() -> None:
    ready: list[str] = []
    waits = ParentWaits(lambda record: ready.append(record.id))
    child, cancelled = TaskRecord("c", "t", None, 5, 0.0), TaskRecord("x", "t", None, 5, 0.0)
    waits.hold(child, ["p1", "p2"])
    waits.hold(cancelled, ["p1"])
    cancelled.move(TaskState.CANCELLED)
    waits.parent_final("p1")
    assert (ready, len(waits)) == ([], 1)
    waits.parent_final("p2")
    waits.parent_final("p2")  # a second end of the same id changes nothing
    assert (ready, len(waits), child.waiting_for) == (["c"], 0, None)


async def test_a_thread_handler_and_a_process_handler_see_their_parents() -> None:
    bus = TaskBus(workers=2)

    @bus.task("deps:rows")
    async def rows(ctx: TaskContext, n: int) -> Rows:
        return Rows(rows=n)

    @bus.task("deps:sync")
    def in_thread(ctx: TaskContext) -> list[int]:
        return [parent.result.rows for parent in ctx.parents]

    joined = bus.task("deps:process", run_in="process")(_process_handlers.parent_results)
    async with bus:
        first, second = await rows.submit(1), await rows.submit(2)
        threaded = await in_thread.submit(after=[first, second])
        processed = await joined.submit("p", after=[second])
        assert await threaded.result(timeout=WAIT) == [1, 2]
        assert await processed.result(timeout=20) == ["p", Rows(rows=2)]


def test_the_threaded_facade_takes_after_with_its_own_handles() -> None:
    tb = ThreadedTaskBus.start(TaskBus(workers=2), dispatcher=None, backend="asyncio")
    try:

        @tb.task("deps:double")
        async def double(ctx: TaskContext, n: int) -> int:
            return n * 2 + sum(int(parent.result) for parent in ctx.parents)

        first = tb.submit("deps:double", 1)
        second = tb.submit(double, 10, after=[first], on_parent_failure="fail")
        assert second.result(timeout=WAIT) == 22
        steps = tb.chain(double.step(1), ("deps:double", 2), after=[second])
        assert [handle.result(timeout=WAIT) for handle in steps] == [24, 28]
        with pytest.raises(InvalidSubmission, match="unknown parent"):
            tb.submit("deps:double", 1, after=["missing"])
    finally:
        tb.close()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_parent_purged_before_its_child_runs_applies_the_policy(
    anyio_backend: str,
) -> None:
    bus = TaskBus(workers=2)
    go = anyio.Event()

    @bus.task("deps:step")
    async def step(ctx: TaskContext, n: int) -> int:
        if n == 0:
            await go.wait()
        return n

    async with bus:
        done, gated = await step.submit(1), await step.submit(0)
        assert await done.result(timeout=WAIT) == 1
        cancelled = await step.submit(5, after=[done, gated])
        ran = await step.submit(6, after=[done, gated], on_parent_failure="run")
        assert await bus.store.purge(keep=0) == 1  # the one finished parent
        go.set()
        final = await cancelled.wait(timeout=WAIT)
        assert await ran.result(timeout=WAIT) == 6
    assert final.state is TaskState.CANCELLED
    assert final.cancel_reason == f"parent task {done.id} is gone (purged before this task ran)"


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_children_left_waiting_at_a_stop_are_reported_left_queued(
    anyio_backend: str,
) -> None:
    bus = TaskBus(workers=1, shutdown_grace=0.1)
    started = anyio.Event()

    @bus.task("deps:forever")
    async def forever(ctx: TaskContext) -> None:
        started.set()
        await anyio.sleep_forever()

    async with bus:
        parent = await forever.submit()
        child = await forever.submit(after=[parent])
        with anyio.fail_after(WAIT):
            await started.wait()
        snapshot = await bus.get(child.id)
    assert snapshot.waiting_for == "parents"
    assert bus.shutdown_report is not None
    assert bus.shutdown_report.left_queued == [child.id]
    assert bus.shutdown_report.cancelled == [parent.id]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_chain_with_an_unknown_step_stores_nothing(anyio_backend: str) -> None:
    bus = TaskBus(workers=1)

    @bus.task("deps:ok")
    async def ok(ctx: TaskContext) -> None:
        return None

    async with bus:
        with pytest.raises(UnknownTaskType):
            await bus.chain(ok.step(), ("deps:missing", None))
        with pytest.raises(InvalidSubmission, match="at least one step"):
            await bus.chain()
        assert await bus.list() == []


class GatedReads(ValueStore):
    """The fake store, whose read of one task waits for the test to let it go."""

    def __init__(self) -> None:
        super().__init__()
        self.gated: str | None = None
        self.reading = anyio.Event()
        self.go = anyio.Event()

    async def get(self, task_id: str) -> TaskRecord | None:
        if task_id == self.gated:
            self.reading.set()
            await self.go.wait()
        return await super().get(task_id)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_child_cancelled_while_its_parents_are_read_never_starts(
    anyio_backend: str,
) -> None:
    store = GatedReads()
    bus = TaskBus(store=store, workers=2)
    ran: list[str] = []

    @bus.task("deps:note")
    async def note(ctx: TaskContext, n: int) -> int:
        ran.append(ctx.task_id)
        return n

    async with bus:
        recorder = EventRecorder(bus)
        parent = await note.submit(1)
        assert await parent.result(timeout=WAIT) == 1
        bus.lifecycle.finals = RecentFinals()  # as if the parent had ended elsewhere
        store.gated = parent.id
        child = await note.submit(2, after=[parent])
        with anyio.fail_after(WAIT):
            await store.reading.wait()
        store.gated = None
        assert await bus.cancel(child.id, reason="not now")
        store.go.set()
        final = await child.wait(timeout=WAIT)
        later = await note.submit(3)
        assert await later.result(timeout=WAIT) == 3, "the worker goes on"
        await bus.flush_events()
    assert (final.state, final.cancel_reason, final.attempts) == (
        TaskState.CANCELLED,
        "not now",
        0,
    )
    assert child.id not in ran
    started = [e for e in recorder.events if isinstance(e, TaskStarted) and e.task_id == child.id]
    assert started == []


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_metadata_cannot_name_parents_itself(anyio_backend: str) -> None:
    """Else a task could read another owner's task through ctx.parents."""
    bus = TaskBus(workers=1)

    @bus.task("deps:peek")
    async def peek(ctx: TaskContext) -> int:
        return len(ctx.parents)

    async with bus:
        theirs = await peek.submit(owner="bob")
        for key in ("after", "on_parent_failure"):
            with pytest.raises(InvalidSubmission, match=f"metadata key '{key}'"):
                await peek.submit(owner="eve", metadata={key: [theirs.id]})
            with pytest.raises(InvalidSubmission, match=f"metadata key '{key}'"):
                await bus.submit_batch([("deps:peek", None)], metadata={key: "run"})
        assert [s.id for s in await bus.list()] == [theirs.id]
