"""REST round trips and error shapes against a real uvicorn server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from taskbus import TaskBus
from taskbus.integrations.http import create_app

from ._tasks import register
from .conftest import client_for, serve

pytestmark = pytest.mark.anyio


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    return dict(body["error"])


async def wait_state(client: httpx.AsyncClient, url: str, state: str) -> dict[str, Any]:
    with anyio.fail_after(5):
        while True:
            snapshot = (await client.get(url)).json()
            if snapshot["state"] == state:
                return dict(snapshot)
            await anyio.sleep(0.01)


async def test_submit_get_and_result(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    register(bus)
    async with bus, serve(create_app(bus)) as url, client_for(url) as client:
        response = await client.post(
            "/tasks",
            json={"type": "shop:order", "input": {"item": "tea", "quantity": 3}, "priority": 7},
        )
        assert response.status_code == 202
        body = response.json()
        assert set(body) == {"id", "type", "state", "url"}
        assert len(body["id"]) == 32 and int(body["id"], 16) >= 0
        assert body["type"] == "shop:order" and body["state"] == "queued"
        assert body["url"] == f"/tasks/{body['id']}"
        assert response.headers["location"] == body["url"]

        snapshot = await wait_state(client, body["url"], "completed")
        assert snapshot["id"] == body["id"]
        assert snapshot["priority"] == 7
        assert snapshot["input"] == {"item": "tea", "quantity": 3}
        assert snapshot["result"] == {"item": "tea", "total": 6}
        assert snapshot["owner"] is None


async def test_cancel(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    gates = register(bus)
    async with bus, serve(create_app(bus)) as url, client_for(url) as client:
        task = (await client.post("/tasks", json={"type": "gated"})).json()
        await wait_state(client, task["url"], "running")
        response = await client.delete(task["url"], params={"reason": "user pressed stop"})
        assert response.status_code == 200
        assert response.json() == {"id": task["id"], "cancelled": True, "state": "cancelled"}
        snapshot = (await client.get(task["url"])).json()
        assert snapshot["cancel_reason"] == "user pressed stop"
        again = await client.delete(task["url"])
        assert again.json() == {"id": task["id"], "cancelled": False, "state": "cancelled"}
        gates.release.set()


async def test_list_pages_with_cursor(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    gates = register(bus)
    async with bus, serve(create_app(bus)) as url, client_for(url) as client:
        ids = [(await client.post("/tasks", json={"type": "noop"})).json()["id"] for _ in range(7)]
        await client.post("/tasks", json={"type": "gated"})
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params = {"type": "noop", "limit": "3", **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/tasks", params=params)).json()
            assert set(page) == {"items", "next_cursor"}
            seen += [item["id"] for item in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids and pages == 3
        running = (await client.get("/tasks", params={"type": "gat"})).json()["items"]
        assert len(running) == 1
        gates.release.set()
        await wait_state(client, f"/tasks/{running[0]['id']}", "completed")
        done = (await client.get("/tasks", params={"state": "completed"})).json()
        assert len(done["items"]) == 8 and done["next_cursor"] is None
        assert (await client.get("/tasks", params={"state": "queued"})).json()["items"] == []


async def test_list_newest_first_with_order(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    register(bus)
    async with bus, serve(create_app(bus)) as url, client_for(url) as client:
        ids = [(await client.post("/tasks", json={"type": "noop"})).json()["id"] for _ in range(5)]
        params = {"type": "noop", "limit": "2", "order": "newest"}
        first = (await client.get("/tasks", params=params)).json()
        assert [item["id"] for item in first["items"]] == ids[:-3:-1]
        rest = (
            await client.get("/tasks", params={**params, "cursor": first["next_cursor"]})
        ).json()
        assert [item["id"] for item in rest["items"]] == ids[-3:-5:-1]
        oldest = (await client.get("/tasks", params={"type": "noop", "order": "oldest"})).json()
        assert [item["id"] for item in oldest["items"]] == ids
        assert_error(await client.get("/tasks", params={"order": "random"}), 400, "bad_request")


async def test_types_stats_and_health(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    register(bus)
    app = create_app(bus)
    async with serve(app) as url, client_for(url) as client:
        assert (await client.get("/healthz")).status_code == 503
        async with bus:
            assert (await client.get("/healthz")).json() == {"status": "ok", "bus_running": True}
            types = {entry["name"]: entry for entry in (await client.get("/types")).json()}
            order = types["shop:order"]
            assert set(order) == {
                "name",
                "description",
                "input_schema",
                "timeout",
                "priority",
                "concurrency",
            }
            assert order["description"] == "Place an order."
            assert order["timeout"] == 30 and order["concurrency"] == 4 and order["priority"] == 5
            assert set(order["input_schema"]["properties"]) == {"item", "quantity"}
            task = (await client.post("/tasks", json={"type": "noop"})).json()
            await wait_state(client, task["url"], "completed")
            later = {"type": "noop", "priority": 9, "delay": 3600}
            assert (await client.post("/tasks", json=later)).status_code == 202
            stats = (await client.get("/stats")).json()
            assert set(stats) == {"by_state", "by_type", "queued_by_priority", "store_outage"}
            assert stats["store_outage"] is None
            assert stats["by_state"] == {"completed": 1, "queued": 1}
            assert stats["by_type"]["noop"] == {"completed": 1, "queued": 1}
            assert stats["queued_by_priority"] == {"noop": {"9": 1}}


async def test_error_shapes(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    register(bus)
    async with bus, serve(create_app(bus, max_body=1000)) as url, client_for(url) as client:
        error = assert_error(
            await client.post(
                "/tasks", json={"type": "shop:order", "input": {"item": "tea", "quantity": "x"}}
            ),
            422,
            "invalid_input",
        )
        assert [detail["loc"] for detail in error["details"]] == [["quantity"]]
        assert_error(await client.post("/tasks", json={"type": "nope"}), 404, "unknown_task_type")
        assert_error(await client.get("/tasks/" + "0" * 32), 404, "not_found")
        assert_error(await client.delete("/tasks/" + "0" * 32), 404, "not_found")
        assert_error(await client.get("/no/such/route"), 404, "not_found")
        assert_error(await client.put("/tasks"), 405, "method_not_allowed")
        bad = "/tasks"
        assert_error(await client.post(bad, content=b"{not json"), 400, "bad_request")
        # A body that is JSON but not a submission: 422 with pydantic's details.
        for body in (
            ["a list"],
            {"input": 1},
            {"type": "noop", "priority": 11},
            {"type": "noop", "priority": "5"},
            {"type": "noop", "delay": -1},
            {"type": "noop", "metadata": 3},
            {"type": "noop", "extra": 1},
        ):
            error = assert_error(await client.post(bad, json=body), 422, "invalid_submission")
            assert isinstance(error["details"], list) and error["details"], body
        big = {"type": "noop", "input": "x" * 2000}
        assert_error(await client.post(bad, json=big), 413, "payload_too_large")

        async def chunks() -> Any:  # no Content-Length: the streamed size is checked
            for _ in range(20):
                yield b" " * 100

        assert_error(await client.post(bad, content=chunks()), 413, "payload_too_large")
        for params in ({"limit": "0"}, {"limit": "501"}, {"cursor": "!!"}, {"state": "odd"}):
            assert_error(await client.get("/tasks", params=params), 400, "bad_request")


async def test_submit_when_bus_is_stopped(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    register(bus)
    async with serve(create_app(bus)) as url, client_for(url) as client:
        assert_error(await client.post("/tasks", json={"type": "noop"}), 503, "bus_not_running")


async def test_dashboard_route(make_bus: Callable[..., TaskBus]) -> None:
    from taskbus.integrations import http

    bus = make_bus()
    async with serve(create_app(bus)) as url, client_for(url) as client:
        response = await client.get("/")
        if http.DASHBOARD.is_file():
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/html")
        else:
            assert_error(response, 404, "not_found")
    async with serve(create_app(bus, dashboard=False)) as url, client_for(url) as client:
        assert_error(await client.get("/"), 404, "not_found")
