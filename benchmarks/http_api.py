"""HTTP: submissions per second, and event fan-out latency to SSE clients.

Everything runs in one process on one asyncio loop: a uvicorn server on a free
loopback port and httpx clients. Beside each measure, a raw reference served by
the same uvicorn and measured by the same clients in the same run:

- submit rate: ``POST /tasks`` on `create_app(bus)` (a no-op task type) against
  a bare Starlette endpoint that parses the JSON body and answers 202;
- fan-out: a task-progress event emitted by a handler (its message carries
  ``time.perf_counter()``) until each of N SSE clients has parsed it, against a
  bare sse-starlette endpoint that broadcasts a timestamp to N client streams.

Prints one JSON line per measure. (Not named ``http.py``: a script of that name
would shadow the standard library's ``http`` package.)
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
from _reference import emit, parser, percentile, rounded
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from taskbus import TaskBus, TaskContext
from taskbus.integrations.http import create_app, serving

CONNECTIONS = 10  # concurrent submitting clients, each with its own connection
# Without TCP_NODELAY, httpx's separate header and body writes meet delayed ACKs
# and every request waits ~40 ms: the figure would measure the kernel, not us.
NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


def client(base: str, timeout: float | None) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(socket_options=NODELAY)
    return httpx.AsyncClient(base_url=base, timeout=timeout, transport=transport)


def make_bus() -> TaskBus:
    bus = TaskBus(workers=16, retention=None)

    @bus.task("bench:noop")
    async def noop(ctx: TaskContext) -> None:
        return None

    @bus.task("bench:ping")
    async def ping(ctx: TaskContext) -> None:
        await ctx.progress(50, repr(time.perf_counter()))

    return bus


async def submit_rate(base: str, path: str, body: dict[str, Any], total: int) -> float:
    per_client = total // CONNECTIONS

    async def one_client() -> None:
        async with client(base, 30) as http:
            for _ in range(per_client):
                response = await http.post(path, json=body)
                if response.status_code != 202:
                    raise RuntimeError(f"{path}: {response.status_code} {response.text}")

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(CONNECTIONS):
            tg.start_soon(one_client)
    return per_client * CONNECTIONS / (time.perf_counter() - start)


class Listener:
    """One SSE client: records the latency of every stamped message it parses."""

    def __init__(self, base: str, path: str) -> None:
        self.base, self.path = base, path
        self.latencies: list[float] = []
        self.received = 0
        self.changed = anyio.Event()

    async def run(self, connected: anyio.Event) -> None:
        async with (
            client(self.base, None) as http,
            http.stream("GET", self.path) as response,
        ):
            connected.set()
            async for line in response.aiter_lines():
                if line.startswith("data:"):
                    self._stamp(line[5:].strip())

    def _stamp(self, data: str) -> None:
        payload = json.loads(data)
        stamp = payload.get("message") if isinstance(payload, dict) else payload
        if stamp is None:
            return
        self.latencies.append(time.perf_counter() - float(stamp))
        self.received += 1
        changed, self.changed = self.changed, anyio.Event()
        changed.set()

    async def wait_for(self, count: int) -> None:
        while self.received < count:
            await self.changed.wait()


async def fan_out(base: str, path: str, clients: int, rounds: int, fire: Any) -> list[float]:
    listeners = [Listener(base, path) for _ in range(clients)]
    async with anyio.create_task_group() as tg:
        for listener in listeners:
            connected = anyio.Event()
            tg.start_soon(listener.run, connected)
            await connected.wait()
        for sent in range(1, rounds + 2):  # the first one is a warm-up
            await fire()
            with anyio.fail_after(10):
                for listener in listeners:
                    await listener.wait_for(sent)
        tg.cancel_scope.cancel()
    return [latency for listener in listeners for latency in listener.latencies[1:]]


def reference_app() -> tuple[Starlette, Any]:
    streams: list[anyio.abc.ObjectSendStream[str]] = []

    async def accept(request: Request) -> JSONResponse:
        await request.json()
        return JSONResponse({"id": "x", "state": "queued"}, status_code=202)

    async def events(request: Request) -> EventSourceResponse:
        send, receive = anyio.create_memory_object_stream[str](1000)
        streams.append(send)

        async def generate() -> AsyncIterator[dict[str, str]]:
            async with receive:
                async for data in receive:
                    yield {"event": "ping", "data": data}

        return EventSourceResponse(generate())

    async def fire() -> None:
        stamp = repr(time.perf_counter())
        for send in list(streams):
            try:
                await send.send(stamp)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                streams.remove(send)  # a client of an earlier round went away

    app = Starlette(routes=[Route("/ref", accept, methods=["POST"]), Route("/events", events)])
    return app, fire


async def measure(total: int, rounds: int, client_counts: list[int]) -> None:
    ref_app, ref_fire = reference_app()
    bus = make_bus()
    async with bus, serving(create_app(bus, dashboard=False)) as base, serving(ref_app) as ref:
        reference_rate = await submit_rate(ref, "/ref", {"type": "bench:noop"}, total)
        rate = await submit_rate(base, "/tasks", {"type": "bench:noop"}, total)
        emit(
            {
                "bench": "http_api",
                "case": "submit",
                "tasks": total,
                "requests": total,
                "connections": CONNECTIONS,
                "submits_per_s": rounded(rate, 0),
                "reference_requests_per_s": rounded(reference_rate, 0),
                "ratio": rounded(rate / reference_rate, 4),
                "meets_target": None,
            }
        )

        async def fire_task() -> None:
            await bus.submit("bench:ping")

        for clients in client_counts:
            reference = await fan_out(ref, "/events", clients, rounds, ref_fire)
            measured = await fan_out(base, "/events?type=bench:ping", clients, rounds, fire_task)
            p50, p99 = percentile(measured, 50) * 1e6, percentile(measured, 99) * 1e6
            ref50, ref99 = percentile(reference, 50) * 1e6, percentile(reference, 99) * 1e6
            emit(
                {
                    "bench": "http_api",
                    "case": "sse-fan-out",
                    "clients": clients,
                    "tasks": rounds,
                    "events_per_client": rounds,
                    "p50_us": rounded(p50, 1),
                    "p99_us": rounded(p99, 1),
                    "reference_p50_us": rounded(ref50, 1),
                    "reference_p99_us": rounded(ref99, 1),
                    "ratio_p50": rounded(p50 / ref50, 2),
                    "ratio_p99": rounded(p99 / ref99, 2),
                    "meets_target": None,
                }
            )


def main() -> None:
    args = parser(__doc__).parse_args()
    if args.quick:
        anyio.run(measure, 200, 5, [1, 5])
    else:
        anyio.run(measure, 2000, 50, [1, 10, 50])


if __name__ == "__main__":
    main()
