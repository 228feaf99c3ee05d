import anyio
import pytest

from taskbus import TaskBus, TaskCompleted, TaskContext
from taskbus.testing import EventRecorder, FakeClock

pytestmark = pytest.mark.anyio


async def test_fake_clock_wakes_sleepers_in_deadline_order() -> None:
    clock = FakeClock(start=100.0)
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(sleeper, "late", 10)
            tg.start_soon(sleeper, "early", 5)
            while clock.sleepers < 2:
                await anyio.lowlevel.checkpoint()
            clock.advance(5)
            clock.advance(0)
            await anyio.lowlevel.checkpoint()
            clock.advance(5)
    assert woke == ["early", "late"]
    assert clock.now() == 110.0
    with pytest.raises(ValueError):
        clock.advance(-1)


async def test_recorder_waits_and_filters() -> None:
    bus = TaskBus(workers=1)

    @bus.task("rec:echo")
    async def echo(ctx: TaskContext, value: int) -> int:
        return value

    async with bus:
        recorder = EventRecorder(bus, timeout=2)
        first = await echo.submit(1)
        second = await echo.submit(2)
        last = await recorder.wait_for(TaskCompleted, count=2)
        assert last.task_id == second.id
        assert [e.result for e in recorder.of(TaskCompleted)] == [1, 2]
        assert recorder.names(first.id) == ["task-queued", "task-started", "task-completed"]
        with pytest.raises(TimeoutError):
            await recorder.wait_for(TaskCompleted, count=3, timeout=0.05)
        recorder.close()
        await (await echo.submit(3)).result(timeout=2)
    assert len(recorder.of(TaskCompleted)) == 2, "a closed recorder records nothing"
