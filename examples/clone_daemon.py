"""A clone daemon whose clients follow a job over SSE and resume after a dropped connection.

The daemon is `create_app(bus, manage_bus=True)` served by uvicorn: it runs
``repo:clone`` jobs (a fake clone reporting objects received). A client submits a
clone, follows ``/events?task_id=...`` and, when its connection drops, reconnects
with the ``Last-Event-ID`` header: the server replays what it sent after that id
from its event history, then goes live, so nothing is lost and nothing repeats.

Run: ``.venv/bin/python examples/clone_daemon.py`` serves on http://127.0.0.1:8765
(follow a job with ``curl -N 'http://127.0.0.1:8765/events?task_id=ID'``).
``.venv/bin/python examples/clone_daemon.py --demo`` starts the daemon in-process on
a free loopback port; its client submits a clone, drops the connection on purpose
part-way, waits while the clone goes on, reconnects with ``Last-Event-ID``, and
prints that its events match what the bus emitted: none lost, none duplicated.
Needs ``pip install 'taskbus[http]'``.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import uvicorn
from pydantic import BaseModel, Field

from taskbus import TaskBus, TaskContext, TaskEvent
from taskbus.integrations.http import create_app, serving

FINAL = ("task-completed", "task-failed", "task-cancelled")

bus = TaskBus(workers=2, progress_interval=0.02)


class CloneRequest(BaseModel):
    url: str = Field(description="Repository to clone.")
    objects: int = Field(default=240, ge=1, le=100_000)
    batch: int = Field(default=12, ge=1)
    step_delay: float = Field(default=0.05, ge=0, le=1)


@bus.task("repo:clone", concurrency=2, description="Clone a repository (simulated)")
async def clone(ctx: TaskContext, request: CloneRequest) -> str:
    total = request.objects
    await ctx.progress(0, f"connecting to {request.url}", current=0, total=total)
    received = 0
    while received < total:
        await anyio.sleep(request.step_delay)
        received = min(received + request.batch, total)
        await ctx.progress(
            current=received, total=total, message=f"receiving objects {received}/{total}"
        )
    return f"cloned {request.url} ({total} objects)"


app = create_app(bus, manage_bus=True)


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
    """Yield (id, event name, data) for each server-sent event of a streamed response."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in fields:
                yield (
                    fields.get("id", ""),
                    fields.get("event", "message"),
                    json.loads(fields["data"]),
                )
            fields = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            fields[key] = value.removeprefix(" ")


async def follow(
    client: httpx.AsyncClient,
    task_id: str,
    received: list[tuple[int, str, dict[str, Any]]],
    *,
    last_event_id: int | None = None,
    drop_after: int | None = None,
) -> bool:
    """Append this task's events to `received`; True once its final event came."""
    headers = {} if last_event_id is None else {"Last-Event-ID": str(last_event_id)}
    params = {"task_id": task_id}
    count = 0
    async with client.stream("GET", "/events", params=params, headers=headers) as response:
        async for event_id, name, data in sse_events(response):
            received.append((int(event_id), name, data))
            count += 1
            if name in FINAL:
                return True
            if drop_after is not None and count >= drop_after:
                return False  # leaving the block closes the connection mid-stream
    return False


async def demo(base_url: str) -> None:
    emitted: list[dict[str, Any]] = []  # what the bus emitted, the ground truth
    received: list[tuple[int, str, dict[str, Any]]] = []

    def record(event: TaskEvent) -> None:
        if event.task_type == "repo:clone":  # the demo's only clone
            emitted.append(json.loads(event.model_dump_json()))

    bus.on("*", record)
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        answer = await client.post(
            "/tasks", json={"type": "repo:clone", "input": {"url": "https://example.com/big.git"}}
        )
        task_id = answer.json()["id"]
        print(f"submitted repo:clone: {answer.status_code} {answer.json()['state']}")
        await follow(client, task_id, received, drop_after=6)
        last_id = received[-1][0]
        print(f"connection 1: {len(received)} events, dropped on purpose after id {last_id}")
        before = len(emitted)
        await anyio.sleep(0.4)
        print(f"while disconnected the clone went on: {len(emitted) - before} more events")
        first = len(received)
        done = await follow(client, task_id, received, last_event_id=last_id)
        print(f"reconnected with Last-Event-ID: {last_id}")
        print(f"connection 2: {len(received) - first} events, ended by the final event: {done}")
    ids = [event_id for event_id, _, _ in received]
    names = [name for _, name, _ in received]
    print(f"ids strictly increasing: {all(a < b for a, b in itertools.pairwise(ids))}")
    print(f"no event lost or duplicated: {[data for _, _, data in received] == emitted}")
    print(f"events: {len(received)}, first {names[0]}, last {names[-1]}")
    print(f"result: {received[-1][2]['result']}")
    bus.off("*", record)


async def run_demo() -> None:
    async with serving(app) as url:
        with anyio.fail_after(15):
            await demo(url)
    print("daemon stopped")


def main() -> None:
    if "--demo" in sys.argv[1:]:
        anyio.run(run_demo)
        return
    print("clone daemon on http://127.0.0.1:8765 (POST /tasks, GET /events?task_id=...)")
    uvicorn.run(app, host="127.0.0.1", port=8765)


if __name__ == "__main__":
    main()
