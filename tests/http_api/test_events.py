"""Server-sent events: order, filters, resumption, mounting, the managed lifespan,
results that are not JSON, and one-task streams that end after the final event."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.routing import Mount

from taskbus import RetryPolicy, TaskBus, UserActionableError
from taskbus.integrations.http import create_app

from ._tasks import register
from .conftest import client_for, serve, sse
from .test_rest import assert_error, wait_state

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
    bus = make_bus(event_history=2)  # the bus keeps no more than the SSE history
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


def _cycle() -> list[object]:
    loop: list[object] = []
    loop.append(loop)
    return loop


#: Results no JSON encoder takes as they are; each must reach every client anyway.
ODD_RESULTS: dict[str, Callable[[], object]] = {
    "object": object,
    "set": lambda: {1, 2},
    "bytes": lambda: b"\xff\xfe not UTF-8",
    "surrogate": lambda: "a\ud800b",
    "deep": lambda: json.loads("[" * 900 + "]" * 900),
    "cycle": _cycle,
}


async def test_results_that_are_not_json_end_no_event_stream(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()
    register(bus)

    @bus.task("odd")
    async def odd(which: str) -> Any:
        return ODD_RESULTS[which]()

    async with (
        bus,
        serve(create_app(bus)) as url,
        client_for(url) as client,
        sse(client) as first,
        sse(client) as second,
    ):
        ids = [
            (await client.post("/tasks", json={"type": "odd", "input": which})).json()["id"]
            for which in ODD_RESULTS
        ]
        ids.append((await client.post("/tasks", json={"type": "noop"})).json()["id"])
        for events in (first, second):
            finals = [m for m in await events.take(3 * len(ids)) if m.event == "task-completed"]
            assert [m.json["task_id"] for m in finals] == ids
            results = dict(zip(ODD_RESULTS, [m.json["result"] for m in finals], strict=False))
            assert results["set"] == [1, 2]
            assert results["bytes"] == repr(b"\xff\xfe not UTF-8")
            assert results["surrogate"] == repr("a\ud800b")
            assert results["object"].startswith("<object object at")
        for task_id in ids:  # and snapshots of them read fine
            response = await client.get(f"/tasks/{task_id}")
            assert response.status_code == 200
            assert response.json()["state"] == "completed"
        listed = await client.get("/tasks")
        assert len(listed.json()["items"]) == len(ids)


async def test_a_one_task_stream_closes_after_the_final_event(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus(progress_interval=0)
    gates = register(bus)
    async with bus, serve(create_app(bus)) as url, client_for(url) as client:
        task = (await client.post("/tasks", json={"type": "steps"})).json()
        async with sse(client, params={"task_id": task["id"]}) as events:
            gates.release.set()
            names = [m.event for m in await events.take(6)]
            with pytest.raises(EOFError):
                await events.next()
        assert names[0] == "task-queued" and names[-1] == "task-completed"


@pytest.mark.parametrize("history", [10_000, 0])
async def test_a_finished_task_stream_sends_its_final_event_at_once_and_closes(
    make_bus: Callable[..., TaskBus], history: int
) -> None:
    bus = make_bus()
    register(bus)
    app = create_app(bus, event_history=history)
    async with bus, serve(app) as url, client_for(url) as client:
        order = {"type": "shop:order", "input": {"item": "tea", "quantity": 2}}
        task = (await client.post("/tasks", json=order)).json()
        await wait_state(client, task["url"], "completed")
        async with sse(client, params={"task_id": task["id"]}) as events:
            messages = [await events.next() for _ in range(3 if history else 1)]
            with pytest.raises(EOFError):
                await events.next()
        final = messages[-1]
        assert final.event == "task-completed"
        assert final.json["task_id"] == task["id"]
        assert final.json["result"] == {"item": "tea", "total": 4}


async def test_a_resumed_one_task_stream_that_had_the_final_event_gets_204(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()
    register(bus)
    async with bus, serve(create_app(bus)) as url, client_for(url) as client:
        task = (await client.post("/tasks", json={"type": "noop"})).json()
        async with sse(client, params={"task_id": task["id"]}) as events:
            final = (await events.take(3))[-1]
        assert final.event == "task-completed"
        params = {"task_id": task["id"]}
        # An EventSource reconnects with the last id: 204 tells it to stop.
        assert final.id is not None
        response = await client.get("/events", params=params, headers={"Last-Event-ID": final.id})
        assert response.status_code == 204
        mismatch = {**params, "type": "shop:"}  # a filter the task can never pass
        assert (await client.get("/events", params=mismatch)).status_code == 204
        # An id this process never issued (the server restarted) resumes nothing.
        async with sse(client, params=params, headers={"Last-Event-ID": "999999"}) as stale:
            assert (await stale.take(3))[-1].event == "task-completed"
            with pytest.raises(EOFError):
                await stale.next()
        earlier = str(int(final.id or 0) - 1)
        async with sse(client, params=params, headers={"Last-Event-ID": earlier}) as resumed:
            assert [m.event for m in [await resumed.next()]] == ["task-completed"]
            with pytest.raises(EOFError):
                await resumed.next()


class Outcome(BaseModel):
    how: str


@pytest.mark.parametrize("how", ["complete", "fail", "cancel"])
async def test_a_task_finished_in_a_previous_process_gets_its_final_event_and_closes(
    make_bus: Callable[..., TaskBus], tmp_path: Path, how: str
) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"

    def build() -> TaskBus:
        bus = make_bus(store=store)

        @bus.task("outcome", retry=RetryPolicy(max_attempts=1))
        async def outcome(params: Outcome) -> str:
            if params.how == "fail":
                raise UserActionableError("no paper", suggested_action="load paper")
            if params.how == "cancel":
                await anyio.sleep_forever()
            return "made it"

        return bus

    first = build()
    async with first:
        handle = await first.submit("outcome", {"how": how})
        if how == "cancel":
            await first.cancel(handle.id, reason="not needed")
        final = await first.wait(handle.id, timeout=5)
    second = build()
    async with (
        second,
        serve(create_app(second)) as url,
        client_for(url) as client,
        sse(client, params={"task_id": handle.id}) as events,
    ):
        message = await events.next()
        with pytest.raises(EOFError):
            await events.next()
    assert message.json["task_id"] == handle.id
    assert message.event == {"complete": "task-completed", "fail": "task-failed"}.get(
        how, "task-cancelled"
    )
    if how == "complete":
        assert message.json["result"] == "made it"
    elif how == "fail":
        assert message.json["error"] == "no paper"
        assert message.json["error_type"] == "user-actionable"
        assert message.json["suggested_action"] == "load paper"
        assert message.json["attempt_count"] == final.attempts == 1
    else:
        assert message.json["reason"] == "not needed"


async def test_a_stream_for_an_unknown_or_other_owners_task_is_404(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()
    register(bus)
    tokens = {"alice-token": "alice", "bob-token": "bob"}
    async with (
        bus,
        serve(create_app(bus, tokens=tokens)) as url,
        client_for(url, "alice-token") as alice,
        client_for(url, "bob-token") as bob,
    ):
        task = (await alice.post("/tasks", json={"type": "noop"})).json()
        await wait_state(alice, task["url"], "completed")
        for task_id in (task["id"], "0" * 32):
            response = await bob.get("/events", params={"task_id": task_id})
            assert_error(response, 404, "not_found")
            assert response.json()["error"]["message"] == f"no task with id {task_id!r}"


async def test_last_event_id_resumes_across_a_server_restart_without_gap_or_duplicate(
    make_bus: Callable[..., TaskBus], tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'events.db'}"
    first = make_bus(store=store)
    register(first)
    async with first, serve(create_app(first)) as url, client_for(url) as client:
        async with sse(client) as events:
            task = (await client.post("/tasks", json={"type": "noop"})).json()
            seen = await events.take(3)
        assert seen[-1].event == "task-completed" and seen[-1].json["task_id"] == task["id"]
        last_seen = seen[-1].id
        # While the client is away: more tasks run, then the server stops.
        missed = [(await client.post("/tasks", json={"type": "noop"})).json() for _ in range(3)]
        for item in missed:
            await wait_state(client, item["url"], "completed")
    assert last_seen is not None

    second = make_bus(store=store)
    register(second)
    async with (
        second,
        serve(create_app(second)) as url,
        client_for(url) as client,
        sse(client, headers={"Last-Event-ID": last_seen}) as resumed,
    ):
        replayed = await resumed.take(9)
        live_task = (await client.post("/tasks", json={"type": "noop"})).json()
        live = await resumed.take(3)
    numbers = [int(m.id or 0) for m in replayed + live]
    assert numbers == list(range(int(last_seen) + 1, int(last_seen) + 13))  # no gap, no repeat
    for item in missed:  # each missed task's events, in order
        assert [m.event for m in replayed if m.json["task_id"] == item["id"]] == [
            "task-queued",
            "task-started",
            "task-completed",
        ]
    assert [(m.json["task_id"], m.event) for m in live] == [
        (live_task["id"], name) for name in ("task-queued", "task-started", "task-completed")
    ]


async def test_a_one_task_stream_resumed_after_a_restart_sends_its_final_event_once(
    make_bus: Callable[..., TaskBus], tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path / 'events.db'}"
    first = make_bus(store=store)
    register(first)
    async with first, serve(create_app(first)) as url, client_for(url) as client:
        task = (await client.post("/tasks", json={"type": "noop"})).json()
        async with sse(client, params={"task_id": task["id"]}) as events:
            messages = [await events.next()]
            while messages[-1].event != "task-completed":
                messages.append(await events.next())
        queued_id = messages[0].id
    second = make_bus(store=store)
    register(second)
    async with second, serve(create_app(second)) as url, client_for(url) as client:
        params = {"task_id": task["id"]}
        async with sse(client, params=params, headers={"Last-Event-ID": queued_id or ""}) as again:
            rest = [await again.next() for _ in range(len(messages) - 1)]
            with pytest.raises(EOFError):
                await again.next()
        assert [(m.id, m.event) for m in rest] == [(m.id, m.event) for m in messages[1:]]
        seen_all = await client.get(
            "/events", params=params, headers={"Last-Event-ID": messages[-1].id or ""}
        )
        assert seen_all.status_code == 204
