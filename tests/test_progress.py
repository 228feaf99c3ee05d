from collections.abc import Callable

import anyio
import pytest

from taskbus import TaskBus, TaskCompleted, TaskContext, TaskProgress
from taskbus._progress import ProgressDebouncer, estimate_remaining
from taskbus._record import TaskRecord
from taskbus._states import TaskState
from taskbus._timers import Timers
from taskbus.testing import EventRecorder, FakeClock


def running_record(clock: FakeClock) -> TaskRecord:
    record = TaskRecord(id="r", type="t", input=None, priority=5, created_at=clock.now())
    record.state = TaskState.RUNNING
    record.started_at = clock.now()
    return record


def debouncer(
    clock: FakeClock,
) -> tuple[ProgressDebouncer[TaskRecord], Timers, list[float | None]]:
    timers = Timers(clock)
    sent: list[float | None] = []
    return ProgressDebouncer(clock, timers, lambda r: sent.append(r.progress), 0.1), timers, sent


def test_leading_edge_then_at_most_one_per_interval_and_last_value_kept(
    fake_clock: FakeClock,
) -> None:
    deb, timers, sent = debouncer(fake_clock)
    record = running_record(fake_clock)
    for value in (1.0, 2.0, 3.0, 4.0):
        record.progress = value
        deb.update(record)
        fake_clock.advance(0.01)
        timers.run_due()
    assert sent == [1.0], "only the leading edge within the interval"
    fake_clock.advance(0.07)  # t = 0.11: the trailing flush is due
    timers.run_due()
    assert sent == [1.0, 4.0], "the trailing event carries the last value"
    fake_clock.advance(1)
    timers.run_due()
    assert sent == [1.0, 4.0], "nothing more without updates"


def test_finish_flushes_pending_and_then_nothing_follows(fake_clock: FakeClock) -> None:
    deb, timers, sent = debouncer(fake_clock)
    record = running_record(fake_clock)
    record.progress = 10.0
    deb.update(record)
    record.progress = 90.0
    deb.update(record)
    deb.finish(record.id)
    assert sent == [10.0, 90.0]
    fake_clock.advance(1)
    timers.run_due()
    assert sent == [10.0, 90.0]
    assert len(deb) == 0


def test_updates_spaced_wider_than_the_interval_all_go_out(fake_clock: FakeClock) -> None:
    deb, _, sent = debouncer(fake_clock)
    record = running_record(fake_clock)
    for value in (1.0, 2.0, 3.0):
        record.progress = value
        deb.update(record)
        fake_clock.advance(0.2)
    assert sent == [1.0, 2.0, 3.0]


def test_eta() -> None:
    assert estimate_remaining(0, 0.0, 10.0) is None
    assert estimate_remaining(25, 0.0, 10.0) == pytest.approx(30.0)
    assert estimate_remaining(100, 0.0, 10.0) == 0.0


@pytest.mark.anyio
async def test_progress_events_through_the_bus_with_fake_time(
    make_bus: Callable[..., TaskBus], fake_clock: FakeClock
) -> None:
    bus = make_bus(clock=fake_clock)
    step = anyio.Event()
    go = anyio.Event()

    @bus.task("p:work")
    async def work(ctx: TaskContext) -> str:
        await ctx.progress(10, "start")
        fake_clock.advance(1.0)
        await ctx.progress(20, "a")  # 1 s after the first: goes out at once
        await ctx.progress(30, "b")  # within 100 ms: pending
        await ctx.progress(current=4, total=10, message="c")  # pending, replaces b
        step.set()
        await go.wait()
        return "done"

    async with bus:
        recorder = EventRecorder(bus)
        handle = await work.submit()
        with anyio.fail_after(5):
            await step.wait()
        go.set()
        await recorder.wait_for(TaskCompleted, task_id=handle.id)
    progress = recorder.of(TaskProgress, handle.id)
    assert [(p.progress, p.message) for p in progress] == [
        (10, "start"),
        (20, "a"),
        (40, "c"),
    ]
    assert progress[-1].current == 4 and progress[-1].total == 10
    assert progress[1].estimated_time_remaining == pytest.approx(4.0)  # 1 s for 20 %
    names = recorder.names(handle.id)
    assert names.index("task-completed") == len(names) - 1, "no event after the final one"


@pytest.mark.anyio
async def test_progress_is_recorded_on_the_snapshot_without_listeners(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()
    reported = anyio.Event()
    release = anyio.Event()

    @bus.task("p:quiet")
    async def quiet(ctx: TaskContext) -> None:
        await ctx.progress(current=3, total=4, message="three of four")
        reported.set()
        await release.wait()

    async with bus:
        handle = await quiet.submit()
        with anyio.fail_after(5):
            await reported.wait()
        snap = await handle.get()
        assert (snap.progress, snap.message, snap.current, snap.total) == (
            75.0,
            "three of four",
            3,
            4,
        )
        release.set()
        await handle.result(timeout=5)


@pytest.mark.anyio
async def test_bad_progress_values_raise_in_the_handler(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()

    @bus.task("p:bad", retry={"max_attempts": 1})
    async def bad(ctx: TaskContext) -> None:
        await ctx.progress(150)

    async with bus:
        snap = await (await bad.submit()).wait(timeout=5)
    assert snap.error is not None and "between 0 and 100" in snap.error.message
