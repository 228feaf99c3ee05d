"""Fixtures for the HTTP API tests: a real uvicorn server on loopback.

These tests run on asyncio only (``anyio_backend`` is overridden here):
uvicorn serves on asyncio, and the server, the bus and the httpx clients share
the test's event loop. As in the rest of the suite, the bus and the server are
opened *inside* the test body (``async with make_bus() as bus, serve(app) as
client:``), never held across a fixture's ``yield``. `serve` binds port 0 on
127.0.0.1, waits for ``server.started`` and stops the server on the way out.
`asgi_client` calls an app in-process through httpx's ASGI transport (for answers
that end; an event stream needs `serve`, or `_asgi.call` for its status alone).
`sse` reads a server-sent-event stream with a tiny parser of its own, so the
tests check the bytes on the wire rather than a client library's view of them.
Every wait is bounded (``anyio.fail_after``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

from taskbus.integrations.http import serving

#: Run an app under uvicorn on a free loopback port (the library's own helper).
serve = serving


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def client_for(base_url: str, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=10) as client:
        yield client


@asynccontextmanager
async def asgi_client(app: Any, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client calling `app` in-process; an exception the app lets escape raises."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=headers, timeout=10
    ) as client:
        yield client


@dataclass(frozen=True)
class SSEMessage:
    id: str | None
    event: str | None
    data: str

    @property
    def json(self) -> Any:
        return json.loads(self.data)


class SSEReader:
    """The messages of one open event stream, read with `next()`."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 5) -> SSEMessage:
        fields: dict[str, list[str]] = {}
        with anyio.fail_after(timeout):
            async for line in self._lines:
                if not line:
                    if "data" in fields:
                        return SSEMessage(
                            id=fields.get("id", [None])[-1],
                            event=fields.get("event", [None])[-1],
                            data="\n".join(fields["data"]),
                        )
                    fields.clear()
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                fields.setdefault(name, []).append(value.removeprefix(" "))
        raise EOFError("the event stream ended")

    async def take(self, count: int, timeout: float = 5) -> list[SSEMessage]:
        with anyio.fail_after(timeout):
            return [await self.next() for _ in range(count)]


@asynccontextmanager
async def sse(
    client: httpx.AsyncClient,
    path: str = "/events",
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[SSEReader]:
    """Open an event stream; on entry the server has registered it (headers are in)."""
    async with client.stream("GET", path, params=params, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SSEReader(response)
