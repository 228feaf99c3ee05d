"""Owners: bearer tokens, a custom hook, and isolation between two owners."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from starlette.requests import Request

from taskbus import Identity, TaskBus
from taskbus.integrations.http import create_app

from ._asgi import call
from ._tasks import register
from .conftest import asgi_client, client_for, serve, sse
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


async def test_access_token_in_the_query_counts_only_on_the_event_stream(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()
    gates = register(bus)
    app = create_app(bus, tokens=TOKENS)
    async with bus, asgi_client(app, "bob-token") as bob, asgi_client(app) as anonymous:
        task = (await bob.post("/tasks", json={"type": "gated"})).json()
        query = {"access_token": "bob-token"}
        for method, path in [
            ("GET", "/tasks"),
            ("POST", "/tasks"),
            ("GET", task["url"]),
            ("DELETE", task["url"]),
            ("GET", "/stats"),
            ("GET", "/types"),
        ]:
            body = {"type": "noop"} if method == "POST" else None
            response = await anonymous.request(method, path, params=query, json=body)
            assert_error(response, 401, "unauthorized")
        assert (await bob.get(task["url"])).json()["state"] != "cancelled"
        # The event stream (which a browser's EventSource opens) and the page take it.
        answer = await call(app, "GET", "/events", query=b"access_token=bob-token")
        assert answer.status == 200, answer.describe()
        answer = await call(app, "GET", "/", query=b"access_token=bob-token")
        assert answer.status == 200, answer.describe()
        gates.release.set()


async def test_another_owners_id_answers_404_as_fast_as_an_unknown_one(
    make_bus: Callable[..., TaskBus], tmp_path: Path
) -> None:
    """Interleaved probes of Bob for Alice's tasks and for unknown ids, on SQLite:
    Alice's running task is held in memory, her finished one is read from the file,
    an unknown id misses the file. The medians must not tell them apart."""
    bus = make_bus(store=f"sqlite:///{tmp_path / 'jobs.db'}", shutdown_grace=0)
    gates = register(bus)
    app = create_app(bus, tokens=TOKENS)
    async with bus, asgi_client(app, "alice-token") as alice, asgi_client(app, "bob-token") as bob:
        running = (await alice.post("/tasks", json={"type": "gated"})).json()["id"]
        finished = (await alice.post("/tasks", json={"type": "noop"})).json()["id"]
        await bus.wait(finished, timeout=5)
        times: dict[str, list[float]] = {"running": [], "finished": [], "unknown": []}
        for round_ in range(200):
            probes = [("running", running), ("finished", finished), ("unknown", None)]
            for kind, task_id in probes[round_ % 3 :] + probes[: round_ % 3]:
                url = f"/tasks/{task_id or os.urandom(16).hex()}"
                start = time.perf_counter()
                response = await bob.get(url)
                times[kind].append(time.perf_counter() - start)
                assert response.status_code == 404
        gates.release.set()
    unknown = statistics.median(times["unknown"])
    quartiles = statistics.quantiles(times["unknown"], n=4)
    bound = max(0.25 * (quartiles[2] - quartiles[0]), 40e-6)
    for kind in ("running", "finished"):
        difference = statistics.median(times[kind]) - unknown
        assert abs(difference) <= bound, (kind, difference, bound)


ADMIN_TOKENS: dict[str, str | Identity] = {**TOKENS, "ops-token": Identity(owner="ops", admin=True)}


async def test_queued_by_priority_counts_only_the_callers_own_unless_administrator(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()
    register(bus)
    app = create_app(bus, tokens=ADMIN_TOKENS)
    async with bus:
        for token, priorities in (("alice-token", (2, 2, 7)), ("bob-token", (7, 9))):
            async with asgi_client(app, token) as client:
                for priority in priorities:
                    later = {"type": "noop", "priority": priority, "delay": 3600}
                    assert (await client.post("/tasks", json=later)).status_code == 202
        seen = {}
        for token in ("alice-token", "bob-token", "ops-token"):
            async with asgi_client(app, token) as client:
                seen[token] = (await client.get("/stats")).json()["queued_by_priority"]
    assert seen == {
        "alice-token": {"noop": {"2": 2, "7": 1}},
        "bob-token": {"noop": {"7": 1, "9": 1}},
        "ops-token": {"noop": {"2": 2, "7": 2, "9": 1}},
    }


async def test_an_administrator_sees_lists_cancels_and_streams_every_owners_tasks(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()
    gates = register(bus)
    async with (
        bus,
        serve(create_app(bus, tokens=ADMIN_TOKENS)) as url,
        client_for(url, "alice-token") as alice,
        client_for(url, "bob-token") as bob,
        client_for(url, "ops-token") as ops,
        sse(ops) as ops_events,
    ):
        alices = (await alice.post("/tasks", json={"type": "gated"})).json()
        bobs = (await bob.post("/tasks", json={"type": "noop"})).json()
        await wait_state(alice, alices["url"], "running")
        await wait_state(bob, bobs["url"], "completed")

        assert (await ops.get("/me")).json() == {"owner": "ops", "admin": True}
        assert (await alice.get("/me")).json() == {"owner": "alice", "admin": False}
        listed = (await ops.get("/tasks")).json()["items"]
        assert {item["id"]: item["owner"] for item in listed} == {
            alices["id"]: "alice",
            bobs["id"]: "bob",
        }
        only_bob = (await ops.get("/tasks", params={"owner": "bob"})).json()["items"]
        assert [item["id"] for item in only_bob] == [bobs["id"]]
        assert (await ops.get(alices["url"])).json()["owner"] == "alice"
        assert (await ops.get("/stats")).json()["by_state"] == {"running": 1, "completed": 1}
        assert_error(await alice.get(bobs["url"]), 404, "not_found")  # others stay isolated

        cancelled = (await ops.delete(alices["url"], params={"reason": "ops"})).json()
        assert cancelled["cancelled"] is True
        await wait_state(alice, alices["url"], "cancelled")
        gates.release.set()
        seen = {(m.event, m.json["task_id"]) for m in await ops_events.take(5)}
        assert ("task-queued", alices["id"]) in seen and ("task-completed", bobs["id"]) in seen

        mine = (await ops.post("/tasks", json={"type": "noop"})).json()
        assert (await ops.get(mine["url"])).json()["owner"] == "ops", "submits as itself"


async def test_a_hook_may_answer_an_identity_and_single_user_me_is_an_administrator(
    make_bus: Callable[..., TaskBus],
) -> None:
    async def hook(request: Request) -> Identity | None:
        await anyio.lowlevel.checkpoint()
        user = request.headers.get("x-user")
        return None if user is None else Identity(owner=user, admin=user == "root")

    bus = make_bus()
    register(bus)
    async with bus, serve(create_app(bus, auth=hook)) as url, client_for(url) as client:
        task = (await client.post("/tasks", json={"type": "noop"}, headers={"x-user": "c"})).json()
        root = await client.get(task["url"], headers={"x-user": "root"})
        assert root.json()["owner"] == "c"
        assert_error(await client.get(task["url"], headers={"x-user": "d"}), 404, "not_found")
    async with bus, serve(create_app(bus)) as url, client_for(url) as client:
        assert (await client.get("/me")).json() == {"owner": None, "admin": True}


def test_a_token_table_takes_owners_and_identities_only() -> None:
    from taskbus.integrations._http_auth import bearer_tokens

    with pytest.raises(TypeError, match="str or an Identity"):
        bearer_tokens({"t": 42})  # type: ignore[dict-item]
