"""Server-sent events: order, filters, resumption, mounting and the managed lifespan."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from taskbus import TaskBus
from taskbus.integrations.http import create_app

from ._tasks import register
from .conftest import client_for, serve, sse
from .test_rest import wait_state

pytestmark = pytest.mark.anyio


async def test_one_task_in_order(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus(progress_interval=0)
    gates = register(bus)
    async with bus, serve(create_app(bus)) as url, client_for(url) as client:
        async with sse(client) as events:
            task = (await client.post("/tasks", json={"type": "steps"})).json()
            gates.release.set()
            messages = await events.take(6)
        assert [m.event for m in messages] == [
            "task-queued",
            "task-started",
            "task-progress",
            "task-progress",
            "task-progress",
            "task-completed",
        ]
        assert all(m.json["task_id"] == task["id"] for m in messages)
        assert all(m.json["name"] == m.event for m in messages)
        assert [m.json["progress"] for m in messages[2:5]] == [25, 50, 75]
        assert messages[-1].json["result"] == "done"
        ids = [int(m.id or 0) for m in messages]
        assert ids == sorted(ids) and len(set(ids)) == 6


async def test_filters(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    register(bus)
    async with bus, serve(create_app(bus)) as url, client_for(url) as client:
        async with sse(client, params={"type": "shop:"}) as shop_events:
            await client.post("/tasks", json={"type": "noop"})
            order = {"type": "shop:order", "input": {"item": "a", "quantity": 1}}
            task = (await client.post("/tasks", json=order)).json()
            messages = await shop_events.take(3)
        assert {m.json["task_id"] for m in messages} == {task["id"]}
        assert messages[-1].event == "task-completed"
        # A one-task stream opened late replays what the history holds of it.
        async with sse(client, params={"task_id": task["id"]}) as late:
            assert [m.event for m in await late.take(3)] == [
                "task-queued",
                "task-started",
                "task-completed",
            ]


async def test_resume_with_last_event_id(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus(progress_interval=0)
    gates = register(bus)
    async with bus, serve(create_app(bus)) as url, client_for(url) as client:
        async with sse(client) as events:
            task = (await client.post("/tasks", json={"type": "steps"})).json()
            first = await events.take(2)
        assert [m.event for m in first] == ["task-queued", "task-started"]
        gates.release.set()
        await wait_state(client, task["url"], "completed")

        for how in ("header", "query"):
            last = first[-1].id or ""
            headers = {"Last-Event-ID": last} if how == "header" else None
            params = {"last_event_id": last} if how == "query" else None
            async with sse(client, headers=headers, params=params) as resumed:
                missed = await resumed.take(4)
                with pytest.raises(TimeoutError):
                    await resumed.next(timeout=0.2)  # nothing twice, nothing more
            assert [m.event for m in missed] == ["task-progress"] * 3 + ["task-completed"]
            ids = [int(m.id or 0) for m in [*first, *missed]]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_resume_older_than_history(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    register(bus)
    async with bus, serve(create_app(bus, event_history=2)) as url, client_for(url) as client:
        task = (await client.post("/tasks", json={"type": "noop"})).json()
        await wait_state(client, task["url"], "completed")
        async with sse(client, headers={"Last-Event-ID": "0"}) as resumed:
            retained = await resumed.take(2)
        assert [(m.id, m.event) for m in retained] == [
            ("2", "task-started"),
            ("3", "task-completed"),
        ]


async def test_mounted_under_a_parent_app(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    register(bus)
    parent = Starlette(routes=[Mount("/jobs", app=create_app(bus))])
    async with bus, serve(parent) as url, client_for(url + "/jobs") as client:
        assert (await client.get("/healthz")).json()["bus_running"] is True
        async with sse(client) as events:
            response = await client.post("/tasks", json={"type": "noop"})
            assert response.status_code == 202
            task = response.json()
            assert response.headers["location"] == task["url"] == f"/tasks/{task['id']}"
            assert [m.event for m in await events.take(3)][-1] == "task-completed"
        snapshot = await wait_state(client, task["url"], "completed")
        assert snapshot["id"] == task["id"]
        listed = (await client.get("/tasks")).json()["items"]
        assert [item["id"] for item in listed] == [task["id"]]


async def test_manage_bus_runs_the_bus_in_the_lifespan(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    register(bus)
    assert not bus.running
    async with serve(create_app(bus, manage_bus=True)) as url, client_for(url) as client:
        assert bus.running
        assert (await client.get("/healthz")).json() == {"status": "ok", "bus_running": True}
        task = (await client.post("/tasks", json={"type": "noop"})).json()
        await wait_state(client, task["url"], "completed")
    assert not bus.running
    assert bus.shutdown_report is not None
