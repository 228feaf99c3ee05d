"""A short load test: 50 SSE clients, 2,000 concurrent submissions over HTTP."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import anyio
import httpx
import pytest

from taskbus import TaskBus
from taskbus.integrations.http import create_app

from ._tasks import register
from .conftest import serve

pytestmark = pytest.mark.anyio

CLIENTS = 50
TASKS = 2_000
#: Each submitter has a client (and connection) of its own: one shared httpx pool
#: slows down sharply under many concurrent requests.
SUBMITTERS = 10
EVENTS_PER_TASK = 3  # queued, started, completed
MESSAGE = re.compile(rb"event: ([a-z-]+)\r?\ndata: \{[^\n]*?\"task_id\":\"([0-9a-f]{32})\"")


@pytest.mark.slow
async def test_every_event_reaches_every_client(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus(workers=8)
    register(bus)
    counts = [Counter[str]() for _ in range(CLIENTS)]
    submitted: set[str] = set()
    limits = httpx.Limits(max_connections=CLIENTS)
    async with (
        bus,
        serve(create_app(bus)) as url,
        httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client,
    ):
        # A bound against a hang, not a speed target: the run takes 6-10 s on a
        # loaded 2-core machine.
        with anyio.fail_after(25):
            connected = anyio.Semaphore(0)

            async def listen(counter: Counter[str]) -> None:
                # Whole messages only (up to the last blank line); a regex over the
                # bytes keeps 50 readers cheap enough to share the server's loop.
                finals, pending = 0, b""
                async with client.stream("GET", "/events") as response:
                    connected.release()
                    async for chunk in response.aiter_bytes():
                        whole, _, pending = (pending + chunk).rpartition(b"\n\n")
                        for name, task_id in MESSAGE.findall(whole):
                            counter[task_id.decode()] += 1
                            finals += name == b"task-completed"
                        if finals == TASKS:
                            return

            async def submit(count: int) -> None:
                async with httpx.AsyncClient(base_url=url, timeout=10) as own:
                    for _ in range(count):
                        response = await own.post("/tasks", json={"type": "noop"})
                        assert response.status_code == 202
                        submitted.add(response.json()["id"])

            async with anyio.create_task_group() as tg:
                for counter in counts:
                    tg.start_soon(listen, counter)
                for _ in range(CLIENTS):
                    await connected.acquire()
                async with anyio.create_task_group() as submitters:
                    for _ in range(SUBMITTERS):
                        submitters.start_soon(submit, TASKS // SUBMITTERS)

    assert len(submitted) == TASKS
    expected = dict.fromkeys(submitted, EVENTS_PER_TASK)
    for counter in counts:
        assert dict(counter) == expected
