"""Call an ASGI app with raw bytes: any method, path, query string, header or body.

httpx refuses to send much of what a fuzzer wants (odd header bytes, lone
surrogates in a path), and its ASGI transport waits for a streamed answer to
end. `call` builds the scope itself, delivers the body, records the answer and,
once the status line is out, tells the app the client left, so an event stream
ends at once. An exception the app lets escape is kept on the answer.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.types import ASGIApp


@dataclass
class Answer:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    raised: BaseException | None = None

    def json(self) -> Any:
        return json.loads(self.body)

    def describe(self) -> str:
        return f"{self.status} {self.body[:300]!r} raised={self.raised!r}"


async def call(
    app: ASGIApp,
    method: str,
    path: str,
    *,
    query: bytes = b"",
    headers: Sequence[tuple[bytes, bytes]] = (),
    body: bytes = b"",
    timeout: float = 10,
) -> Answer:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogatepass"),
        "root_path": "",
        "query_string": query,
        "headers": [(name.lower(), value) for name, value in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    answer = Answer()
    started = anyio.Event()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await started.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = dict(message.get("headers", []))
            started.set()
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    with anyio.fail_after(timeout):
        try:
            await app(scope, receive, send)
        except Exception as exc:  # noqa: BLE001 - kept for the test to report
            answer.raised = exc
    return answer
