"""The ``taskbus`` command line (typer and rich, from the ``cli`` extra).

``taskbus demo`` runs the ``demo:*`` task types on a bus of its own, with live
progress bars driven only by bus events, then a table of final states (see
`taskbus.integrations.demo`). It exits 0 when every task ended as expected,
1 otherwise.

``taskbus serve`` runs the HTTP API (`taskbus.integrations.http`, the ``http``
extra) under uvicorn (`taskbus.integrations._serve`), on the demo task types or
on a bus of your own (``--app module:attr``); it says where it serves once it
listens, and stops cleanly at Ctrl-C. ``serve`` and ``worker`` take
``--log-level`` and ``--log-format text|json`` for the ``taskbus.*`` loggers
(`taskbus.integrations._cli_logging`; never the root logger). The client
commands ``submit``, ``watch``, ``list`` (newest first; ``--dead-letters``: failed
tasks only), ``show``, ``types``, ``cancel``, ``retry`` (a failed or cancelled task
again, as a new task) and ``stats`` talk to such a server (``--url``,
``TASKBUS_URL``; ``--token``, ``TASKBUS_TOKEN``) through
`taskbus.integrations._cli_client`; ``submit --app module:attr`` and ``retry --app``
run that bus in-process instead. Exit codes: 0
done (a watched task completed), 1 an error or a failed task, 2 a usage error,
3 a watched task was cancelled. Errors are one line on stderr, and text that
comes from users is printed as it is: never read as rich markup or emoji codes.

It is longer than the house's ~500 lines because it is the whole command
surface (typer declarations are long); the HTTP and SSE side lives in
`taskbus.integrations._cli_client`, the demo in `taskbus.integrations.demo`.

This module is the CLI, not a library: without typer and rich installed,
importing it exits with a message saying what to install. Its imports of
taskbus are absolute: a worker process re-runs the main module by path, outside
its package, when the CLI runs as ``python -m taskbus.integrations.cli``.
"""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

try:
    import typer
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import Progress
    from rich.text import Text
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise SystemExit(
        f"taskbus: the command line needs the 'cli' extra ({exc.name} is not installed); "
        "install it with: pip install 'taskbus[cli]'"
    ) from exc

import anyio
from pydantic import ValidationError
from pydantic_core import to_jsonable_python

from taskbus import (
    EVENT_ADAPTER,
    Event,
    ParentFailurePolicy,
    TaskBus,
    TaskbusError,
    TaskCancelled,
    TaskCompleted,
    TaskEvent,
    TaskFailed,
    TaskInputReceived,
    TaskInputRequired,
    TaskProgress,
    TaskRetrying,
    TaskStarted,
    __version__,
)
from taskbus.integrations._cli_logging import LogFormat, LogLevel, configure_logging
from taskbus.integrations._cli_schedules import CliHelpers, make_schedules_app
from taskbus.integrations.demo import (
    DEMO_DEADLINE,
    DEMO_PLAN,
    LiveView,
    PlainView,
    count_states,
    failure_note,
    progress_bars,
    run_demo,
    summary_table,
)
from taskbus.integrations.demo_tasks import register_demo_tasks

if TYPE_CHECKING:
    from taskbus.integrations._cli_client import ApiClient, ApiError

__all__ = ["Backend", "TaskBar", "app", "main"]

app = typer.Typer(
    name="taskbus",
    help="taskbus: an event-bus task runtime. Try `taskbus demo`.",
    no_args_is_help=True,
    add_completion=False,
)


class Backend(StrEnum):
    """Event loops anyio can run the demo on."""

    ASYNCIO = "asyncio"
    TRIO = "trio"


class ParentPolicy(StrEnum):
    """What a task does when a task it runs ``--after`` fails or is cancelled."""

    cancel = "cancel"
    fail = "fail"
    run = "run"


_POLICIES: dict[ParentPolicy, ParentFailurePolicy] = {
    ParentPolicy.cancel: "cancel",
    ParentPolicy.fail: "fail",
    ParentPolicy.run: "run",
}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"taskbus {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """taskbus: submit slow work, get an id at once, watch typed events."""


@app.command()
def demo(
    backend: Annotated[
        Backend, typer.Option(help="Event loop to run on (anyio backend).")
    ] = Backend.ASYNCIO,
    live: Annotated[
        bool,
        typer.Option("--live/--no-live", help="Live progress bars, or one line per event."),
    ] = True,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker count of the bus.")] = 4,
) -> None:
    """Run example tasks with live progress bars, then print their final states."""
    if backend is Backend.TRIO and importlib.util.find_spec("trio") is None:
        raise SystemExit("taskbus: --backend trio needs trio: pip install trio")
    console = _console()
    console.print(
        f"[bold]taskbus demo[/bold]: {len(DEMO_PLAN)} tasks on {workers} workers "
        f"({backend.value}); progress comes from bus events only"
    )
    if live:
        with progress_bars(console) as bars:
            outcome = anyio.run(run_demo, LiveView(bars), workers, DEMO_PLAN, backend=backend.value)
    else:
        outcome = anyio.run(run_demo, PlainView(console), workers, DEMO_PLAN, backend=backend.value)
    table, all_expected = summary_table(outcome)
    console.print()
    console.print(table)
    console.print(
        f"{len(outcome.snapshots)} tasks in {outcome.elapsed:.2f}s: {count_states(outcome)}"
    )
    if not outcome.finished_in_time:
        console.print(f"[bold red]not every task finished within {DEMO_DEADLINE:g}s[/bold red]")
        raise typer.Exit(code=1)
    if not all_expected:
        console.print("[bold red]some tasks did not end as expected[/bold red]")
        raise typer.Exit(code=1)
    console.print("[green]every task ended as expected[/green]")


# -- serve and the client commands --------------------------------------------------

URL_OPTION = typer.Option(
    "--url", envvar="TASKBUS_URL", help="The taskbus server to talk to.", show_envvar=True
)
TOKEN_OPTION = typer.Option(
    "--token", envvar="TASKBUS_TOKEN", help="Bearer token for the server.", show_envvar=True
)
#: Where the client commands look for a server (``taskbus serve``'s default).
DEFAULT_URL = "http://127.0.0.1:8000"
APP_HELP = "Your TaskBus as module:attr (an instance or a zero-argument factory)."
#: Exit codes of a watched task by its final event.
EXIT_BY_EVENT = {"task-completed": 0, "task-failed": 1, "task-cancelled": 3}
EXIT_BY_STATE = {"completed": 0, "failed": 1, "cancelled": 3}
#: How often a dropped event stream is resumed before `watch` gives up.
RECONNECTS = 5
_LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def _console() -> Console:
    """A console that never turns user text into emoji (``:bus:``); markup in user
    text is escaped where it is printed."""
    console = Console(emoji=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 132
    return console


def _fail(message: str, code: int = 1) -> typer.Exit:
    """Print one red line to stderr, `message` as plain text; the exit to raise."""
    line = Text.assemble(("taskbus:", "bold red"), " ", message)
    Console(stderr=True, soft_wrap=True).print(line)
    return typer.Exit(code=code)


def _load_bus(spec: str) -> TaskBus:
    """Import ``module:attr``: a TaskBus, or a zero-argument callable returning one."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise _fail(f"--app takes module:attr, not {spec!r}", 2)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like uvicorn: the app lives in the working directory
    try:
        target: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        raise _fail(f"cannot load --app {spec}: {exc}", 2) from None
    if not isinstance(target, TaskBus) and callable(target):
        target = target()
    if not isinstance(target, TaskBus):
        raise _fail(f"--app {spec} is not a TaskBus (it is of type {type(target).__name__!r})", 2)
    return target


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _parse_tokens(pairs: list[str]) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for pair in pairs:
        token, sep, owner = pair.partition("=")
        if not sep or not token or not owner:
            raise _fail(f"--token takes TOKEN=OWNER, not {pair!r}", 2)
        tokens[token] = owner
    return tokens


LOG_LEVEL_OPTION = typer.Option(
    "--log-level", case_sensitive=False, help="Level of the taskbus.* logs (to stderr)."
)
LOG_FORMAT_OPTION = typer.Option(
    "--log-format", case_sensitive=False, help="One text line, or one JSON object, per log."
)


@app.command()
def serve(
    app_spec: Annotated[str | None, typer.Option("--app", help=APP_HELP)] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to bind.")] = 8000,
    token: Annotated[
        list[str] | None, typer.Option(help="TOKEN=OWNER; repeat for more owners.")
    ] = None,
    db: Annotated[str, typer.Option(help="SQLite file of the demo bus (without --app).")] = (
        "taskbus.db"
    ),
    log_level: Annotated[LogLevel, LOG_LEVEL_OPTION] = LogLevel.INFO,
    log_format: Annotated[LogFormat, LOG_FORMAT_OPTION] = LogFormat.TEXT,
) -> None:
    """Serve the HTTP API and the dashboard (the demo task types unless --app)."""
    tokens = _parse_tokens(token or [])
    if not tokens and not _is_loopback(host):
        raise _fail(
            f"refusing to serve on {host} without authentication: pass --token TOKEN=OWNER "
            "(or bind 127.0.0.1)",
            2,
        )
    try:
        from taskbus.integrations._serve import run_server
        from taskbus.integrations.http import create_app
    except ModuleNotFoundError as exc:
        raise _fail(f"serve needs the 'http' extra: pip install 'taskbus[http]' ({exc})") from None
    if app_spec is not None:
        bus = _load_bus(app_spec)
    else:
        bus = TaskBus(store=f"sqlite:///{db}")
        register_demo_tasks(bus)
    web = create_app(bus, tokens=tokens or None)
    console = _console()

    def announce(url: str) -> None:
        console.print(f"taskbus serving on [bold]{escape(url)}[/bold] (Ctrl-C to stop)")

    # uvicorn's own lines (start-up, bind errors) at WARNING, its access log at DEBUG.
    uvicorn_level = "info" if log_level is LogLevel.DEBUG else "warning"
    with configure_logging(log_level, log_format, ("taskbus", "uvicorn")):
        try:
            started = run_server(
                web,
                bus,
                host=host,
                port=port,
                log_level=uvicorn_level,
                announce=announce,
                say=partial(console.print, markup=False, highlight=False),
            )
        except TaskbusError as exc:  # the bus could not open its store, say
            raise _fail(str(exc)) from None
    if not started:
        raise _fail("the server did not start (see the error above)")
    console.print("taskbus serve stopped")


@app.command()
def worker(
    app_spec: Annotated[str, typer.Option("--app", help=APP_HELP)],
    workers: Annotated[
        int | None, typer.Option(min=1, help="Tasks run at once (default: the app's).")
    ] = None,
    grace: Annotated[
        float | None,
        typer.Option(min=0, help="Seconds running tasks get at a stop (default: the app's)."),
    ] = None,
    log_level: Annotated[LogLevel, LOG_LEVEL_OPTION] = LogLevel.INFO,
    log_format: Annotated[LogFormat, LOG_FORMAT_OPTION] = LogFormat.TEXT,
) -> None:
    """Run tasks from the app's shared store (SQLite) until SIGTERM or Ctrl-C."""
    from taskbus.integrations._worker import WorkerError, check_worker_bus, run_worker

    bus = _load_bus(app_spec)
    try:
        check_worker_bus(bus, workers, grace)
    except WorkerError as exc:
        raise _fail(str(exc), 2) from None
    console = _console()
    with configure_logging(log_level, log_format):
        try:
            anyio.run(partial(run_worker, bus, announce=partial(console.print, markup=False)))
        except TaskbusError as exc:  # the bus could not open its store, say
            raise _fail(str(exc)) from None


def _client(url: str, token: str | None) -> ApiClient:
    from taskbus.integrations._cli_client import ApiClient

    return ApiClient(url, token)


def _api_message(exc: ApiError) -> str:
    """The API's message, plus pydantic's errors when it sent them (422 invalid_input)."""
    lines = [exc.message]
    if isinstance(exc.details, list):
        for error in exc.details:
            if isinstance(error, dict) and "msg" in error:
                where = ".".join(str(part) for part in error.get("loc") or ()) or "input"
                lines.append(f"  {where}: {error['msg']}")
    return "\n".join(lines)


def _run_client(action: Callable[[], int | None]) -> None:
    """Run a client action; API and connection errors become a red line and exit 1."""
    try:
        import httpx

        from taskbus.integrations._cli_client import ApiError, ClientError
    except ModuleNotFoundError as exc:
        raise _fail(str(exc)) from None
    try:
        code = action()
    except ClientError as exc:
        message = _api_message(exc) if isinstance(exc, ApiError) else str(exc)
        raise _fail(message) from None
    except httpx.HTTPError as exc:
        raise _fail(f"the connection to the server failed: {exc}") from None
    except KeyboardInterrupt:
        _console().print("[yellow]stopped watching (tasks on the server go on)[/yellow]")
        raise typer.Exit(code=130) from None
    if code:
        raise typer.Exit(code=code)


def _parse_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(f"--json is not valid JSON: {exc}", 2) from None


class TaskBar:
    """One rich progress bar for one task, fed by its events; knows its outcome."""

    def __init__(self, progress: Progress, task_id: str, task_type: str) -> None:
        self.progress = progress
        self.final: TaskEvent | None = None
        self._row = progress.add_task(
            f"{task_type} {task_id[:8]}", total=100, state="queued", message=""
        )

    def apply(self, event: TaskEvent) -> None:
        update = self.progress.update
        if isinstance(event, TaskStarted):
            # A new attempt: the previous one's error is no longer what happens.
            update(self._row, completed=0, state=f"running #{event.attempt}", message="")
        elif isinstance(event, TaskProgress):
            update(self._row, completed=event.progress, message=event.message or "")
        elif isinstance(event, TaskRetrying):
            update(self._row, completed=0, state="retrying", message=event.error)
        elif isinstance(event, TaskInputRequired):
            update(self._row, state="waiting", message=f"asks: {event.prompt}")
        elif isinstance(event, TaskInputReceived):
            update(self._row, state="queued", message="answered")
        elif event.final:
            self.final = event
            done = 100 if isinstance(event, TaskCompleted) else None
            update(
                self._row,
                completed=done,
                state=event.name.removeprefix("task-"),
                message=_final_message(event),
            )


def _final_message(event: TaskEvent) -> str:
    """What a bar says once its task is final: nothing left over from an attempt."""
    if isinstance(event, TaskFailed):
        return event.error
    if isinstance(event, TaskCancelled):
        return event.reason or ""
    return ""


def _report_final(console: Console, event: TaskEvent) -> int:
    """Print a final event's outcome; its exit code."""
    if isinstance(event, TaskCompleted):
        result = json.dumps(to_jsonable_python(event.result))
        console.print(f"[green]completed[/green] {escape(result)}", soft_wrap=True)
    elif isinstance(event, TaskFailed):
        note = failure_note(event.error_type, event.attempt_count)
        console.print(f"[red]failed[/red] ({note}): {escape(event.error)}")
        if event.suggested_action:
            console.print(f"suggested action: {escape(event.suggested_action)}")
    elif isinstance(event, TaskCancelled):
        console.print(f"[magenta]cancelled[/magenta] {escape(event.reason or '')}")
    return EXIT_BY_EVENT.get(event.name, 1)


def _report_snapshot(console: Console, snap: dict[str, Any]) -> int:
    """Print a finished task's outcome from its snapshot; its exit code."""
    state = str(snap.get("state"))
    if state == "completed":
        console.print(f"[green]completed[/green] {escape(json.dumps(snap.get('result')))}")
    elif state == "failed":
        error = snap.get("error") or {}
        note = failure_note(str(error.get("error_type", "")), int(snap.get("attempts") or 0))
        console.print(f"[red]failed[/red] ({note}): {escape(str(error.get('message', '')))}")
    elif state == "cancelled":
        console.print(f"[magenta]cancelled[/magenta] {escape(snap.get('cancel_reason') or '')}")
    return EXIT_BY_STATE.get(state, 1)


def _parse_event(data: str) -> Event | None:
    try:
        return EVENT_ADAPTER.validate_json(data)
    except ValidationError:
        return None  # an event kind this client does not know: skip it


def _follow(client: ApiClient, bar: TaskBar, task_id: str, last_id: str) -> str:
    """Feed one SSE connection's events to `bar` until its final one; the last event id."""
    for message in client.events(task_id=task_id, last_event_id=last_id):
        last_id = message.id or last_id
        event = _parse_event(message.data)
        if isinstance(event, TaskEvent) and event.task_id == task_id:
            bar.apply(event)
            if bar.final is not None:
                break
    return last_id


def _watch_task(client: ApiClient, console: Console, task_id: str) -> int:
    """Follow one task over SSE with a progress bar until its final event; the exit code.

    A dropped stream is resumed from the last event id (``Last-Event-ID``), a
    bounded number of times; a task found final meanwhile ends with its snapshot.
    """
    snap = client.get(task_id)
    if snap["state"] in EXIT_BY_STATE:
        return _report_snapshot(console, snap)
    with progress_bars(console) as progress:
        bar = TaskBar(progress, task_id, str(snap["type"]))
        last_id = "0"  # replay the retained history: nothing is lost between submit and here
        for attempt in range(RECONNECTS + 1):
            last_id = _follow(client, bar, task_id, last_id)
            if bar.final is not None:
                return _report_final(console, bar.final)
            snap = client.get(task_id)
            if snap["state"] in EXIT_BY_STATE or attempt == RECONNECTS:
                break
            time.sleep(0.2 * (attempt + 1))
    if snap["state"] not in EXIT_BY_STATE:
        raise _fail(f"the event stream kept ending before task {task_id} finished")
    return _report_snapshot(console, snap)


def _event_line(event: Event) -> str:
    when = event.timestamp.astimezone().strftime("%H:%M:%S")
    if not isinstance(event, TaskEvent):
        return f"{when}  {event.name}"
    text = f"{when}  {event.name:<15} {event.task_type} {event.task_id}"
    if isinstance(event, TaskProgress):
        text += f" {event.progress:5.1f}% {event.message or ''}"
    elif isinstance(event, TaskFailed | TaskRetrying):
        text += f" {event.error}"
    elif isinstance(event, TaskCancelled):
        text += f" {event.reason or ''}"
    return text.rstrip()


@app.command()
def submit(
    task_type: Annotated[str, typer.Argument(help="Registered task type, e.g. demo:clone-repo.")],
    json_input: Annotated[
        str | None, typer.Option("--json", help="Input as JSON (default null).")
    ] = None,
    priority: Annotated[int | None, typer.Option(min=1, max=10, help="1-10, 10 first.")] = None,
    key: Annotated[str | None, typer.Option(help="Idempotency key.")] = None,
    after: Annotated[
        list[str] | None,
        typer.Option("--after", help="Run after this task ends (repeat for several)."),
    ] = None,
    on_parent_failure: Annotated[
        ParentPolicy, typer.Option(help="If a task it runs after fails or is cancelled.")
    ] = ParentPolicy.cancel,
    watch: Annotated[bool, typer.Option("--watch", help="Follow it until it ends.")] = False,
    app_spec: Annotated[str | None, typer.Option("--app", help=APP_HELP)] = None,
    url: Annotated[str, URL_OPTION] = DEFAULT_URL,
    token: Annotated[str | None, TOKEN_OPTION] = None,
) -> None:
    """Submit a task and print its id; with --watch, follow it (exit 0/1/3).

    With --app the bus runs in this process, so the command always waits for
    the outcome (and draws the progress bar only with --watch).
    """
    value = _parse_json(json_input)
    console = _console()
    policy = _POLICIES[on_parent_failure]
    if app_spec is not None:
        bus = _load_bus(app_spec)
        parents = (after or [], policy)
        code = anyio.run(
            _submit_in_process, bus, console, task_type, value, priority, key, watch, parents
        )
        raise typer.Exit(code=code)

    def action() -> int | None:
        with _client(url, token) as client:
            created = client.submit(
                task_type,
                value,
                priority=priority,
                key=key,
                after=after,
                on_parent_failure=None if policy == "cancel" else policy,
            )
            console.print(created["id"], highlight=False)
            return _watch_task(client, console, created["id"]) if watch else None

    _run_client(action)


async def _submit_in_process(
    bus: TaskBus,
    console: Console,
    task_type: str,
    value: Any,
    priority: int | None,
    key: str | None,
    watch: bool,
    parents: tuple[list[str], ParentFailurePolicy] = ([], "cancel"),
) -> int:
    """Run `bus` here: submit, follow the task's events (a bar with `watch`), its exit code."""
    after, policy = parents
    async with bus:
        try:
            handle = await bus.submit(
                task_type,
                value,
                priority=priority,
                key=key,
                after=after or None,
                on_parent_failure=policy,
            )
        except TaskbusError as exc:
            console.print(f"[bold red]taskbus:[/bold red] {escape(str(exc))}")
            return 1
        console.print(handle.id, highlight=False)
        final = await _final_in_process(bus, console, handle.id, task_type, watch)
    if final is None:
        return 1
    return _report_final(console, final)


async def _final_in_process(
    bus: TaskBus, console: Console, task_id: str, task_type: str, watch: bool
) -> TaskEvent | None:
    """Follow a task on a bus this process runs to its final event (a bar with `watch`)."""
    final: TaskEvent | None = None
    with progress_bars(console) if watch else nullcontext() as progress:
        bar = TaskBar(progress, task_id, task_type) if progress is not None else None
        async with bus.subscribe(task_id=task_id) as events:
            async for event in events:
                if bar is not None:
                    bar.apply(event)
                if event.final:
                    final = event
    return final


@app.command()
def retry(
    task_id: Annotated[str, typer.Argument(help="The failed or cancelled task to run again.")],
    priority: Annotated[
        int | None, typer.Option(min=1, max=10, help="1-10 (default: the old task's).")
    ] = None,
    delay: Annotated[
        float | None, typer.Option(min=0, help="Seconds to wait before it runs.")
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            help="Idempotency key: a second retry with it, while the first "
            "re-run is unfinished, gives that re-run."
        ),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Follow it until it ends.")] = False,
    app_spec: Annotated[str | None, typer.Option("--app", help=APP_HELP)] = None,
    url: Annotated[str, URL_OPTION] = DEFAULT_URL,
    token: Annotated[str | None, TOKEN_OPTION] = None,
) -> None:
    """Run a failed or cancelled task again as a new task (same type, input, owner,
    metadata) and print the new id; with --watch, follow it (exit 0/1/3).

    With --app the bus runs in this process (on a store it shares with the one that
    ran the task, e.g. SQLite), and the command waits for the outcome.
    """
    console = _console()
    if app_spec is not None:
        bus = _load_bus(app_spec)
        code = anyio.run(_retry_in_process, bus, console, task_id, priority, delay, key, watch)
        raise typer.Exit(code=code)

    def action() -> int | None:
        with _client(url, token) as client:
            created = client.retry(task_id, priority=priority, delay=delay, key=key)
            console.print(created["id"], highlight=False)
            return _watch_task(client, console, created["id"]) if watch else None

    _run_client(action)


async def _retry_in_process(
    bus: TaskBus,
    console: Console,
    task_id: str,
    priority: int | None,
    delay: float | None,
    key: str | None,
    watch: bool,
) -> int:
    """Run `bus` here: retry the task, follow the new one, its exit code."""
    async with bus:
        try:
            handle = await bus.retry(task_id, priority=priority, delay=delay, key=key)
        except TaskbusError as exc:
            console.print(f"[bold red]taskbus:[/bold red] {escape(str(exc))}")
            return 1
        console.print(handle.id, highlight=False)
        final = await _final_in_process(bus, console, handle.id, handle.type, watch)
    if final is None:
        return 1
    return _report_final(console, final)


@app.command()
def watch(
    task_id: Annotated[str | None, typer.Argument(help="One task; all events without it.")] = None,
    url: Annotated[str, URL_OPTION] = DEFAULT_URL,
    token: Annotated[str | None, TOKEN_OPTION] = None,
) -> None:
    """Follow one task until it ends (exit 0/1/3), or print every event until Ctrl-C."""
    console = _console()

    def action() -> int | None:
        with _client(url, token) as client:
            if task_id is not None:
                return _watch_task(client, console, task_id)
            for message in client.events():
                event = _parse_event(message.data)
                if event is not None:
                    console.print(_event_line(event), markup=False, highlight=False)
            return None

    _run_client(action)


#: Rows a page of ``taskbus list --all`` asks the server for.
LIST_PAGE = 500


@app.command("list")
def list_tasks(
    state: Annotated[str | None, typer.Option(help="Only tasks in this state.")] = None,
    task_type: Annotated[str | None, typer.Option("--type", help="Type prefix.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Rows to show.")] = 20,
    show_all: Annotated[
        bool, typer.Option("--all", help="Every matching task (pages through them).")
    ] = False,
    cursor: Annotated[str | None, typer.Option(help="Next page, as printed.")] = None,
    dead_letters: Annotated[
        bool, typer.Option("--dead-letters", help="Only dead letters (failed tasks).")
    ] = False,
    url: Annotated[str, URL_OPTION] = DEFAULT_URL,
    token: Annotated[str | None, TOKEN_OPTION] = None,
) -> None:
    """A table of tasks, newest first: id, type, state, progress, attempts, created;
    with --dead-letters, the failed ones (retry them with ``taskbus retry ID``)."""
    from taskbus.integrations._cli_views import tasks_table

    console = _console()

    def action() -> None:
        items: list[dict[str, Any]] = []
        with _client(url, token) as client:
            page_cursor = cursor
            while True:
                page = client.list(
                    state=state,
                    task_type=task_type,
                    limit=LIST_PAGE if show_all else limit,
                    cursor=page_cursor,
                    newest_first=True,
                    dead_letter=dead_letters,
                )
                items += page["items"]
                page_cursor = page.get("next_cursor")
                if not show_all or not page_cursor:
                    break
        what = "dead letters" if dead_letters else "tasks"
        console.print(tasks_table(items, f"taskbus {what} at {url}, newest first"))
        if page_cursor:
            flag = " --dead-letters" if dead_letters else ""
            more = f"more: taskbus list{flag} --cursor {page_cursor} (or --all)"
            console.print(more, markup=False, highlight=False)

    _run_client(action)


@app.command()
def show(
    task_id: Annotated[str, typer.Argument(help="The task to show.")],
    json_output: Annotated[bool, typer.Option("--json", help="The snapshot as JSON.")] = False,
    url: Annotated[str, URL_OPTION] = DEFAULT_URL,
    token: Annotated[str | None, TOKEN_OPTION] = None,
) -> None:
    """One task: state, times, attempts, worker, input, and its result or error."""
    from taskbus.integrations._cli_views import snapshot_table

    console = _console()

    def action() -> None:
        with _client(url, token) as client:
            snap = client.get(task_id)
        if json_output:
            console.print_json(data=snap)
        else:
            console.print(snapshot_table(snap))

    _run_client(action)


@app.command()
def types(
    json_output: Annotated[
        bool, typer.Option("--json", help="Names, descriptions and full input schemas.")
    ] = False,
    url: Annotated[str, URL_OPTION] = DEFAULT_URL,
    token: Annotated[str | None, TOKEN_OPTION] = None,
) -> None:
    """The task types the server runs: names, descriptions, input schemas."""
    from taskbus.integrations._cli_views import types_table

    console = _console()

    def action() -> None:
        with _client(url, token) as client:
            found = client.types()
        if json_output:
            console.print_json(data=found)
        else:
            console.print(types_table(found, f"taskbus task types at {url}"))

    _run_client(action)


@app.command()
def cancel(
    task_id: Annotated[str, typer.Argument(help="The task to cancel.")],
    reason: Annotated[str | None, typer.Option(help="Why (kept on the task).")] = None,
    url: Annotated[str, URL_OPTION] = DEFAULT_URL,
    token: Annotated[str | None, TOKEN_OPTION] = None,
) -> None:
    """Cancel a queued or running task (exit 1 if it had already finished)."""
    console = _console()

    def action() -> int:
        with _client(url, token) as client:
            answer = client.cancel(task_id, reason)
        if answer.get("cancelled"):
            console.print(f"cancelled {task_id}", markup=False, highlight=False)
            return 0
        console.print(f"[yellow]not cancelled: {escape(task_id)} is {answer.get('state')}[/yellow]")
        return 1

    _run_client(action)


@app.command()
def respond(
    task_id: Annotated[str, typer.Argument(help="The task waiting for input.")],
    answer: Annotated[str, typer.Argument(help='The answer as JSON, e.g. \'{"branch": "main"}\'.')],
    url: Annotated[str, URL_OPTION] = DEFAULT_URL,
    token: Annotated[str | None, TOKEN_OPTION] = None,
) -> None:
    """Answer the question of a task waiting for input (``taskbus show`` prints it);
    exit 1 if it waits for none or the answer does not fit."""
    console = _console()
    try:
        value = json.loads(answer)
    except json.JSONDecodeError as exc:
        raise _fail(f"the answer is not valid JSON: {exc}", 2) from None

    def action() -> None:
        with _client(url, token) as client:
            snap = client.respond(task_id, value)
        console.print(
            f"answered {task_id}: it is {snap.get('state')}", markup=False, highlight=False
        )

    _run_client(action)


@app.command()
def stats(
    url: Annotated[str, URL_OPTION] = DEFAULT_URL,
    token: Annotated[str | None, TOKEN_OPTION] = None,
) -> None:
    """Task counts by state and by type, and the queued ones by priority."""
    from taskbus.integrations._cli_views import stats_table

    console = _console()

    def action() -> None:
        with _client(url, token) as client:
            counts = client.stats()
        console.print(stats_table(counts, f"taskbus stats at {url}"))

    _run_client(action)


app.add_typer(
    make_schedules_app(
        CliHelpers(
            console=_console,
            client=_client,
            run=_run_client,
            parse_json=_parse_json,
            url_option=URL_OPTION,
            token_option=TOKEN_OPTION,
            default_url=DEFAULT_URL,
        )
    ),
    name="schedules",
)


def main() -> None:
    """Entry point of the ``taskbus`` console script."""
    app(prog_name="taskbus")


if __name__ == "__main__":
    main()
