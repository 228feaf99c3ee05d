"""``POST /tasks/{id}/input``: answering a task that waits for input, over HTTP, and
the task-input-required / task-input-received events on the event stream."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel

from taskbus import TaskBus, TaskContext
from taskbus.integrations.http import create_app

from .conftest import client_for, serve, sse
from .test_rest import assert_error, wait_state

pytestmark = pytest.mark.anyio


class Branch(BaseModel):
    name: str
    depth: int = 1


def register_ask(bus: TaskBus) -> None:
    @bus.task("ask:branch")
    async def ask(ctx: TaskContext) -> str:
        branch = await ctx.ask("Which branch?", model=Branch)
        return f"{branch.name}/{branch.depth}"


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_a_waiting_task_is_answered_over_http_and_the_stream_says_so(
    make_bus: Callable[..., TaskBus], tmp_path: Path, store: str
) -> None:
    bus = make_bus(store=f"sqlite:///{tmp_path / 'http.db'}" if store == "sqlite" else None)
    register_ask(bus)
    async with (
        bus,
        serve(create_app(bus)) as url,
        client_for(url) as client,
        sse(client) as events,
    ):
        task = (await client.post("/tasks", json={"type": "ask:branch"})).json()
        asked = [m for m in await events.take(3) if m.event == "task-input-required"]
        waiting = await wait_state(client, task["url"], "waiting")
        listed = (await client.get("/tasks", params={"state": "waiting"})).json()
        answer = f"{task['url']}/input"

        bad = await client.post(answer, json={"value": {"depth": "deep"}})
        details = assert_error(bad, 422, "invalid_answer")["details"]
        assert {tuple(d["loc"]) for d in details} >= {("name",), ("depth",)}
        shapeless = await client.post(answer, json={"name": "main"})
        assert_error(shapeless, 422, "invalid_answer")
        assert_error(await client.post(answer, content=b"{"), 400, "bad_request")
        assert_error(await client.post("/tasks/nope/input", json={"value": 1}), 404, "not_found")

        ok = await client.post(answer, json={"value": {"name": "main", "depth": 2}})
        assert ok.status_code == 200, ok.text
        assert ok.json()["id"] == task["id"]
        received = await events.next()
        done = await wait_state(client, task["url"], "completed")
        again = await client.post(answer, json={"value": {"name": "dev"}})
        assert_error(again, 409, "not_waiting")
    [required] = asked
    assert required.json["prompt"] == "Which branch?"
    assert required.json["json_schema"] == Branch.model_json_schema()
    assert waiting["question"]["key"] == "ask-1"
    assert [item["id"] for item in listed["items"]] == [task["id"]]
    assert (received.event, received.json["key"]) == ("task-input-received", "ask-1")
    assert done["result"] == "main/2"


async def test_another_owners_waiting_task_is_not_found(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()
    register_ask(bus)
    app = create_app(bus, tokens={"a-token": "alice", "b-token": "bob"})
    async with (
        bus,
        serve(app) as url,
        client_for(url, "a-token") as alice,
        client_for(url, "b-token") as bob,
    ):
        task = (await alice.post("/tasks", json={"type": "ask:branch"})).json()
        await wait_state(alice, task["url"], "waiting")
        stolen = await bob.post(f"{task['url']}/input", json={"value": {"name": "x"}})
        assert_error(stolen, 404, "not_found")
        assert (await alice.get(task["url"])).json()["state"] == "waiting"
        ok = await alice.post(f"{task['url']}/input", json={"value": {"name": "main"}})
        assert ok.status_code == 200
        assert (await wait_state(alice, task["url"], "completed"))["result"] == "main/1"
