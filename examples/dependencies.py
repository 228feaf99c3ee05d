"""Dependencies: tasks that wait for other tasks, on a SQLite store.

A release pipeline as a typed chain (build -> test -> publish: each step waits
for the one before and reads its result in ``ctx.parents``), a fan-in report
that waits for two chains, and what a failed parent does to its children under
each ``on_parent_failure`` policy: "cancel" (the default), "fail" and "run".
Prints each step's result, what a waiting task says while it waits, and how the
children of the failed build ended.

Run: ``.venv/bin/python examples/dependencies.py``
"""

import tempfile
from pathlib import Path

import anyio
from pydantic import BaseModel

from taskbus import FatalError, RetryPolicy, TaskBus, TaskContext


class Build(BaseModel):
    package: str
    version: str


class Artifact(BaseModel):
    name: str


async def main(folder: Path) -> None:
    bus = TaskBus(store=f"sqlite:///{folder / 'pipeline.db'}")
    go = anyio.Event()

    @bus.task("ci:build", retry=RetryPolicy.never())
    async def build(ctx: TaskContext, params: Build) -> Artifact:
        await go.wait()
        if params.package == "broken":
            raise FatalError("compiler error in broken/main.c")
        return Artifact(name=f"{params.package}-{params.version}.whl")

    @bus.task("ci:test")
    async def test(ctx: TaskContext, params: Build) -> str:
        [built] = ctx.parents
        return f"tested {built.result.name}"

    @bus.task("ci:publish")
    async def publish(ctx: TaskContext, params: Build) -> str:
        [tested] = ctx.parents
        return f"published after '{tested.result}'"

    @bus.task("ci:report")
    async def report(ctx: TaskContext) -> str:
        return "; ".join(f"{p.type} {p.state.value}" for p in ctx.parents)

    async with bus:
        app = Build(package="app", version="1.2.0")
        built, tested, published = await bus.chain(
            build.step(app), test.step(app), publish.step(app)
        )
        lib = Build(package="lib", version="0.9.1")
        _, lib_published = await bus.chain(build.step(lib), publish.step(lib))
        summary = await report.submit(after=[published, lib_published], on_parent_failure="run")

        waiting = await bus.get(published.id)
        print(f"publish is {waiting.state.value}, waiting for {waiting.waiting_for}")
        go.set()
        print(f"build: {(await built.result(timeout=10)).name}")
        print(f"test: {await tested.result(timeout=10)}")
        print(f"publish: {await published.result(timeout=10)}")
        print(f"report: {await summary.result(timeout=10)}")

        broken = await build.submit(Build(package="broken", version="0.0.1"))
        for policy in ("cancel", "fail", "run"):
            child = await report.submit(after=[broken], on_parent_failure=policy)
            final = await child.wait(timeout=10)
            why = final.cancel_reason or (final.error.message if final.error else final.result)
            print(f"on_parent_failure={policy}: {final.state.value} ({why})")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        anyio.run(main, Path(directory))
