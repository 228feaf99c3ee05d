"""Plugin scopes: namespaced registration, and removal that settles its tasks."""

from collections.abc import Callable

import anyio
import pytest
from pydantic import BaseModel

from taskbus import (
    InvalidTaskDefinition,
    TaskBus,
    TaskCancelledError,
    TaskContext,
    TaskFailedError,
    TaskStarted,
    TaskState,
    UnknownTaskType,
)
from taskbus.testing import EventRecorder

pytestmark = pytest.mark.anyio
MakeBus = Callable[..., TaskBus]


class Site(BaseModel):
    pages: int


class Built(BaseModel):
    files: int


def test_a_scope_registers_under_its_namespace_only() -> None:
    bus = TaskBus()
    scope = bus.registry.scope("site-builder")

    @scope.task("site-build", timeout=30, description="Build a static site")
    async def build(ctx: TaskContext, site: Site) -> Built:
        return Built(files=site.pages)

    assert build.name == "site-builder:site-build"
    assert scope.types() == ["site-builder:site-build"]
    assert bus.registry.types() == ["site-builder:site-build"]
    assert scope.get("site-build") is build
    for bad in ("other:thing", "", "a:b:c"):
        with pytest.raises(InvalidTaskDefinition, match="plain names"):
            scope.full_name(bad)
    with pytest.raises(InvalidTaskDefinition, match="namespace"):
        bus.registry.scope("bad namespace")


async def test_a_scope_cannot_remove_other_namespaces(make_bus: MakeBus) -> None:
    bus = make_bus()
    mine = bus.registry.scope("mine")
    theirs = bus.registry.scope("theirs")

    @theirs.task("job")
    async def job(ctx: TaskContext) -> None: ...

    with pytest.raises(UnknownTaskType):
        await mine.unregister("job")
    with pytest.raises(InvalidTaskDefinition):
        await mine.unregister("theirs:job")
    assert bus.registry.types() == ["theirs:job"]


async def test_close_fails_queued_tasks_and_lets_running_ones_finish(make_bus: MakeBus) -> None:
    bus = make_bus(workers=1)
    scope = bus.registry.scope("plugin")
    release = anyio.Event()

    @scope.task("work")
    async def work(ctx: TaskContext) -> str:
        await release.wait()
        return "finished"

    async with bus:
        recorder = EventRecorder(bus)
        running = await work.submit()
        await recorder.wait_for(TaskStarted, task_id=running.id)
        queued = await work.submit()
        await scope.close()
        assert scope.types() == [] and bus.registry.types() == []
        with pytest.raises(TaskFailedError, match="plugin 'plugin' unregistered it"):
            await queued.result(timeout=5)
        release.set()
        assert await running.result(timeout=5) == "finished"
        with pytest.raises(UnknownTaskType):
            await bus.submit("plugin:work")
        await scope.close()  # idempotent
        with pytest.raises(InvalidTaskDefinition, match="closed"):
            scope.task("again")


async def test_close_can_cancel_running_tasks(make_bus: MakeBus) -> None:
    bus = make_bus()
    scope = bus.registry.scope("plugin")

    @scope.task("forever")
    async def forever(ctx: TaskContext) -> None:
        await anyio.sleep_forever()

    @bus.task("host:keep")
    async def keep(ctx: TaskContext) -> str:
        return "host task unaffected"

    async with bus:
        recorder = EventRecorder(bus)
        handle = await forever.submit()
        await recorder.wait_for(TaskStarted, task_id=handle.id)
        await scope.close(cancel_running=True)
        assert (await handle.get()).state is TaskState.CANCELLED
        with pytest.raises(TaskCancelledError, match="plugin"):
            await handle.result(timeout=1)
        assert await (await keep.submit()).result(timeout=5) == "host task unaffected"


async def test_unregister_one_type(make_bus: MakeBus) -> None:
    bus = make_bus()
    scope = bus.registry.scope("p")

    @scope.task("a")
    async def a(ctx: TaskContext) -> int:
        return 1

    scope.register("b", lambda: 2)
    async with bus:
        await scope.unregister("b")
        assert scope.types() == ["p:a"]
        assert await (await a.submit()).result(timeout=5) == 1
