"""Dead letters and re-runs over HTTP: ``GET /tasks?dead_letter=true`` and
``POST /tasks/{id}/retry`` (202 with the new task, 404 / 409 / 422 / 400 for what
cannot be retried, owners kept apart)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from taskbus import FatalError, Identity, RetryPolicy, TaskBus
from taskbus.integrations.http import create_app

from ._tasks import Gates, register
from .conftest import asgi_client
from .test_rest import assert_error, wait_state

pytestmark = pytest.mark.anyio

TOKENS: dict[str, str | Identity] = {
    "alice-token": "alice",
    "bob-token": "bob",
    "root-token": Identity(owner="ops", admin=True),
}


class Count(BaseModel):
    count: int


class Broken:
    """``http:broken``: fails (fatal, one attempt) until `fixed`."""

    def __init__(self, bus: TaskBus) -> None:
        self.fixed = False

        @bus.task("http:broken", retry=RetryPolicy.never())
        async def broken(value: int) -> int:
            if not self.fixed:
                raise FatalError("the printer is on fire")
            return value * 10


async def failed_task(client: httpx.AsyncClient, value: Any = 4) -> str:
    created = await client.post("/tasks", json={"type": "http:broken", "input": value})
    assert created.status_code == 202, created.text
    await wait_state(client, created.json()["url"], "failed")
    return str(created.json()["id"])


async def test_a_dead_letter_is_listed_and_retried_as_a_new_task(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()
    broken = Broken(bus)
    register(bus)
    async with bus, asgi_client(create_app(bus)) as client:
        old = await failed_task(client)
        done = (await client.post("/tasks", json={"type": "noop"})).json()
        await wait_state(client, done["url"], "completed")
        page = (await client.get("/tasks", params={"dead_letter": "true"})).json()
        assert [item["id"] for item in page["items"]] == [old]
        assert page["items"][0]["dead_letter"] == "not-retryable"
        every = (await client.get("/tasks", params={"dead_letter": "false"})).json()
        assert len(every["items"]) == 2
        contrary = await client.get("/tasks", params={"dead_letter": "true", "state": "queued"})
        assert contrary.json() == {"items": [], "next_cursor": None}

        broken.fixed = True
        response = await client.post(f"/tasks/{old}/retry", json={"priority": 9})
        assert response.status_code == 202, response.text
        answer = response.json()
        assert set(answer) == {"id", "type", "state", "url"}
        assert (answer["type"], answer["state"]) == ("http:broken", "queued")
        assert answer["id"] != old and response.headers["location"] == answer["url"]
        rerun = await wait_state(client, answer["url"], "completed")
        assert (rerun["result"], rerun["priority"]) == (40, 9)
        assert rerun["metadata"] == {"retry_of": old}
        assert rerun["dead_letter"] is None
        bare = await client.post(f"/tasks/{old}/retry")  # no body: the old options
        assert bare.status_code == 202, bare.text

        async def chunks() -> AsyncIterator[bytes]:
            yield b" "

        chunked = await client.post(f"/tasks/{old}/retry", content=chunks())
        assert chunked.status_code == 202, chunked.text
        assert "content-length" not in chunked.request.headers
        await wait_state(client, chunked.json()["url"], "completed")
        again = await wait_state(client, bare.json()["url"], "completed")
        assert again["priority"] == 5
        old_now = (await client.get(f"/tasks/{old}")).json()
        assert old_now["state"] == "failed", "the old task stays a dead letter"


async def test_a_key_makes_a_second_retry_answer_with_the_first(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()
    gates = Gates()
    register(bus, gates)
    async with bus, asgi_client(create_app(bus)) as client:
        old = (await client.post("/tasks", json={"type": "gated"})).json()
        await wait_state(client, old["url"], "running")
        assert (await client.delete(old["url"])).json()["cancelled"] is True
        await wait_state(client, old["url"], "cancelled")
        first = await client.post(f"{old['url']}/retry", json={"key": "k"})
        second = await client.post(f"{old['url']}/retry", json={"key": "k"})
        third = await client.post(f"{old['url']}/retry")
        gates.release.set()
        ids = [r.json()["id"] for r in (first, second, third)]
        for task_id in ids:
            await wait_state(client, f"/tasks/{task_id}", "completed")
    assert ids[0] == ids[1] != ids[2]


async def test_what_cannot_be_retried_is_a_4xx(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    Broken(bus)
    gates = register(bus)
    async with bus, asgi_client(create_app(bus)) as client:
        assert_error(await client.post("/tasks/" + "f" * 32 + "/retry"), 404, "not_found")
        assert_error(await client.post("/tasks/" + "x" * 300 + "/retry"), 404, "not_found")
        running = (await client.post("/tasks", json={"type": "gated"})).json()
        await wait_state(client, running["url"], "running")
        error = assert_error(await client.post(f"{running['url']}/retry"), 409, "not_retryable")
        assert error["details"] == {"state": "running"}
        gates.release.set()
        await wait_state(client, running["url"], "completed")
        error = assert_error(await client.post(f"{running['url']}/retry"), 409, "not_retryable")
        assert error["details"] == {"state": "completed"}

        old = await failed_task(client)
        url = f"/tasks/{old}/retry"
        for body in ({"priority": "5"}, {"priority": 11}, {"delay": -1}, {"colour": "red"}):
            assert_error(await client.post(url, json=body), 422, "invalid_submission")
        both = {"delay": 1, "run_at": "2030-01-01T00:00:00+00:00"}
        assert_error(await client.post(url, json=both), 422, "invalid_submission")
        naive = {"run_at": "2030-01-01T00:00:00"}
        assert_error(await client.post(url, json=naive), 422, "invalid_submission")
        assert_error(await client.post(url, json=[1]), 422, "invalid_submission")
        assert_error(await client.post(url, content=b"{nope"), 400, "bad_request")
        too_big = b"{" + b" " * 1_048_576 + b"}"
        assert_error(await client.post(url, content=too_big), 413, "payload_too_large")
        for flag in ("yes", "1", "TRUE"):
            response = await client.get("/tasks", params={"dead_letter": flag})
            assert_error(response, 400, "bad_request")

        bus.registry.unregister("http:broken")
        assert_error(await client.post(url), 409, "unknown_task_type")

        @bus.task("http:broken")
        async def changed(data: Count) -> int:
            return data.count

        error = assert_error(await client.post(url), 422, "invalid_input")
        assert error["details"]
        page = (await client.get("/tasks", params={"limit": 500})).json()
    assert not [item for item in page["items"] if "retry_of" in item["metadata"]]


async def test_only_the_owner_or_an_administrator_retries_a_task(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()
    Broken(bus)
    app = create_app(bus, tokens=TOKENS)
    async with (
        bus,
        asgi_client(app, "alice-token") as alice,
        asgi_client(app, "bob-token") as bob,
        asgi_client(app, "root-token") as root,
        asgi_client(app) as nobody,
    ):
        old = await failed_task(alice)
        assert_error(await nobody.post(f"/tasks/{old}/retry"), 401, "unauthorized")
        assert_error(await bob.post(f"/tasks/{old}/retry"), 404, "not_found")
        assert (await bob.get("/tasks", params={"dead_letter": "true"})).json()["items"] == []
        mine = await alice.get("/tasks", params={"dead_letter": "true"})
        assert [item["id"] for item in mine.json()["items"]] == [old]
        everyone = await root.get("/tasks", params={"dead_letter": "true"})
        assert [item["id"] for item in everyone.json()["items"]] == [old]
        by_alice = await alice.post(f"/tasks/{old}/retry")
        by_root = await root.post(f"/tasks/{old}/retry")
        assert by_alice.status_code == by_root.status_code == 202
        for answer in (by_alice, by_root):
            rerun = await wait_state(root, answer.json()["url"], "failed")
            assert (rerun["owner"], rerun["metadata"]) == ("alice", {"retry_of": old})
            assert (await alice.get(answer.json()["url"])).status_code == 200
            assert_error(await bob.get(answer.json()["url"]), 404, "not_found")
