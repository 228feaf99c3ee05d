"""Checked by mypy (strict) in `make typecheck`, never run.

`assert_type` proves what the API infers; each `type: ignore[...]` proves a
mistake is caught, because strict mypy fails on an ignore that is not needed.
"""

from typing import Any, assert_type

from pydantic import BaseModel

from taskbus import ProcessContext, TaskBus, TaskContext, TaskDefinition, TaskHandle

bus = TaskBus()


class ReportParams(BaseModel):
    year: int


class ReportResult(BaseModel):
    rows: int


@bus.task("reports:build", timeout=30)
async def build(ctx: TaskContext, params: ReportParams) -> ReportResult:
    await ctx.progress(10, "loading rows")
    return ReportResult(rows=params.year)


@bus.task("reports:count")
def count(ctx: TaskContext, limit: int) -> int:
    ctx.progress(current=1, total=limit)
    return limit


@bus.task("reports:ping")
async def ping(ctx: TaskContext) -> str:
    return "pong"


@bus.task("reports:crunch", run_in="process")
def crunch(ctx: ProcessContext, rows: int) -> float:
    ctx.progress(current=1, total=rows)
    ctx.raise_if_cancelled()
    return rows / 2


async def typed_end_to_end() -> None:
    assert_type(crunch, TaskDefinition[int, float])
    assert_type(build, TaskDefinition[ReportParams, ReportResult])
    assert_type(count, TaskDefinition[int, int])
    assert_type(ping, TaskDefinition[None, str])

    handle = await build.submit(ReportParams(year=2025), priority=8)
    assert_type(handle, TaskHandle[ReportResult])
    result = await handle.result(timeout=60)
    assert_type(result, ReportResult)
    assert_type(await (await count.submit(3)).result(), int)
    assert_type(await (await ping.submit()).result(), str)

    await build.submit("not params")  # type: ignore[arg-type]
    await count.submit(ReportParams(year=1))  # type: ignore[arg-type]
    wrong: str = await handle.result()  # type: ignore[assignment]
    del wrong


async def typed_dependencies() -> None:
    report, total = await bus.chain(build.step(ReportParams(year=2025)), count.step(3))
    assert_type(report, TaskHandle[ReportResult])
    assert_type(total, TaskHandle[int])
    assert_type(await total.result(), int)

    joined = await ping.submit(after=[report, total.id], on_parent_failure="run")
    assert_type(joined, TaskHandle[str])
    longer = await bus.chain(*[("reports:count", n) for n in range(5)])
    assert_type(longer, tuple[TaskHandle[Any], ...])

    build.step(3)  # type: ignore[arg-type]
    await ping.submit(after=[report], on_parent_failure="ignore")  # type: ignore[arg-type]
    mixed: TaskHandle[str] = (await bus.chain(count.step(1)))[0]  # type: ignore[assignment]
    del mixed
