"""Owners: bearer tokens, a custom hook, and isolation between two owners."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest
from starlette.requests import Request

from taskbus import TaskBus
from taskbus.integrations.http import create_app

from ._tasks import register
from .conftest import client_for, serve, sse
from .test_rest import assert_error, wait_state

pytestmark = pytest.mark.anyio

TOKENS = {"alice-token": "alice", "bob-token": "bob"}


async def test_missing_or_wrong_token_is_401(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    register(bus)
    async with bus, serve(create_app(bus, tokens=TOKENS)) as url:
        for token in (None, "wrong"):
            async with client_for(url, token) as client:
                for path in ("/tasks", "/tasks/" + "0" * 32, "/stats", "/types", "/events"):
                    response = await client.get(path)
                    assert_error(response, 401, "unauthorized")
                    assert response.headers["www-authenticate"] == "Bearer"
                assert_error(
                    await client.post("/tasks", json={"type": "noop"}), 401, "unauthorized"
                )
                assert (await client.get("/healthz")).status_code == 200
        async with client_for(url) as client:
            response = await client.get("/types", params={"access_token": "bob-token"})
            assert response.status_code == 200


async def test_owners_see_only_their_own_tasks(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    gates = register(bus)
    async with (
        bus,
        serve(create_app(bus, tokens=TOKENS)) as url,
        client_for(url, "alice-token") as alice,
        client_for(url, "bob-token") as bob,
        sse(bob) as bob_events,
    ):
        mine = (await alice.post("/tasks", json={"type": "gated"})).json()
        theirs = (await bob.post("/tasks", json={"type": "noop"})).json()
        snapshot = await wait_state(alice, mine["url"], "running")
        assert snapshot["owner"] == "alice"

        unknown = await bob.get("/tasks/" + "f" * 32)
        other = await bob.get(mine["url"])
        assert other.status_code == unknown.status_code == 404
        assert other.json() == {
            "error": {
                "code": "not_found",
                "message": f"no task with id {mine['id']!r}",
                "details": None,
            }
        }
        assert_error(await bob.delete(mine["url"]), 404, "not_found")
        assert_error(await bob.get("/events", params={"task_id": mine["id"]}), 404, "not_found")
        assert (await alice.get(mine["url"])).json()["state"] == "running"

        bob_list = (await bob.get("/tasks")).json()["items"]
        assert [item["id"] for item in bob_list] == [theirs["id"]]
        assert (await bob.get("/tasks", params={"owner": "alice"})).json() == {
            "items": [],
            "next_cursor": None,
        }
        alice_list = (await alice.get("/tasks", params={"owner": "alice"})).json()["items"]
        assert [item["id"] for item in alice_list] == [mine["id"]]
        assert (await alice.get("/stats")).json()["by_state"] == {"running": 1}

        gates.release.set()
        await wait_state(alice, mine["url"], "completed")
        # Bob's stream carries his task's events and none of Alice's.
        names = [(m.event, m.json["task_id"]) for m in await bob_events.take(3)]
        assert names == [
            ("task-queued", theirs["id"]),
            ("task-started", theirs["id"]),
            ("task-completed", theirs["id"]),
        ]
        with pytest.raises(TimeoutError):
            await bob_events.next(timeout=0.3)


async def test_custom_async_hook(make_bus: Callable[..., TaskBus]) -> None:
    async def hook(request: Request) -> str | None:
        await anyio.lowlevel.checkpoint()
        return request.headers.get("x-user")

    bus = make_bus()
    register(bus)
    async with bus, serve(create_app(bus, auth=hook)) as url, client_for(url) as client:
        assert_error(await client.get("/tasks"), 401, "unauthorized")
        response = await client.post("/tasks", json={"type": "noop"}, headers={"x-user": "carol"})
        task = response.json()
        snapshot = (await client.get(task["url"], headers={"x-user": "carol"})).json()
        assert snapshot["owner"] == "carol"
        assert_error(await client.get(task["url"], headers={"x-user": "dave"}), 404, "not_found")


def test_auth_and_tokens_are_exclusive(make_bus: Callable[..., TaskBus]) -> None:
    with pytest.raises(ValueError, match="not both"):
        create_app(make_bus(), auth=lambda request: "x", tokens=TOKENS)
