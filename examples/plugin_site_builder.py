"""Plugins: a site-builder plugin registers its own namespaced task type.

The host gives the plugin a registry scope; the plugin registers `site-build`
(typed input and output) as ``site-builder:site-build``. The host lists running
tasks grouped by plugin, then unloads the plugin: its queued task fails with a
clear error, its running one finishes. Prints the grouping and each outcome.

Run: ``.venv/bin/python examples/plugin_site_builder.py``
"""

from collections import defaultdict

import anyio
from pydantic import BaseModel

from taskbus import RegistryScope, TaskBus, TaskContext, TaskFailedError, TaskStarted, TaskState


class SiteParams(BaseModel):
    name: str
    pages: int


class SiteBuilt(BaseModel):
    name: str
    files: int


def load_site_builder(scope: RegistryScope) -> None:
    """The plugin's entry point: it only ever sees its own scope."""

    @scope.task("site-build", timeout=60, description="Render a static site")
    async def site_build(ctx: TaskContext, params: SiteParams) -> SiteBuilt:
        for page in range(1, params.pages + 1):
            await ctx.progress(current=page, total=params.pages, message=f"page {page}")
            await anyio.sleep(0.02)
        return SiteBuilt(name=params.name, files=params.pages * 2)


async def main() -> None:
    bus = TaskBus(workers=2)
    site_builder = bus.registry.scope("site-builder")
    load_site_builder(site_builder)

    @bus.task("host:index")
    async def index(ctx: TaskContext) -> str:
        await anyio.sleep(0.3)
        return "indexed"

    both_running = anyio.Event()
    started: list[str] = []

    def on_started(event: TaskStarted) -> None:
        started.append(event.task_id)
        if len(started) == 2:
            both_running.set()

    bus.on(TaskStarted, on_started)
    async with bus:
        docs = await bus.submit("site-builder:site-build", {"name": "docs", "pages": 10})
        await bus.submit("host:index")
        blog = await bus.submit("site-builder:site-build", {"name": "blog", "pages": 5})
        await both_running.wait()  # two workers busy; the blog build waits in the queue

        by_plugin: defaultdict[str, list[str]] = defaultdict(list)
        for snap in await bus.list(state=TaskState.RUNNING):
            by_plugin[snap.type.split(":")[0]].append(snap.type)
        for plugin, types in sorted(by_plugin.items()):
            print(f"running in {plugin}: {types}")

        await site_builder.close()  # unload: queued tasks fail, running ones finish
        print("registered after unload:", bus.registry.types())
        built = await bus.result(docs.id, timeout=5)
        print(f"docs: {built.name} -> {built.files} files")
        try:
            await blog.result(timeout=5)
        except TaskFailedError as exc:
            print("blog:", exc.snapshot.error.message if exc.snapshot.error else exc)


if __name__ == "__main__":
    anyio.run(main)
