"""Quickstart (the README's): define a typed task, listen to progress, submit, await.

Shows `@bus.task` with a pydantic input model, `ctx.progress`, a `bus.on`
listener for `TaskProgress`, and the typed `TaskHandle[str]` returned by
`clone.submit`. Progress is debounced (first report at once, then at most one
per 100 ms, last value kept), so it prints ``  0.0% receiving objects 0%``,
``100.0% receiving objects 100%``, then ``cloned https://example.com/repo.git``.

Run: ``.venv/bin/python examples/quickstart.py``
"""

import anyio
from pydantic import BaseModel

from taskbus import TaskBus, TaskContext, TaskProgress


class CloneParams(BaseModel):
    url: str


bus = TaskBus()


@bus.task("repo:clone", timeout=60)
async def clone(ctx: TaskContext, params: CloneParams) -> str:
    for done in range(0, 101, 25):
        await ctx.progress(done, f"receiving objects {done}%")
    return f"cloned {params.url}"


async def main() -> None:
    bus.on(TaskProgress, lambda e: print(f"{e.progress:5.1f}% {e.message}"))
    async with bus:
        handle = await clone.submit(CloneParams(url="https://example.com/repo.git"))
        print(await handle.result(timeout=10))  # typed: str


if __name__ == "__main__":
    anyio.run(main)
