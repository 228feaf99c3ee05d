"""A `TaskBus` served over HTTP (starlette), from the ``http`` extra.

``create_app(bus)`` returns a Starlette app: ``POST /tasks`` (202 and the id at
once), ``GET /tasks/{id}``, ``DELETE /tasks/{id}``, ``POST /tasks/{id}/retry``
(a failed or cancelled task again, as a new task: 202, or 409 for one that
cannot be), ``POST /tasks/{id}/input`` (answer a task waiting for input: 409 if
it waits for none, 422 for an answer that does not fit), ``GET /tasks`` (paged;
``dead_letter=true``: failed tasks only),
``GET /stats``, ``GET /stats/history`` (the last ten minutes of throughput, failures
and queue depth, one point per `stats_interval`), ``GET /types``, ``GET /me``, ``GET /healthz``, ``GET /events`` (server-sent
events, filterable and resumable with ``Last-Event-ID``; with ``task_id`` it
ends after that task's final event), ``GET /openapi.json`` (the OpenAPI 3.1
document, built from the models in `_http_models` and the registered types by
`_openapi`) and ``GET /`` (the dashboard page). Every non-2xx answer is
``{"error": {"code": str, "message": str, "details": any}}``; what a client
sends is checked in `_http_input` and answers 4xx, never 5xx. A method a path
does not serve is a 405 with ``Allow``; ``/healthz`` is a 503 while the bus is
not running. CORS is off unless ``cors_origins=`` names the origins to allow.

``manage_bus=True`` runs ``async with bus:`` in the app's lifespan (what
``taskbus serve`` does); by default the bus is yours to run, so the app can be
mounted in your own app: ``Mount("/jobs", app=create_app(bus))``. Urls in
answers (``url``, ``Location``) are relative to the mount.

With `auth` (a hook mapping a request to its owner or an `Identity`, or None
for 401) or `tokens` (``{"token": "owner"}``, an `Identity` as a value too;
bearer tokens; ``?access_token=`` only on ``GET /events``), an owner sees,
cancels and streams only their own tasks: another owner's task id gets the same
404 as an unknown one, after the same time (every 404 for an id waits until
`NOT_FOUND_FLOOR` after its lookup began). An administrator
(``Identity(owner=..., admin=True)``) lists, reads, cancels and streams every
owner's tasks. With neither, the API is single-user and shows everything.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

try:
    from sse_starlette import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "taskbus.integrations.http needs the http extra: pip install 'taskbus[http]'"
    ) from exc

from .. import (
    BusNotRunning,
    Event,
    InvalidAnswer,
    InvalidSubmission,
    InvalidTaskInput,
    TaskBus,
    TaskEvent,
    TaskNotFound,
    TaskNotRetryable,
    TaskNotWaiting,
    TaskSnapshot,
    TaskState,
    UnknownTaskType,
    event_order,
)
from ._http_auth import AuthHook, Identity, allow_query_token, bearer_tokens, resolve_identity
from ._http_cors import cors_middleware
from ._http_errors import (
    EXCEPTION_HANDLERS,
    ApiError,
    JsonAnswer,
    echo,
    error_response,
    pydantic_details,
)
from ._http_history import DEFAULT_STATS_INTERVAL, HistoryRoute, StatsHistory
from ._http_input import (
    MAX_NAME_LENGTH,
    decode_cursor,
    encode_cursor,
    int_param,
    last_event_id,
    read_answer,
    read_retry,
    read_submission,
    valid_task_id,
)
from ._http_json import model_json
from ._http_metrics import MetricsRoute, app_metrics
from ._http_models import (
    CallerAnswer,
    CancelAnswer,
    Health,
    StatsAnswer,
    SubmitAnswer,
    TaskPage,
    TypeInfo,
)
from ._http_schedules import ScheduleRoutes
from ._openapi import openapi_document
from ._sse_history import DEFAULT_HISTORY_BYTES, EventHistory, EventStream, final_event_of

if TYPE_CHECKING:
    from .. import TaskHandle
    from ..metrics import BusMetrics

__all__ = [
    "DEFAULT_HISTORY_BYTES",
    "ApiError",
    "AuthHook",
    "Identity",
    "create_app",
    "error_response",
    "serving",
]

STATIC_DIR = Path(__file__).resolve().parent / "static"
DASHBOARD = STATIC_DIR / "dashboard.html"
#: Seconds between SSE keep-alive comments, and the most a send may take.
PING_INTERVAL = 15.0
SEND_TIMEOUT = 30.0
#: Seconds an event stream gets to end by itself when the server stops.
SHUTDOWN_GRACE = 1.0
#: Each SSE client may fall this many events behind (at least the history).
MIN_CLIENT_BUFFER = 1000
#: With owners, a 404 for a task id is answered no sooner than this many seconds
#: after its lookup began, so an unknown id and another owner's id take as long.
NOT_FOUND_FLOOR = 0.002
#: Timers may fire up to this late (epoll counts whole milliseconds, rounded up).
TIMER_SLACK = 0.0015
MAX_REASON = 500

Endpoint = Callable[[Request], Awaitable[Response]]


def _route(path: str, **handlers: Endpoint) -> Route:
    """One route for every method a path serves, so a 405 lists them all in ``Allow``."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, endpoint, methods=list(handlers))


def _json(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _not_found(task_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no task with id {echo(task_id)}")


def _same_owner(mine: str | None, theirs: str | None) -> bool:
    """Owner equality in time that depends on neither value."""
    same = hmac.compare_digest(
        (mine or "").encode("utf-8", "surrogatepass"),
        (theirs or "").encode("utf-8", "surrogatepass"),
    )
    return same and (mine is None) == (theirs is None)


async def _wait_until(deadline: float) -> None:
    """Sleep until `deadline` on the dot: a timer alone wakes up late by an amount
    that depends on when the sleep began, which would tell how long the lookup took."""
    await anyio.sleep_until(deadline - TIMER_SLACK)
    while anyio.current_time() < deadline:  # the last stretch: checkpoints, on time
        await anyio.lowlevel.checkpoint()


def _text_param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and len(value) > MAX_NAME_LENGTH:
        raise ApiError(400, "bad_request", f"{name} is longer than {MAX_NAME_LENGTH} characters")
    return value


def _flag_param(request: Request, name: str) -> bool:
    value = request.query_params.get(name) or "false"
    if value not in ("true", "false"):
        raise ApiError(400, "bad_request", f"{name} takes true or false, not {echo(value)}")
    return value == "true"


class _Api:
    """The route handlers, over one bus, auth hook and event history."""

    def __init__(
        self,
        bus: TaskBus,
        auth: AuthHook | None,
        max_body: int,
        history: EventHistory,
        dashboard: bool,
        metrics: bool = False,
    ) -> None:
        self.bus = bus
        self.with_metrics = metrics
        self.auth = auth
        self.max_body = max_body
        self.history = history
        self.with_dashboard = dashboard

    async def caller(self, request: Request) -> Identity | None:
        """Who is asking (None when the API is single-user); 401 if unknown."""
        if self.auth is None:
            return None
        identity = await resolve_identity(self.auth, request)
        if identity is None:
            raise ApiError(401, "unauthorized", "missing or unknown bearer token")
        return identity

    @staticmethod
    def sees_all(caller: Identity | None) -> bool:
        """Single-user, or an administrator: every owner's tasks."""
        return caller is None or caller.admin

    async def visible(self, task_id: str, caller: Identity | None) -> TaskSnapshot:
        """The caller's task; 404 for an unknown id and for another owner's, alike."""
        deadline = anyio.current_time() + NOT_FOUND_FLOOR
        snapshot: TaskSnapshot | None = None
        if valid_task_id(task_id):
            try:
                snapshot = await self.bus.get(task_id)
            except TaskNotFound:
                snapshot = None
        if caller is None or caller.admin:
            if snapshot is None:
                raise _not_found(task_id)
            return snapshot
        mine = snapshot is not None and _same_owner(snapshot.owner, caller.owner)
        if snapshot is None or not mine:
            await _wait_until(deadline)
            raise _not_found(task_id)
        return snapshot

    # -- routes --------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        caller = await self.caller(request)
        owner = None if caller is None else caller.owner
        body = await read_submission(request, self.max_body)
        try:
            handle = await self.bus.submit(
                body.type,
                body.input,
                priority=body.priority,
                owner=owner,
                metadata=body.metadata,
                delay=body.delay,
                run_at=body.run_at,
                key=body.key,
                after=body.after,
                on_parent_failure=body.on_parent_failure,
            )
        except UnknownTaskType as exc:
            raise ApiError(404, "unknown_task_type", str(exc)) from None
        except (InvalidTaskInput, InvalidSubmission, BusNotRunning) as exc:
            raise _submission_error(exc) from None
        return _accepted(handle)

    async def retry_task(self, request: Request) -> Response:
        caller = await self.caller(request)
        task_id = request.path_params["task_id"]
        await self.visible(task_id, caller)
        body = await read_retry(request, self.max_body)
        try:
            handle = await self.bus.retry(
                task_id, priority=body.priority, delay=body.delay, run_at=body.run_at, key=body.key
            )
        except TaskNotFound:  # purged meanwhile
            raise _not_found(task_id) from None
        except TaskNotRetryable as exc:
            raise ApiError(409, "not_retryable", str(exc), {"state": exc.state}) from None
        except UnknownTaskType as exc:
            raise ApiError(409, "unknown_task_type", str(exc)) from None
        except (InvalidTaskInput, InvalidSubmission, BusNotRunning) as exc:
            raise _submission_error(exc) from None
        return _accepted(handle)

    async def get_task(self, request: Request) -> Response:
        caller = await self.caller(request)
        snapshot = await self.visible(request.path_params["task_id"], caller)
        return _json(model_json(snapshot))

    async def cancel_task(self, request: Request) -> Response:
        caller = await self.caller(request)
        task_id = request.path_params["task_id"]
        await self.visible(task_id, caller)
        reason = request.query_params.get("reason") or "cancelled over HTTP"
        try:
            cancelled = await self.bus.cancel(task_id, reason=reason[:MAX_REASON])
            snapshot = await self.bus.get(task_id)
        except TaskNotFound:  # purged meanwhile
            raise _not_found(task_id) from None
        except InvalidSubmission as exc:
            raise ApiError(422, "invalid_submission", str(exc)) from None
        answer = CancelAnswer(id=task_id, cancelled=cancelled, state=snapshot.state)
        return _json(model_json(answer))

    async def answer_task(self, request: Request) -> Response:
        caller = await self.caller(request)
        task_id = request.path_params["task_id"]
        await self.visible(task_id, caller)
        body = await read_answer(request, self.max_body)
        try:
            snapshot = await self.bus.respond(task_id, body.value)
        except TaskNotFound:  # purged meanwhile
            raise _not_found(task_id) from None
        except TaskNotWaiting as exc:
            raise ApiError(409, "not_waiting", str(exc), {"state": exc.state}) from None
        except InvalidAnswer as exc:
            details = [{**error, "loc": list(error.get("loc", ()))} for error in exc.errors]
            raise ApiError(422, "invalid_answer", str(exc), details) from None
        return _json(model_json(snapshot))

    async def list_tasks(self, request: Request) -> Response:
        caller = await self.caller(request)
        params = request.query_params
        state = params.get("state") or None
        if state is not None and state not in TaskState._value2member_map_:
            known = ", ".join(s.value for s in TaskState)
            raise ApiError(400, "bad_request", f"unknown state {echo(state)}; known: {known}")
        limit = int_param(params.get("limit"), "limit", 50, 1, 500)
        cursor = params.get("cursor")
        offset = decode_cursor(cursor) if cursor else 0
        owner = _text_param(request, "owner")
        type_prefix = _text_param(request, "type")
        dead_letter = _flag_param(request, "dead_letter")
        if dead_letter and state not in (None, TaskState.FAILED.value):
            return _json(model_json(TaskPage(items=[], next_cursor=None)))
        order = params.get("order") or "oldest"
        if order not in ("oldest", "newest"):
            raise ApiError(400, "bad_request", f"order takes oldest or newest, not {echo(order)}")
        if caller is not None and not caller.admin:
            if owner is not None and owner != caller.owner:
                return _json(model_json(TaskPage(items=[], next_cursor=None)))
            owner = caller.owner
        try:
            found = await self.bus.list(
                state=state,
                owner=owner,
                type_prefix=type_prefix,
                limit=limit + 1,
                offset=offset,
                newest_first=order == "newest",
                dead_letter=dead_letter,
            )
        except InvalidSubmission as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        more = len(found) > limit
        next_cursor = encode_cursor(offset + limit) if more else None
        return _json(
            model_json(TaskPage.model_construct(items=found[:limit], next_cursor=next_cursor))
        )

    async def stats(self, request: Request) -> Response:
        caller = await self.caller(request)
        if caller is None or caller.admin:
            stats = await self.bus.stats()
            answer = StatsAnswer(
                by_state=stats.by_state,
                by_type=stats.by_type,
                queued_by_priority=stats.queued_by_priority,
                store_outage=stats.store_outage,
            )
            return JsonAnswer(answer.model_dump(mode="json"))
        by_state: dict[str, int] = {}
        by_type: dict[str, dict[str, int]] = {}
        queued: dict[str, dict[int, int]] = {}
        offset, page = 0, 10_000
        while True:
            found = await self.bus.list(owner=caller.owner, limit=page, offset=offset)
            for snapshot in found:
                state = snapshot.state.value
                by_state[state] = by_state.get(state, 0) + 1
                counts = by_type.setdefault(snapshot.type, {})
                counts[state] = counts.get(state, 0) + 1
                if snapshot.state is TaskState.QUEUED:
                    levels = queued.setdefault(snapshot.type, {})
                    levels[snapshot.priority] = levels.get(snapshot.priority, 0) + 1
            if len(found) < page:
                break
            offset += page
        answer = StatsAnswer.model_validate(
            {"by_state": by_state, "by_type": by_type, "queued_by_priority": queued}
        )
        return JsonAnswer(answer.model_dump(mode="json"))

    async def types(self, request: Request) -> Response:
        await self.caller(request)
        return JsonAnswer(
            [
                TypeInfo(
                    name=definition.name,
                    description=definition.description,
                    input_schema=definition.input_schema(),
                    timeout=definition.timeout,
                    priority=definition.priority,
                    concurrency=definition.concurrency,
                ).model_dump(mode="json")
                for definition in self.bus.registry.definitions()
            ]
        )

    async def me(self, request: Request) -> Response:
        caller = await self.caller(request)
        if caller is None:
            answer = CallerAnswer(owner=None, admin=True)
        else:
            answer = CallerAnswer(owner=caller.owner, admin=caller.admin)
        return JsonAnswer(answer.model_dump(mode="json"))

    async def healthz(self, request: Request) -> Response:
        if not self.bus.running:
            raise ApiError(
                503, "bus_not_running", "the bus is not running (not started, or shutting down)"
            )
        return JsonAnswer(Health().model_dump(mode="json"))

    async def openapi(self, request: Request) -> Response:
        await self.caller(request)  # it lists the task types, as /types does
        document = openapi_document(
            self.bus.registry.definitions(),
            auth=self.auth is not None,
            dashboard=self.with_dashboard,
            metrics=self.with_metrics,
        )
        root = request.scope.get("root_path")
        if root:  # mounted: the paths are relative to the mount
            document["servers"] = [{"url": root}]
        return JsonAnswer(document)

    async def events(self, request: Request) -> Response:
        allow_query_token(request)
        caller = await self.caller(request)
        task_id = request.query_params.get("task_id") or None
        type_prefix = _text_param(request, "type")
        after = last_event_id(request)
        accept = self._filter(task_id, type_prefix, caller)
        older = await self._older(after)
        if task_id is None:
            return self._respond(self.history.open(accept, after=after, replay=None, older=older))
        # Registered before the lookup, so no event of the task falls in between.
        # Without Last-Event-ID it first replays what the history holds of the
        # task, so a watcher that connects after submit misses nothing.
        stream = self.history.open(
            accept, after=after, replay=accept, until_final=True, older=older
        )
        try:
            snapshot = await self.visible(task_id, caller)
            if snapshot.is_final and older is not None and not stream.finished:
                await self._resume_final(stream, task_id, after)
        except BaseException:
            stream.close()
            raise
        excluded = type_prefix is not None and not snapshot.type.startswith(type_prefix)
        if stream.final_already_sent or excluded:  # nothing (more) to send: stop
            stream.close()
            return Response(status_code=204)
        if snapshot.is_final:  # its final event may be gone from the history
            stream.put_final(final_event_of(snapshot))
        return self._respond(stream)

    async def _older(self, after: str | None) -> list[Event] | None:
        """The bus's logged events after `after` when the history does not reach
        back so far (after a restart, say); None when it does."""
        if after is None:
            return None
        oldest = self.history.oldest_seq
        if oldest is not None and oldest <= (event_order(after)[0] + 1, 0):
            return None
        return await self.bus.events_after(after, limit=self.history.client_limit)

    async def _resume_final(self, stream: EventStream, task_id: str, after: str | None) -> None:
        # A finished task resumed from the log: its final event is logged with its
        # state, so it is there, after `after`, unless the client saw it already.
        logged = await self.bus.events_after(after, limit=self.history.client_limit)
        finals = [
            e for e in logged if isinstance(e, TaskEvent) and e.final and e.task_id == task_id
        ]
        if finals:
            stream.put_older(finals)
        else:
            stream.final_already_sent = True

    def _respond(self, stream: EventStream) -> Response:
        shutdown = anyio.Event()  # sse-starlette sets it when the server stops

        async def end_at_shutdown() -> None:
            # Ending the stream lets the response complete: no "ASGI callable
            # returned without completing response" at Ctrl-C.
            await shutdown.wait()
            stream.close()

        return EventSourceResponse(
            stream.frames(),
            ping=PING_INTERVAL,
            send_timeout=SEND_TIMEOUT,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
            shutdown_event=shutdown,
            shutdown_grace_period=SHUTDOWN_GRACE,
            data_sender_callable=end_at_shutdown,
        )

    def _filter(self, task_id: str | None, type_prefix: str | None, caller: Identity | None) -> Any:
        owner = None if self.sees_all(caller) or caller is None else caller.owner
        everything = self.sees_all(caller)
        batches = everything and task_id is None and type_prefix is None

        def accept(event: Event) -> bool:
            if not isinstance(event, TaskEvent):
                return batches
            return (
                (task_id is None or event.task_id == task_id)
                and (type_prefix is None or event.task_type.startswith(type_prefix))
                and (everything or event.owner == owner)
            )

        return accept

    async def dashboard(self, request: Request) -> Response:
        if not DASHBOARD.is_file():
            raise ApiError(404, "not_found", "the dashboard page is not installed")
        return FileResponse(DASHBOARD, media_type="text/html")


def create_app(
    bus: TaskBus,
    *,
    auth: AuthHook | None = None,
    tokens: Mapping[str, str | Identity] | None = None,
    max_body: int = 1_048_576,
    event_history: int = 10_000,
    event_history_bytes: int = DEFAULT_HISTORY_BYTES,
    manage_bus: bool = False,
    dashboard: bool = True,
    cors_origins: Sequence[str] | None = None,
    metrics: BusMetrics | bool | None = None,
    stats_interval: float = DEFAULT_STATS_INTERVAL,
) -> Starlette:
    """The HTTP API (and dashboard) over `bus`, as a Starlette app (see the module doc).

    The event history keeps the last `event_history` events, and no more than
    `event_history_bytes` of them once encoded. `cors_origins` (e.g.
    ``["https://app.example"]``) lets pages from exactly those origins call the
    API from a browser; without it, no CORS header is sent.

    ``GET /metrics`` serves Prometheus figures: `metrics` given (see
    `taskbus.metrics.instrument`), or by default new ones when ``taskbus[prometheus]``
    is installed; ``metrics=False`` leaves the route out.

    ``GET /stats/history`` keeps one point every `stats_interval` seconds of the bus's
    clock, taken while the app's lifespan runs: an app mounted in another enters it
    from the host's lifespan (``async with bus, app.router.lifespan_context(app):``).
    """
    if auth is not None and tokens is not None:
        raise ValueError("give auth or tokens, not both")
    if tokens is not None:
        auth = bearer_tokens(tokens)
    if max_body < 1:
        raise ValueError(f"max_body must be positive, not {max_body}")
    middleware = cors_middleware(cors_origins) if cors_origins is not None else None
    history = EventHistory(
        event_history,
        max_bytes=event_history_bytes,
        client_limit=max(event_history, MIN_CLIENT_BUFFER),
        client_bytes=max(event_history_bytes, DEFAULT_HISTORY_BYTES),
    )
    bus.on("*", history)
    stats_history = StatsHistory(bus, stats_interval)
    served_metrics = app_metrics(bus, metrics)
    api = _Api(bus, auth, max_body, history, dashboard, served_metrics is not None)
    schedules = ScheduleRoutes(bus, api.caller, max_body)
    routes: list[Route | Mount] = [
        _route("/tasks", POST=api.submit, GET=api.list_tasks),
        _route("/tasks/{task_id}", GET=api.get_task, DELETE=api.cancel_task),
        _route("/tasks/{task_id}/retry", POST=api.retry_task),
        _route("/tasks/{task_id}/input", POST=api.answer_task),
        _route("/stats", GET=api.stats),
        _route("/stats/history", GET=HistoryRoute(stats_history, api.caller).get),
        _route("/types", GET=api.types),
        _route("/me", GET=api.me),
        _route("/healthz", GET=api.healthz),
        _route("/events", GET=api.events),
        _route("/openapi.json", GET=api.openapi),
        _route("/schedules", GET=schedules.list, POST=schedules.store),
        # Ids may hold "/" (``owner/type``): the actions first, then the id alone.
        _route("/schedules/{schedule_id:path}/pause", POST=schedules.pause),
        _route("/schedules/{schedule_id:path}/resume", POST=schedules.resume),
        _route("/schedules/{schedule_id:path}", GET=schedules.get, DELETE=schedules.remove),
    ]
    if served_metrics is not None:
        routes.append(_route("/metrics", GET=MetricsRoute(served_metrics, api.caller).get))
    if dashboard:
        routes.append(_route("/", GET=api.dashboard))
        routes.append(Mount("/static", app=StaticFiles(directory=STATIC_DIR, check_dir=False)))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if manage_bus:
            async with bus, stats_history.run():
                yield
        else:
            async with stats_history.run():
                yield

    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers=EXCEPTION_HANDLERS,
        middleware=middleware,
    )


def _submission_error(exc: InvalidTaskInput | InvalidSubmission | BusNotRunning) -> ApiError:
    """The answer to a submit or a retry the bus refused (422, or 503 while stopped)."""
    if isinstance(exc, InvalidTaskInput):
        return ApiError(422, "invalid_input", exc.title, pydantic_details(exc, with_input=True))
    if isinstance(exc, InvalidSubmission):
        return ApiError(422, "invalid_submission", str(exc))
    return ApiError(503, "bus_not_running", str(exc))


def _accepted(handle: TaskHandle[Any]) -> Response:
    """202 for a task just queued (a submit, or a retry's new task), with its URL."""
    url = f"/tasks/{handle.id}"
    answer = SubmitAnswer.model_construct(id=handle.id, type=handle.type, url=url)
    return _json(model_json(answer), 202, {"Location": url})


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
