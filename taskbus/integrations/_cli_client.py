"""The HTTP side of the ``taskbus`` client commands: requests, errors, SSE parsing.

`ApiClient` talks to a running ``taskbus serve`` (the routes of
`taskbus.integrations.http`) with a synchronous httpx client, and turns every
non-2xx answer into an `ApiError` carrying the API's ``error.code`` and
``error.message``, and a refused connection into `ServerUnreachable`.
`SseParser` turns the lines of a ``text/event-stream`` into `SseMessage` objects
(the WHATWG rules the CLI needs: ``id``, ``event``, multi-line ``data``, comments
and pings ignored); `ApiClient.events` yields them as they arrive.

Needs httpx (the ``http`` extra).
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Self
from urllib.parse import quote

try:
    import httpx
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise ModuleNotFoundError(
        f"the taskbus client commands need the 'http' extra ({exc.name} is not installed); "
        "install it with: pip install 'taskbus[http]'",
        name=exc.name,
    ) from exc

__all__ = [
    "DEFAULT_URL",
    "ApiClient",
    "ApiError",
    "ClientError",
    "ServerUnreachable",
    "SseMessage",
    "SseParser",
]

DEFAULT_URL = "http://127.0.0.1:8000"


class ClientError(Exception):
    """Raised when a client command cannot get an answer from the server.

    ClientError
    ├── ServerUnreachable  (nothing listens at the URL)
    └── ApiError           (the server answered with a non-2xx status)
    """


class ServerUnreachable(ClientError):
    """Raised when nothing answers at the server URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__(f"no taskbus server at {url} (start one with `taskbus serve`)")


class ApiError(ClientError):
    """Raised when the API answers with a non-2xx status (its ``error`` body, if any)."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        super().__init__(f"{message} (HTTP {status}, {code})")

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """Read the contract's ``{"error": {"code", "message", "details"}}`` body."""
        try:
            error = response.json()["error"]
            return cls(
                response.status_code,
                str(error["code"]),
                str(error["message"]),
                error.get("details"),
            )
        except (ValueError, KeyError, TypeError):
            text = response.text.strip() or response.reason_phrase
            return cls(response.status_code, "http_error", text[:300])


@dataclass(frozen=True)
class SseMessage:
    """One dispatched server-sent event."""

    event: str
    data: str
    id: str | None = None


@dataclass
class SseParser:
    """Feed it lines of an event stream; it returns a message at each blank line."""

    last_id: str | None = None
    _event: str = ""
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> SseMessage | None:
        line = line.rstrip("\r\n")
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: keep-alive pings
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_id = value
        return None  # "retry" and unknown fields are ignored

    def _dispatch(self) -> SseMessage | None:
        data, event = self._data, self._event or "message"
        self._data, self._event = [], ""
        if not data:
            return None
        return SseMessage(event=event, data="\n".join(data), id=self.last_id)


class ApiClient:
    """A synchronous client of the taskbus HTTP API."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServerUnreachable(self.url) from exc
        if response.is_error:
            raise ApiError.from_response(response)
        return None if response.status_code == 204 else response.json()

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/healthz")
        return result

    def submit(
        self,
        task_type: str,
        input: Any = None,
        *,
        priority: int | None = None,
        key: str | None = None,
        after: list[str] | None = None,
        on_parent_failure: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"type": task_type, "input": input}
        if priority is not None:
            body["priority"] = priority
        if key is not None:
            body["key"] = key
        if after:
            body["after"] = after
        if on_parent_failure is not None:
            body["on_parent_failure"] = on_parent_failure
        result: dict[str, Any] = self._call("POST", "/tasks", json=body)
        return result

    def retry(
        self,
        task_id: str,
        *,
        priority: int | None = None,
        delay: float | None = None,
        key: str | None = None,
    ) -> dict[str, Any]:
        """``POST /tasks/{id}/retry``: the new task (id, type, state, url)."""
        options = {"priority": priority, "delay": delay, "key": key}
        body = {name: value for name, value in options.items() if value is not None}
        path = f"/tasks/{quote(task_id, safe='')}/retry"
        result: dict[str, Any] = self._call("POST", path, json=body)
        return result

    def get(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/tasks/{task_id}")
        return result

    def cancel(self, task_id: str, reason: str | None = None) -> dict[str, Any]:
        params = {"reason": reason} if reason else None
        result: dict[str, Any] = self._call("DELETE", f"/tasks/{task_id}", params=params)
        return result

    def respond(self, task_id: str, value: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/tasks/{task_id}/input", json={"value": value}
        )
        return result

    def list(
        self,
        *,
        state: str | None = None,
        task_type: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        newest_first: bool = False,
        dead_letter: bool = False,
    ) -> dict[str, Any]:
        query = {
            "state": state,
            "type": task_type,
            "limit": limit,
            "cursor": cursor,
            "order": "newest" if newest_first else None,
            "dead_letter": "true" if dead_letter else None,
        }
        params = {name: value for name, value in query.items() if value is not None}
        result: dict[str, Any] = self._call("GET", "/tasks", params=params)
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/stats")
        return result

    def types(self) -> builtins.list[dict[str, Any]]:
        result: builtins.list[dict[str, Any]] = self._call("GET", "/types")
        return result

    def schedules(self, *, owner: str | None = None) -> builtins.list[dict[str, Any]]:
        params = {"owner": owner} if owner else None
        result: builtins.list[dict[str, Any]] = self._call("GET", "/schedules", params=params)[
            "items"
        ]
        return result

    def store_schedule(self, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /schedules``: `body` holds the keywords of `TaskBus.schedule`."""
        result: dict[str, Any] = self._call("POST", "/schedules", json=body)
        return result

    def schedule_action(self, schedule_id: str, action: str) -> dict[str, Any] | None:
        """``pause`` or ``resume`` a schedule (POST), or ``remove`` it (DELETE)."""
        path = f"/schedules/{quote(schedule_id, safe='/:')}"
        if action == "remove":
            self._call("DELETE", path)
            return None
        result: dict[str, Any] = self._call("POST", f"{path}/{action}")
        return result

    def events(
        self, *, task_id: str | None = None, last_event_id: str | None = None
    ) -> Iterator[SseMessage]:
        """Yield the messages of ``GET /events`` as they arrive, until the server ends it."""
        params = {"task_id": task_id} if task_id else {}
        headers = {"Last-Event-ID": last_event_id} if last_event_id is not None else {}
        timeout = httpx.Timeout(self._http.timeout.connect, read=None)
        parser = SseParser(last_id=last_event_id)
        try:
            with self._http.stream(
                "GET", "/events", params=params, headers=headers, timeout=timeout
            ) as response:
                if response.is_error:
                    response.read()
                    raise ApiError.from_response(response)
                for line in response.iter_lines():
                    message = parser.feed(line)
                    if message is not None:
                        yield message
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise ServerUnreachable(self.url) from exc
