"""`bus.background(...)`: inline when quick, `Queued` with an id when not, exactly once."""

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from taskbus import Queued, TaskBus, TaskContext, TaskFailedError, UnknownTaskType

pytestmark = pytest.mark.anyio
MakeBus = Callable[..., TaskBus]


async def test_fast_work_answers_inline_and_slow_work_answers_queued(make_bus: MakeBus) -> None:
    bus = make_bus()
    release = anyio.Event()
    runs: list[str] = []

    @bus.task("ipc:lookup")
    async def lookup(ctx: TaskContext, name: str) -> str:
        runs.append(name)
        if name == "slow":
            await release.wait()
        return f"found {name}"

    wrapped = bus.background("ipc:lookup", inline_for=0.2)
    async with bus:
        assert await wrapped("fast") == "found fast"
        answer = await wrapped("slow")
        assert isinstance(answer, Queued) and answer.task_type == "ipc:lookup"
        release.set()
        assert await bus.result(answer.task_id, timeout=5) == "found slow"
    assert runs == ["fast", "slow"], "each call ran exactly once"


async def test_inline_for_zero_always_backgrounds(make_bus: MakeBus) -> None:
    bus = make_bus()

    @bus.task("ipc:quick")
    async def quick(ctx: TaskContext) -> int:
        return 7

    async with bus:
        answer = await bus.background(quick, inline_for=0)()
        assert isinstance(answer, Queued)
        assert await bus.result(answer.task_id, timeout=5) == 7


async def test_a_plain_function_becomes_a_task_type(make_bus: MakeBus) -> None:
    bus = make_bus()

    async def render(page: str, *, width: int = 80) -> str:
        """Render a page."""
        return f"{page}:{width}"

    def count(text: str) -> int:
        return len(text)

    async with bus:
        assert await bus.background(render)("home", width=40) == "home:40"
        assert await bus.background(count)("four") == 4
        names = bus.registry.types()
    assert any(name.startswith("background:") and "render" in name for name in names)
    assert any("count" in name for name in names)


async def test_failures_within_the_window_raise_like_result(make_bus: MakeBus) -> None:
    bus = make_bus()

    @bus.task("ipc:broken", retry={"max_attempts": 1})
    async def broken(ctx: TaskContext) -> None:
        raise ValueError("no such thing")

    async with bus:
        with pytest.raises(TaskFailedError, match="no such thing"):
            await bus.background(broken)()


def test_bad_targets_are_refused_at_wrap_time() -> None:
    bus = TaskBus()
    with pytest.raises(UnknownTaskType):
        bus.background("nope:nothing")
    with pytest.raises(ValueError, match="inline_for"):
        bus.background(lambda: None, inline_for=-1)
    with pytest.raises(TypeError):
        bus.background(42)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_closures_and_lambdas_of_one_name_each_run_their_own_function() -> None:
    from taskbus import TaskBus

    def make(n: int) -> Any:
        def work() -> int:
            return n

        return work

    bus = TaskBus(workers=2, shutdown_grace=1.0)
    one, two = bus.background(make(1)), bus.background(make(2))
    square, cube = bus.background(lambda x: x * x), bus.background(lambda x: x**3)
    again = bus.background(make(3))
    async with bus:
        assert await one() == 1
        assert await two() == 2
        assert await again() == 3
        assert await square(3) == 9
        assert await cube(3) == 27
    assert len({name for name in bus.registry.types() if name.startswith("background:")}) == 5
