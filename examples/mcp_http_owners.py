"""MCP over streamable HTTP for two users: bearer tokens name the owners of MCP tasks.

`create_mcp_server(bus, owner=owner_from_token)` maps each request's
``Authorization: Bearer ...`` header to an owner, so the server may listen beyond
loopback (without a hook it serves only local clients). Tasks belong to the
owner, not to the connection: a client that reconnects reads its task back.

Run: ``.venv/bin/python examples/mcp_http_owners.py`` serves on
http://127.0.0.1:8000/mcp (tokens ``alice-secret`` and ``bob-secret``).
``.venv/bin/python examples/mcp_http_owners.py --demo`` starts the server in-process
on a free loopback port, and with the MCP SDK's client at 2026-07-28, declaring
the tasks extension (``io.modelcontextprotocol/tasks``): alice submits a report,
gets a task handle at once and polls ``tasks/get`` (printing each status message);
a new connection as alice reads the result back; bob asking for alice's task gets
the same error as for an unknown id; a request without a token is refused. Needs
``pip install 'taskbus[mcp,http]'``. A real server keeps its tokens out of the
source and serves HTTPS.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import uvicorn
from mcp import Client
from mcp.client.extension import advertise
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolRequest, CallToolRequestParams, Request, RequestParams
from pydantic import BaseModel, ConfigDict

from taskbus import TaskBus, TaskContext
from taskbus.integrations.mcp import create_mcp_server

TOKENS = {"alice-secret": "alice", "bob-secret": "bob"}
TASKS = "io.modelcontextprotocol/tasks"

bus = TaskBus(workers=2, progress_interval=0.05)


class ReportRequest(BaseModel):
    year: int


@bus.task("reports:build", description="Build a yearly report")
async def build(ctx: TaskContext, request: ReportRequest) -> str:
    for percent in (25, 50, 75):
        await ctx.progress(percent, f"page {percent // 25} of 3")
        await anyio.sleep(0.1)
    return f"report {request.year}: 3 pages"


def owner_from_token(ctx: Context[Any, Any]) -> str | None:
    """The owner of a request's tasks: the user its bearer token names (None: refused)."""
    scheme, _, token = (ctx.headers or {}).get("authorization", "").partition(" ")
    return TOKENS.get(token) if scheme.lower() == "bearer" else None


def make_server() -> MCPServer[Any]:
    return create_mcp_server(bus, name="reports", owner=owner_from_token, poll_interval=0.1)


# -- the demo client -----------------------------------------------------------------


class TaskId(RequestParams):
    task_id: str


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")


@asynccontextmanager
async def connect(url: str, token: str | None) -> AsyncIterator[Client]:
    """The SDK's client at 2026-07-28, declaring the tasks extension, with a token."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers) as http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode="2026-07-28", extensions=[advertise(TASKS)]) as client:
            yield client


async def submit(client: Client, **arguments: Any) -> dict[str, Any]:
    params = CallToolRequestParams(name="submit_task", arguments=arguments)
    answer = await client.session.send_request(CallToolRequest(params=params), Answer)
    return answer.model_dump(by_alias=True)


async def get_task(client: Client, task_id: str) -> dict[str, Any]:
    request: Request[Any, Any] = Request(method="tasks/get", params=TaskId(task_id=task_id))
    return (await client.session.send_request(request, Answer)).model_dump(by_alias=True)


async def demo() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    app = make_server().streamable_http_app()
    http = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    async with bus, anyio.create_task_group() as tg:
        tg.start_soon(lambda: http.serve(sockets=[sock]))
        async with connect(url, "alice-secret") as alice:
            handle = await submit(alice, type="reports:build", input={"year": 2025})
            print(f"alice: {handle['resultType']} {handle['status']}, polling tasks/get")
            task_id = handle["taskId"]
            seen = set()
            with anyio.fail_after(10):
                while (task := await get_task(alice, task_id))["status"] == "working":
                    if task.get("statusMessage") not in seen:
                        seen.add(task.get("statusMessage"))
                        print(f"  working: {task.get('statusMessage')}")
                    await anyio.sleep(task["pollIntervalMs"] / 1000)
        async with connect(url, "alice-secret") as alice:  # a new connection
            again = await get_task(alice, task_id)
            result = again["result"]["structuredContent"]["result"]
            print(f"alice, reconnected: {again['status']}: {result}")
        async with connect(url, "bob-secret") as bob:
            for asked in (task_id, "0" * 32):
                try:
                    await get_task(bob, asked)
                except MCPError as exc:
                    print(f"bob asks for {'alice' if asked == task_id else 'no one'}'s task: "
                          f"{exc.error.message.replace(asked, '<id>')}")  # fmt: skip
        async with connect(url, None) as nobody:
            refused = await submit(nobody, type="reports:build", input={"year": 2025})
            print(f"no token: {refused['content'][0]['text']}")
        http.should_exit = True


def main() -> None:
    logging.basicConfig(level=logging.WARNING)  # before the MCP SDK sets up INFO logging
    if "--demo" in sys.argv[1:]:
        anyio.run(demo)
        return

    async def serve() -> None:
        async with bus:
            await make_server().run_streamable_http_async()

    anyio.run(serve)


if __name__ == "__main__":
    main()
