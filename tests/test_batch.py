"""Batches: submit many, follow them as one, cancel what has not finished."""

import gc
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from taskbus import (
    BatchFinished,
    BatchNotFound,
    BatchProgress,
    InvalidTaskInput,
    RetentionPolicy,
    RetryPolicy,
    TaskBus,
    TaskCompleted,
    TaskContext,
    TaskProgress,
    TaskStarted,
    TaskState,
)
from taskbus._record import TaskRecord
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


async def test_a_batch_stays_below_100_percent_while_one_task_still_runs(
    make_bus: MakeBus,
) -> None:
    bus = make_bus(workers=3, progress_interval=0)
    gate = anyio.Event()

    @bus.task("b:step", retry=RetryPolicy.never())
    async def step(ctx: TaskContext, n: int) -> int:
        await ctx.progress(current=3, total=3, message=f"step {n} done")  # 100 %, not final
        if n == 3:
            await gate.wait()
        return n

    async with bus:
        recorder = EventRecorder(bus)
        batch = await bus.submit_batch([("b:step", n) for n in (1, 2, 3)])
        held = batch.task_ids[2]
        for task_id in batch.task_ids[:2]:
            await recorder.wait_for(TaskCompleted, task_id=task_id)
        await recorder.wait_for(TaskProgress, task_id=held)
        summary = await bus.batch(batch.id)
        before = list(recorder.of(BatchProgress))
        gate.set()
        final = await batch.wait(timeout=5)
    assert (summary.completed, summary.running) == (2, 1)
    assert summary.progress < 100
    assert before and all(event.progress < 100 for event in before)
    assert final.progress == 100.0


async def test_finished_batches_hold_no_task_records_and_are_released_with_retention(
    make_bus: MakeBus, fake_clock: FakeClock
) -> None:
    bus = make_bus(clock=fake_clock, retention=RetentionPolicy(max_age=60, interval=3600))
    register(bus)
    async with bus:
        batches = [await bus.submit_batch([("b:square", n) for n in range(3)]) for _ in range(20)]
        for batch in batches:
            await batch.wait(timeout=5)
        tracker = bus._batches
        assert (len(tracker), tracker.records_held) == (0, 0)
        kept = await bus.batch(batches[0].id)
        assert kept.finished and kept.completed == 3
        assert await bus.cancel_batch(batches[0].id) == 0
        assert await bus.store.purge(finished_before=fake_clock.now() + 1) == 60
        gc.collect()
        ids = {task_id for batch in batches for task_id in batch.task_ids}
        alive = [o for o in gc.get_objects() if isinstance(o, TaskRecord) and o.id in ids]
        assert alive == [], "no task record outlives its purge"
        fake_clock.advance(61)
        with pytest.raises(BatchNotFound, match="none of its tasks"):
            await bus.batch(batches[0].id)
        with pytest.raises(BatchNotFound):
            await bus.cancel_batch(batches[0].id)
        handle_summary = await batches[0].wait(timeout=1)  # the handle keeps its own
    assert handle_summary.completed == 3


async def test_only_the_last_finished_batches_are_kept_then_read_from_the_store(
    make_bus: MakeBus,
) -> None:
    bus = make_bus()
    register(bus)
    bus._batches.keep_finished = 2
    async with bus:
        batches = [await bus.submit_batch([("b:square", n)]) for n in range(3)]
        for batch in batches:
            await batch.wait(timeout=5)
        assert len(bus._batches._finished) == 2
        released = await bus.batch(batches[0].id)  # read back from the store
        assert released == await batches[0].wait()
        assert [(await bus.batch(b.id)).completed for b in batches[1:]] == [1, 1]
        await bus.store.purge(keep=0)
        with pytest.raises(BatchNotFound):
            await bus.batch(batches[0].id)


async def test_a_batch_on_a_shared_store_counts_what_workers_report(
    make_bus: MakeBus, tmp_path: Path
) -> None:
    bus = make_bus(workers=2, store=f"sqlite:///{tmp_path}/batch.db")
    register(bus)
    async with bus:
        recorder = EventRecorder(bus)
        batch = await bus.submit_batch([("b:square", n) for n in (1, 2, -1, 3)])
        summary = await batch.wait(timeout=10)
        finished = await recorder.wait_for(BatchFinished)
        again = await bus.batch(batch.id)
    assert (summary.total, summary.completed, summary.failed, summary.cancelled) == (4, 3, 1, 0)
    assert summary.finished and summary.progress == 100.0
    assert (finished.completed, finished.failed) == (3, 1)
    assert again == summary


async def test_a_batch_whose_submit_fails_midway_is_the_tasks_before(
    make_bus: MakeBus, tmp_path: Path
) -> None:
    from taskbus import UnstorableValue

    bus = make_bus(workers=2, store=f"sqlite:///{tmp_path}/batch.db")

    @bus.task("b:echo")
    async def echo(text: str) -> str:
        return text

    async with bus:
        with pytest.raises(UnstorableValue):  # valid text, but not Unicode a file can hold
            await bus.submit_batch([("b:echo", "a"), ("b:echo", "b"), ("b:echo", "c\ud800")])
        stored = await bus.list()
        assert len(stored) == 2
        batch_id = stored[0].metadata["batch_id"]
        with anyio.fail_after(10):
            while not (summary := await bus.batch(batch_id)).finished:  # noqa: ASYNC110
                await anyio.sleep(0.01)
    assert (summary.total, summary.completed) == (2, 2)
