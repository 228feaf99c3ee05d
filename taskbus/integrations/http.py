"""A `TaskBus` served over HTTP (starlette), from the ``http`` extra.

``create_app(bus)`` returns a Starlette app: ``POST /tasks`` (202 and the id at
once), ``GET /tasks/{id}``, ``DELETE /tasks/{id}``, ``GET /tasks`` (paged),
``GET /stats``, ``GET /types``, ``GET /healthz``, ``GET /events`` (server-sent
events, filterable and resumable with ``Last-Event-ID``) and ``GET /`` (the
dashboard page). Every non-2xx answer is
``{"error": {"code": str, "message": str, "details": any}}``.

``manage_bus=True`` runs ``async with bus:`` in the app's lifespan (what
``taskbus serve`` does); by default the bus is yours to run, so the app can be
mounted in your own app: ``Mount("/jobs", app=create_app(bus))``. Urls in
answers (``url``, ``Location``) are relative to the mount.

With `auth` (a hook mapping a request to its owner, or None for 401) or
`tokens` (``{"token": "owner"}``, bearer tokens), an owner sees, cancels and
streams only their own tasks: another owner's task id gets the same 404 as an
unknown one. With neither, the API is single-user and shows everything.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

try:
    from sse_starlette import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect, Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "taskbus.integrations.http needs the http extra: pip install 'taskbus[http]'"
    ) from exc

from .._errors import (
    BusNotRunning,
    InvalidSubmission,
    InvalidTaskInput,
    TaskNotFound,
    UnknownTaskType,
)
from .._events import Event, TaskEvent
from .._snapshot import TaskSnapshot
from .._states import TaskState
from .._taskbus import TaskBus
from ._http_auth import AuthHook, bearer_tokens, resolve_owner
from ._sse_history import EventHistory

__all__ = ["AuthHook", "create_app", "serving"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
DASHBOARD = STATIC_DIR / "dashboard.html"
#: Seconds between SSE keep-alive comments, and the most a send may take.
PING_INTERVAL = 15.0
SEND_TIMEOUT = 30.0
#: Each SSE client may fall this many events behind (at least the history).
MIN_CLIENT_BUFFER = 1000


class ApiError(Exception):
    """Raised by a handler to answer a non-2xx status in the error shape."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class _SubmitBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: str
    input: Any = None
    priority: int | None = None
    metadata: dict[str, Any] | None = None
    delay: float | None = None
    key: str | None = None


def error_response(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _not_found(task_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no task with id {task_id!r}")


def _snapshot_json(snapshot: TaskSnapshot) -> dict[str, Any]:
    return snapshot.model_dump(mode="json", fallback=repr)


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        offset = int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad_request", f"invalid cursor {cursor!r}") from None
    if offset < 0:
        raise ApiError(400, "bad_request", f"invalid cursor {cursor!r}")
    return offset


def _int_param(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise ApiError(400, "bad_request", f"{name} must be an integer in {low}..{high}")
    return number


class _Api:
    """The route handlers, over one bus, auth hook and event history."""

    def __init__(
        self, bus: TaskBus, auth: AuthHook | None, max_body: int, history: EventHistory
    ) -> None:
        self.bus = bus
        self.auth = auth
        self.max_body = max_body
        self.history = history

    async def owner(self, request: Request) -> str | None:
        """The caller's owner (None when the API is single-user); 401 if unknown."""
        if self.auth is None:
            return None
        owner = await resolve_owner(self.auth, request)
        if owner is None:
            raise ApiError(401, "unauthorized", "missing or unknown bearer token")
        return owner

    async def visible(self, task_id: str, owner: str | None) -> TaskSnapshot:
        try:
            snapshot = await self.bus.get(task_id)
        except TaskNotFound:
            raise _not_found(task_id) from None
        if self.auth is not None and snapshot.owner != owner:
            raise _not_found(task_id)
        return snapshot

    async def read_json(self, request: Request) -> Any:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise self.too_large()
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > self.max_body:
                    raise self.too_large()
        except ClientDisconnect:
            raise ApiError(400, "bad_request", "the client went away mid-body") from None
        try:
            return json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(400, "bad_request", f"malformed JSON body: {exc}") from None

    def too_large(self) -> ApiError:
        return ApiError(413, "payload_too_large", f"request body over {self.max_body} bytes", None)

    # -- routes --------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        owner = await self.owner(request)
        payload = await self.read_json(request)
        try:
            body = _SubmitBody.model_validate(payload)
        except ValidationError as exc:
            details = json.loads(exc.json(include_url=False, include_input=False))
            raise ApiError(400, "bad_request", "invalid submission", details) from None
        try:
            handle = await self.bus.submit(
                body.type,
                body.input,
                priority=body.priority,
                owner=owner,
                metadata=body.metadata,
                delay=body.delay,
                key=body.key,
            )
        except UnknownTaskType as exc:
            raise ApiError(404, "unknown_task_type", str(exc)) from None
        except InvalidTaskInput as exc:
            details = json.loads(exc.json(include_url=False))
            raise ApiError(422, "invalid_input", exc.title, details) from None
        except InvalidSubmission as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        except BusNotRunning as exc:
            raise ApiError(503, "bus_not_running", str(exc)) from None
        url = f"/tasks/{handle.id}"
        return JSONResponse(
            {"id": handle.id, "type": handle.type, "state": "queued", "url": url},
            status_code=202,
            headers={"Location": url},
        )

    async def get_task(self, request: Request) -> Response:
        owner = await self.owner(request)
        snapshot = await self.visible(request.path_params["task_id"], owner)
        return JSONResponse(_snapshot_json(snapshot))

    async def cancel_task(self, request: Request) -> Response:
        owner = await self.owner(request)
        task_id = request.path_params["task_id"]
        await self.visible(task_id, owner)
        reason = request.query_params.get("reason") or "cancelled over HTTP"
        cancelled = await self.bus.cancel(task_id, reason=reason[:500])
        snapshot = await self.bus.get(task_id)
        return JSONResponse({"id": task_id, "cancelled": cancelled, "state": snapshot.state.value})

    async def list_tasks(self, request: Request) -> Response:
        caller = await self.owner(request)
        params = request.query_params
        state = params.get("state") or None
        if state is not None and state not in TaskState._value2member_map_:
            known = ", ".join(s.value for s in TaskState)
            raise ApiError(400, "bad_request", f"unknown state {state!r}; known: {known}")
        limit = _int_param(params.get("limit"), "limit", 50, 1, 500)
        cursor = params.get("cursor")
        offset = _decode_cursor(cursor) if cursor else 0
        owner = params.get("owner") or None
        if self.auth is not None:
            if owner is not None and owner != caller:
                return JSONResponse({"items": [], "next_cursor": None})
            owner = caller
        found = await self.bus.list(
            state=state,
            owner=owner,
            type_prefix=params.get("type") or None,
            limit=limit + 1,
            offset=offset,
        )
        more = len(found) > limit
        return JSONResponse(
            {
                "items": [_snapshot_json(snapshot) for snapshot in found[:limit]],
                "next_cursor": _encode_cursor(offset + limit) if more else None,
            }
        )

    async def stats(self, request: Request) -> Response:
        owner = await self.owner(request)
        if self.auth is None:
            stats = await self.bus.stats()
            return JSONResponse(stats.model_dump(mode="json", include={"by_state", "by_type"}))
        by_state: dict[str, int] = {}
        by_type: dict[str, dict[str, int]] = {}
        offset, page = 0, 10_000
        while True:
            found = await self.bus.list(owner=owner, limit=page, offset=offset)
            for snapshot in found:
                state = snapshot.state.value
                by_state[state] = by_state.get(state, 0) + 1
                counts = by_type.setdefault(snapshot.type, {})
                counts[state] = counts.get(state, 0) + 1
            if len(found) < page:
                break
            offset += page
        return JSONResponse({"by_state": by_state, "by_type": by_type})

    async def types(self, request: Request) -> Response:
        await self.owner(request)
        return JSONResponse(
            [
                {
                    "name": definition.name,
                    "description": definition.description,
                    "input_schema": definition.input_schema(),
                    "timeout": definition.timeout,
                    "priority": definition.priority,
                    "concurrency": definition.concurrency,
                }
                for definition in self.bus.registry.definitions()
            ]
        )

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "bus_running": self.bus.running})

    async def events(self, request: Request) -> Response:
        owner = await self.owner(request)
        params = request.query_params
        task_id = params.get("task_id") or None
        type_prefix = params.get("type") or None
        raw_last = request.headers.get("last-event-id") or params.get("last_event_id")
        after: int | None = None
        if raw_last:
            try:
                after = int(raw_last)
            except ValueError:
                raise ApiError(400, "bad_request", f"invalid Last-Event-ID {raw_last!r}") from None
        if task_id is not None:
            await self.visible(task_id, owner)
        accept = self._filter(task_id, type_prefix, owner)
        # Without Last-Event-ID, a one-task stream first replays what the history
        # holds of that task, so a watcher that connects after submit misses nothing.
        stream = self.history.open(accept, after=after, replay=accept if task_id else None)
        return EventSourceResponse(
            stream.frames(),
            ping=PING_INTERVAL,
            send_timeout=SEND_TIMEOUT,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    def _filter(self, task_id: str | None, type_prefix: str | None, owner: str | None) -> Any:
        with_auth = self.auth is not None
        batches = not with_auth and task_id is None and type_prefix is None

        def accept(event: Event) -> bool:
            if not isinstance(event, TaskEvent):
                return batches
            return (
                (task_id is None or event.task_id == task_id)
                and (type_prefix is None or event.task_type.startswith(type_prefix))
                and (not with_auth or event.owner == owner)
            )

        return accept

    async def dashboard(self, request: Request) -> Response:
        if not DASHBOARD.is_file():
            raise ApiError(404, "not_found", "the dashboard page is not installed")
        return FileResponse(DASHBOARD, media_type="text/html")


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(exc.status_code, codes.get(exc.status_code, "http_error"), exc.detail)


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(500, "internal_error", "internal server error")


def create_app(
    bus: TaskBus,
    *,
    auth: AuthHook | None = None,
    tokens: Mapping[str, str] | None = None,
    max_body: int = 1_048_576,
    event_history: int = 10_000,
    manage_bus: bool = False,
    dashboard: bool = True,
) -> Starlette:
    """The HTTP API (and dashboard) over `bus`, as a Starlette app (see the module doc)."""
    if auth is not None and tokens is not None:
        raise ValueError("give auth or tokens, not both")
    if tokens is not None:
        auth = bearer_tokens(tokens)
    if max_body < 1:
        raise ValueError(f"max_body must be positive, not {max_body}")
    history = EventHistory(event_history, client_limit=max(event_history, MIN_CLIENT_BUFFER))
    bus.on("*", history)
    api = _Api(bus, auth, max_body, history)
    routes: list[Route | Mount] = [
        Route("/tasks", api.submit, methods=["POST"]),
        Route("/tasks", api.list_tasks, methods=["GET"]),
        Route("/tasks/{task_id}", api.get_task, methods=["GET"]),
        Route("/tasks/{task_id}", api.cancel_task, methods=["DELETE"]),
        Route("/stats", api.stats, methods=["GET"]),
        Route("/types", api.types, methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/events", api.events, methods=["GET"]),
    ]
    if dashboard:
        routes.append(Route("/", api.dashboard, methods=["GET"]))
        routes.append(Mount("/static", app=StaticFiles(directory=STATIC_DIR, check_dir=False)))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_bus:
            async with bus:
                yield
        else:
            yield

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
    )


@asynccontextmanager
async def serving(app: Any, *, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve `app` with uvicorn in the current event loop; yield its base URL.

    Port 0 picks a free one. For examples, tests and embedding in an async program;
    `taskbus serve` is the command-line way. Stops the server on the way out.
    """
    import anyio
    import uvicorn

    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:
                if server.should_exit:
                    raise RuntimeError("uvicorn did not start")
                await anyio.sleep(0.005)
        bound = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield f"http://{host}:{bound}"
        finally:
            server.should_exit = True
