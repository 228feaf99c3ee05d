from datetime import UTC, datetime

import anyio
import pytest

from taskbus import EventBuffer, SubscriptionOverflow, TaskCompleted, TaskProgress, TaskStarted

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def progress(task: str, value: float) -> TaskProgress:
    return TaskProgress(
        task_id=task,
        task_type="t",
        timestamp=NOW,
        progress=value,
        current=None,
        total=None,
        message=None,
        estimated_time_remaining=None,
    )


def started(task: str) -> TaskStarted:
    return TaskStarted(task_id=task, task_type="t", timestamp=NOW, attempt=1)


def completed(task: str) -> TaskCompleted:
    return TaskCompleted(task_id=task, task_type="t", timestamp=NOW, result=None, duration=0)


def test_full_buffer_drops_the_oldest_progress_first() -> None:
    buffer = EventBuffer(3)
    buffer.put(progress("a", 1))
    buffer.put(started("b"))
    buffer.put(progress("a", 2))
    buffer.put(completed("a"))
    kept = [buffer.get_nowait() for _ in range(len(buffer))]
    assert [(e.name, getattr(e, "progress", None)) for e in kept if e] == [
        ("task-started", None),
        ("task-progress", 2),
        ("task-completed", None),
    ]
    assert buffer.dropped == 1


def test_final_events_are_never_dropped_below_the_hard_limit() -> None:
    buffer = EventBuffer(2, hard_limit=5)
    for n in range(5):
        buffer.put(completed(f"t{n}"))
    assert len(buffer) == 5
    buffer.put(progress("x", 1))
    assert len(buffer) == 5 and buffer.dropped == 1


@pytest.mark.anyio
async def test_past_the_hard_limit_the_reader_is_told() -> None:
    buffer = EventBuffer(1, hard_limit=2)
    for n in range(3):
        buffer.put(completed(f"t{n}"))
    received = []
    with pytest.raises(SubscriptionOverflow):
        async for event in buffer:
            received.append(getattr(event, "task_id", None))  # noqa: PERF401 - up to the raise
    assert received == ["t0", "t1"]


@pytest.mark.anyio
async def test_until_final_of_ends_iteration() -> None:
    buffer = EventBuffer(10, until_final_of="a")
    buffer.put(started("a"))
    buffer.put(completed("a"))
    buffer.put(started("late"))
    with anyio.fail_after(2):
        names = [event.name async for event in buffer]
    assert names == ["task-started", "task-completed"]


@pytest.mark.anyio
async def test_reader_waits_for_events() -> None:
    buffer = EventBuffer(10)
    got: list[str] = []

    async def read() -> None:
        got.extend([str(getattr(event, "task_id", "")) async for event in buffer])

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            await anyio.lowlevel.checkpoint()
            buffer.put(started("x"))
            buffer.close()
    assert got == ["x"]


def test_bad_size() -> None:
    with pytest.raises(ValueError):
        EventBuffer(0)


def test_a_full_buffer_without_progress_does_not_rescan() -> None:
    buffer = EventBuffer(2, hard_limit=10_000)
    for n in range(5000):
        buffer.put(completed(f"t{n}"))
    assert buffer._progress_held == 0 and len(buffer) == 5000
    buffer.put(progress("p", 1))
    assert buffer.dropped == 1, "a new progress event is the one dropped"


@pytest.mark.anyio
@pytest.mark.parametrize("finished_first", [False, True], ids=["live", "already-finished"])
async def test_a_task_subscription_filtered_to_progress_still_ends_with_the_task(
    finished_first: bool,
) -> None:
    from taskbus import TaskBus, TaskContext, TaskProgress

    bus = TaskBus(workers=1, shutdown_grace=1.0, progress_interval=0)
    go = anyio.Event()

    @bus.task("t:steps")
    async def steps(ctx: TaskContext) -> None:
        await go.wait()
        for n in (25, 50, 75):
            await ctx.progress(n)

    async with bus:
        handle = await bus.submit("t:steps")
        if finished_first:
            go.set()
            await handle.result(timeout=5)
        seen: list[float] = []
        with anyio.fail_after(5):
            async with bus.subscribe(task_id=handle.id, events=[TaskProgress]) as events:
                go.set()
                seen.extend([event.progress async for event in events])
    assert seen == ([] if finished_first else [25, 50, 75])
