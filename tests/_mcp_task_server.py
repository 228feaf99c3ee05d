"""An MCP server with a few task types, run as a subprocess by tests/test_mcp_tasks.py.

``python tests/_mcp_task_server.py --store URL`` serves over stdio;
``--http`` serves streamable HTTP on a free loopback port instead and prints
that port on its first line. Task types: ``math:double`` ({"n": int}),
``math:gated`` ({"path": str}: reports 40% and then waits until that file
exists, or until cancelled) and ``math:broken`` (fails with a user-actionable
error).
"""

from __future__ import annotations

import argparse
import socket

import anyio
from pydantic import BaseModel

from taskbus import TaskBus, TaskContext, UserActionableError
from taskbus.integrations.mcp import create_mcp_server

POLL_INTERVAL = 0.05


class Numbers(BaseModel):
    n: int


class Gated(BaseModel):
    path: str


def build(store: str) -> TaskBus:
    bus = TaskBus(store=store, workers=2, shutdown_grace=1.0)

    @bus.task("math:double", description="Double a number")
    async def double(ctx: TaskContext, params: Numbers) -> dict[str, int]:
        return {"value": params.n * 2}

    @bus.task("math:gated", description="Wait until a file exists")
    async def gated(ctx: TaskContext, params: Gated) -> str:
        await ctx.progress(40, "waiting for the release file")
        release = anyio.Path(params.path)
        # The signal comes from another process, as a file: no event can carry it here.
        while not await release.exists():  # noqa: ASYNC110
            await anyio.sleep(0.01)
        return "released"

    @bus.task("math:broken", description="Always fails")
    async def broken(ctx: TaskContext) -> None:
        raise UserActionableError("no licence", suggested_action="buy one")

    return bus


async def serve_stdio(store: str) -> None:
    bus = build(store)
    async with bus:
        await create_mcp_server(bus, poll_interval=POLL_INTERVAL).run_stdio_async()


async def serve_http(store: str) -> None:
    import uvicorn

    bus = build(store)
    app = create_mcp_server(bus, poll_interval=POLL_INTERVAL).streamable_http_app()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen()  # connections queue from now on, before uvicorn accepts them
    print(sock.getsockname()[1], flush=True)  # noqa: T201 - the port, for the test
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    async with bus:
        await server.serve(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default="memory")
    parser.add_argument("--http", action="store_true")
    args = parser.parse_args()
    anyio.run(serve_http if args.http else serve_stdio, args.store)


if __name__ == "__main__":
    main()
