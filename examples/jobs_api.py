"""A jobs API for two users: submit an agent-style job, get 202 at once, stream its progress.

`create_app(bus, tokens=...)` serves the HTTP API and the dashboard page with two
bearer tokens, one per user. A job answers ``202`` with its id straight away and
then reports its progress (0-100, with a message) as server-sent events; each user
sees, streams and cancels only their own jobs (another user's job id is a 404).

Run: ``.venv/bin/python examples/jobs_api.py`` serves on http://127.0.0.1:8000 and
prints the dashboard's address for each user (``/?token=...``).
``.venv/bin/python examples/jobs_api.py --demo`` starts the server in-process on a
free loopback port, drives it with httpx as alice and bob, and prints the 202 answer,
alice's progress stream, what each user's job list holds, and the 404s a user gets
for the other's job; then it stops. Needs ``pip install 'taskbus[http]'``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import uvicorn
from pydantic import BaseModel, Field

from taskbus import TaskBus, TaskContext
from taskbus.integrations.http import create_app, serving

TOKENS = {"alice-secret": "alice", "bob-secret": "bob"}
ALICE = {"Authorization": "Bearer alice-secret"}
BOB = {"Authorization": "Bearer bob-secret"}

bus = TaskBus(workers=4, progress_interval=0.05)


class ResearchRequest(BaseModel):
    question: str = Field(description="What the agent should find out.")
    sources: int = Field(default=3, ge=1, le=10, description="Sources to read.")
    step_delay: float = Field(default=0.15, ge=0, le=2, description="Seconds per step.")


@bus.task("agent:research", description="Research a question: search, read, draft, check")
async def research(ctx: TaskContext, request: ResearchRequest) -> str:
    plan = [
        (0, "planning the research"),
        (20, f"searching the web for {request.question!r}"),
        (45, f"reading {request.sources} sources"),
        (70, "drafting the answer"),
        (90, "checking the citations"),
    ]
    for percent, message in plan:
        await ctx.progress(percent, message)
        await anyio.sleep(request.step_delay)
    await ctx.progress(100, "answer ready")
    return f"{request.question}: answered from {request.sources} sources"


app = create_app(bus, tokens=TOKENS, manage_bus=True)


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


async def follow(client: httpx.AsyncClient, task_id: str, headers: dict[str, str]) -> None:
    """Print one job's progress from /events until its final event."""
    params = {"task_id": task_id}
    async with client.stream("GET", "/events", params=params, headers=headers) as response:
        async for _, name, data in sse_events(response):
            if name == "task-progress":
                print(f"  alice's job: {data['progress']:3.0f}% {data['message']}")
            elif name in ("task-completed", "task-failed", "task-cancelled"):
                print(f"  alice's job: {name.removeprefix('task-')}: {data.get('result')}")
                return


async def until_final(client: httpx.AsyncClient, task_id: str, headers: dict[str, str]) -> None:
    """Wait (up to 10 s) until the job has ended, from its final event on /events."""
    params = {"task_id": task_id}
    with anyio.fail_after(10):
        async with client.stream("GET", "/events", params=params, headers=headers) as response:
            async for _, name, _ in sse_events(response):
                if name in ("task-completed", "task-failed", "task-cancelled"):
                    return


async def show_jobs(client: httpx.AsyncClient, user: str, headers: dict[str, str]) -> None:
    page = (await client.get("/tasks", headers=headers)).json()
    jobs = [f"{s['input']['question']!r} {s['state']}" for s in page["items"]]
    print(f"{user} sees {len(jobs)} job(s): {', '.join(jobs)}")


async def demo(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        started = time.monotonic()
        answer = await client.post(
            "/tasks",
            json={"type": "agent:research", "input": {"question": "What changed in Q3?"}},
            headers=ALICE,
        )
        took = time.monotonic() - started
        job = answer.json()
        print(f"alice: POST /tasks -> {answer.status_code} {job['state']}, at once: {took < 0.5}")
        print(f"Location is the job's url: {answer.headers['location'] == job['url']}")
        bobs = await client.post(
            "/tasks",
            json={"type": "agent:research", "input": {"question": "Who won the match?"}},
            headers=BOB,
        )
        print(f"bob: POST /tasks -> {bobs.status_code} {bobs.json()['state']}")
        await follow(client, job["id"], ALICE)
        await until_final(client, bobs.json()["id"], BOB)  # both answered before the lists
        await show_jobs(client, "alice", ALICE)
        await show_jobs(client, "bob", BOB)
        peek = await client.get(f"/tasks/{bobs.json()['id']}", headers=ALICE)
        print(f"alice asks for bob's job: {peek.status_code} {peek.json()['error']['code']}")
        stop = await client.delete(f"/tasks/{job['id']}", headers=BOB)
        print(f"bob cancels alice's job: {stop.status_code} {stop.json()['error']['code']}")
        nobody = await client.get("/tasks")
        print(f"no token: {nobody.status_code} {nobody.json()['error']['code']}")


async def run_demo() -> None:
    async with serving(app) as url:
        with anyio.fail_after(15):
            await demo(url)
    print("server stopped")


def main() -> None:
    if "--demo" in sys.argv[1:]:
        anyio.run(run_demo)
        return
    for token, user in TOKENS.items():
        print(f"dashboard for {user}: http://127.0.0.1:8000/?token={token}")
    uvicorn.run(app, host="127.0.0.1", port=8000)


if __name__ == "__main__":
    main()
