from typing import Any

import pytest
from pydantic import BaseModel

from taskbus import (
    DuplicateTaskType,
    InvalidTaskDefinition,
    TaskContext,
    TaskRegistry,
    UnknownTaskType,
)


class Params(BaseModel):
    year: int


class Report(BaseModel):
    rows: int


def test_input_and_output_models_are_inferred() -> None:
    registry = TaskRegistry()

    @registry.task("reports:build", timeout=30, concurrency=2, priority=7, description="d")
    async def build(ctx: TaskContext, params: Params) -> Report:
        return Report(rows=params.year)

    assert build.name == "reports:build"
    assert build.takes_context and build.takes_input and build.is_async
    assert build.run_in == "loop"
    assert build.validate_input({"year": "2025"}) == Params(year=2025)
    assert build.output_adapter.validate_python({"rows": 1}) == Report(rows=1)
    assert build.input_schema()["properties"]["year"]["type"] == "integer"
    assert (build.timeout, build.concurrency, build.priority) == (30, 2, 7)
    assert registry.types() == ["reports:build"]
    assert registry.get("reports:build") is build


@pytest.mark.parametrize(
    ("handler_source", "ctx", "has_input", "run_in"),
    [
        ("async def h(ctx: TaskContext) -> None: ...", True, False, "loop"),
        ("async def h(context, x: int) -> None: ...", True, True, "loop"),
        ("def h(x: int) -> int: ...", False, True, "thread"),
        ("def h() -> int: ...", False, False, "thread"),
    ],
    ids=["ctx-only", "ctx-by-name", "input-only", "nothing"],
)
def test_handler_shapes(handler_source: str, ctx: bool, has_input: bool, run_in: str) -> None:
    namespace: dict[str, Any] = {"TaskContext": TaskContext}
    exec(handler_source, namespace)  # noqa: S102 - building handler shapes for the test
    definition = TaskRegistry().register("t", namespace["h"])
    assert (definition.takes_context, definition.takes_input, definition.run_in) == (
        ctx,
        has_input,
        run_in,
    )


def test_bad_definitions_raise_at_registration() -> None:
    registry = TaskRegistry()

    async def too_many(ctx: TaskContext, a: int, b: int) -> None: ...
    async def kw_only(ctx: TaskContext, *, a: int) -> None: ...
    def sync(ctx: TaskContext) -> None: ...
    async def asynchronous(ctx: TaskContext) -> None: ...
    def proc_with_ctx(ctx: TaskContext, a: int) -> None: ...

    with pytest.raises(InvalidTaskDefinition, match="takes"):
        registry.register("a", too_many)
    with pytest.raises(InvalidTaskDefinition, match="positional"):
        registry.register("b", kw_only)
    with pytest.raises(InvalidTaskDefinition, match="async def"):
        registry.register("c", sync, run_in="loop")
    with pytest.raises(InvalidTaskDefinition, match="plain def"):
        registry.register("d", asynchronous, run_in="thread")
    with pytest.raises(InvalidTaskDefinition, match="gets a ProcessContext, not a TaskContext"):
        registry.register("e", proc_with_ctx, run_in="process")
    with pytest.raises(InvalidTaskDefinition, match="timeout"):
        registry.register("f", asynchronous, timeout=-1)
    with pytest.raises(InvalidTaskDefinition, match="priority"):
        registry.register("g", asynchronous, priority=11)
    with pytest.raises(InvalidTaskDefinition, match="invalid task type name"):
        registry.register("bad name!", asynchronous)
    with pytest.raises(InvalidTaskDefinition, match="unknown_option"):
        registry.register("h", asynchronous, unknown_option=1)
    assert registry.types() == []


def test_duplicates_and_unknown_types() -> None:
    registry = TaskRegistry()

    async def handler(ctx: TaskContext) -> None: ...

    registry.register("x:y", handler)
    with pytest.raises(DuplicateTaskType, match="x:y"):
        registry.register("x:y", handler)
    with pytest.raises(UnknownTaskType, match="x:z") as info:
        registry.get("x:z")
    assert "x:y" in str(info.value)
    registry.unregister("x:y")
    assert "x:y" not in registry
    with pytest.raises(UnknownTaskType):
        registry.unregister("x:y")


def test_watchers_hear_register_and_unregister() -> None:
    registry = TaskRegistry()
    heard: list[tuple[str, bool]] = []
    registry.watch(lambda name, definition: heard.append((name, definition is not None)))

    async def handler(ctx: TaskContext) -> None: ...

    registry.register("w", handler)
    registry.unregister("w")
    assert heard == [("w", True), ("w", False)]


async def test_submit_without_a_bus_says_so() -> None:
    registry = TaskRegistry()

    @registry.task("lonely")
    async def lonely(ctx: TaskContext) -> None: ...

    with pytest.raises(InvalidTaskDefinition, match="not registered on a TaskBus"):
        await lonely.submit()


test_submit_without_a_bus_says_so = pytest.mark.anyio(test_submit_without_a_bus_says_so)
