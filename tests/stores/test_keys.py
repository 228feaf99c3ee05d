"""Idempotency keys through a bus, on every store: a key is unique within
(owner, task type, key), never across owners or types."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from taskbus import TaskBus, TaskContext, TaskHandle
from taskbus.stores import Store

from .conftest import STORES

pytestmark = pytest.mark.anyio
MakeBus = Callable[..., TaskBus]


class Params(BaseModel):
    n: int


class Built(BaseModel):
    n: int


@pytest.fixture(params=list(STORES), ids=list(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return STORES[request.param](tmp_path)


def build_bus(make_bus: MakeBus, store: Store, gate: anyio.Event) -> TaskBus:
    bus = make_bus(store=store)

    @bus.task("reports:build")
    async def build(ctx: TaskContext, params: Params) -> Built:
        await gate.wait()
        return Built(n=params.n)

    @bus.task("mail:send")
    async def send(ctx: TaskContext, n: int) -> int:
        await gate.wait()
        return n

    return bus


async def test_the_same_key_from_two_owners_makes_two_tasks(
    make_bus: MakeBus, store: Store
) -> None:
    gate = anyio.Event()
    bus = build_bus(make_bus, store, gate)
    async with bus:
        alice = await bus.submit("reports:build", {"n": 1}, owner="alice", key="k")
        bob = await bus.submit("reports:build", {"n": 2}, owner="bob", key="k")
        nobody = await bus.submit("reports:build", {"n": 3}, key="k")
        assert len({alice.id, bob.id, nobody.id}) == 3
        assert (await bus.get(bob.id)).owner == "bob"
        # Each owner's own key still answers with their own task.
        again = await bus.submit("reports:build", {"n": 4}, owner="alice", key="k")
        assert again.id == alice.id
        gate.set()
        assert await bob.result(timeout=5) == Built(n=2)
        assert await alice.result(timeout=5) == Built(n=1)


async def test_the_same_key_for_two_task_types_makes_two_tasks(
    make_bus: MakeBus, store: Store
) -> None:
    gate = anyio.Event()
    bus = build_bus(make_bus, store, gate)
    build = bus.registry.get("reports:build")
    async with bus:
        mail = await bus.submit("mail:send", 7, owner="alice", key="k")
        report = await build.submit(Params(n=1), owner="alice", key="k")
        assert report.id != mail.id
        assert (await bus.get(report.id)).type == "reports:build"
        gate.set()
        typed: Any = await report.result(timeout=5)
        assert typed == Built(n=1), "a typed submit never returns another type's task"
        assert await mail.result(timeout=5) == 7


async def test_concurrent_submits_store_one_task_per_scope(make_bus: MakeBus, store: Store) -> None:
    gate = anyio.Event()
    bus = build_bus(make_bus, store, gate)
    scopes = [("alice", "reports:build"), ("bob", "reports:build"), ("alice", "mail:send")]
    handles: dict[tuple[str, str], list[TaskHandle[Any]]] = {scope: [] for scope in scopes}

    async def submit(owner: str, task_type: str) -> None:
        payload = {"n": 1} if task_type == "reports:build" else 1
        handle = await bus.submit(task_type, payload, owner=owner, key="same")
        handles[(owner, task_type)].append(handle)

    async with bus:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    for owner, task_type in scopes:
                        tg.start_soon(submit, owner, task_type)
        ids = {scope: {handle.id for handle in found} for scope, found in handles.items()}
        assert all(len(found) == 1 for found in ids.values()), ids
        assert len(set.union(*ids.values())) == 3
        assert len(await bus.list()) == 3
        gate.set()
