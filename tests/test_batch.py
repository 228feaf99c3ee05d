"""Batches: submit many, follow them as one, cancel what has not finished."""

from collections.abc import Callable

import anyio
import pytest

from taskbus import (
    BatchFinished,
    BatchNotFound,
    BatchProgress,
    InvalidTaskInput,
    RetryPolicy,
    TaskBus,
    TaskContext,
    TaskStarted,
    TaskState,
)
from taskbus.testing import EventRecorder, FakeClock

pytestmark = pytest.mark.anyio
MakeBus = Callable[..., TaskBus]


def register(bus: TaskBus, gate: anyio.Event | None = None) -> None:
    @bus.task("b:square", retry=RetryPolicy.never())
    async def square(ctx: TaskContext, n: int) -> int:
        await ctx.progress(50, f"squaring {n}")
        if gate is not None and n >= 100:
            await gate.wait()
        if n < 0:
            raise ValueError("negative")
        return n * n


async def test_a_batch_runs_every_item_and_one_failure_does_not_stop_the_rest(
    make_bus: MakeBus,
) -> None:
    bus = make_bus(workers=2)
    register(bus)
    async with bus:
        recorder = EventRecorder(bus)
        batch = await bus.submit_batch([("b:square", n) for n in (1, 2, -1, 3)], owner="ann")
        summary = await batch.wait(timeout=5)
        finished = await recorder.wait_for(BatchFinished)
        snaps = [await bus.get(task_id) for task_id in batch.task_ids]
    assert (summary.total, summary.completed, summary.failed, summary.cancelled) == (4, 3, 1, 0)
    assert summary.finished and summary.progress == 100.0
    assert (finished.batch_id, finished.completed, finished.failed) == (batch.id, 3, 1)
    assert all(s.metadata["batch_id"] == batch.id and s.owner == "ann" for s in snaps)
    assert [s.result for s in snaps if s.state is TaskState.COMPLETED] == [1, 4, 9]
    assert len(recorder.of(BatchFinished)) == 1


async def test_a_bad_item_raises_and_stores_nothing(make_bus: MakeBus) -> None:
    bus = make_bus()
    register(bus)
    async with bus:
        with pytest.raises(InvalidTaskInput):
            await bus.submit_batch([("b:square", 1), ("b:square", "two")])
        assert await bus.list() == []
        with pytest.raises(BatchNotFound):
            await bus.batch("nope")


async def test_batch_progress_counts_eta_and_cancel(
    make_bus: MakeBus, fake_clock: FakeClock
) -> None:
    bus = make_bus(workers=1, clock=fake_clock)
    gate = anyio.Event()
    register(bus, gate)
    async with bus:
        recorder = EventRecorder(bus)
        batch = await bus.submit_batch([("b:square", n) for n in (2, 100, 3, 4)])
        blocked = batch.task_ids[1]
        await recorder.wait_for(TaskStarted, task_id=blocked)
        summary = await bus.batch(batch.id)
        assert (summary.completed, summary.running, summary.queued) == (1, 1, 2)
        assert summary.message == "squaring 100"
        assert summary.eta is not None, "one item finished, so there is an average"
        assert summary.progress == pytest.approx((100 + 50) / 4)
        progress = await recorder.wait_for(BatchProgress)
        assert progress.batch_id == batch.id and progress.total == 4
        assert await bus.cancel_batch(batch.id, reason="stop") == 3
        final = await batch.wait(timeout=5)
    assert (final.completed, final.cancelled) == (1, 3)
    assert recorder.names()[-1] == "batch-finished"
