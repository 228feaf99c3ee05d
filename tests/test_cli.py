"""The ``taskbus`` client commands and ``taskbus serve``.

Argument handling, the SSE parser and the error mapping run in-process (typer's
`CliRunner`, httpx's `MockTransport`); ``submit --app`` runs a bus in-process.
The end-to-end tests start one real ``taskbus serve`` subprocess (with a token)
for the module, wait for ``/healthz`` with a bounded loop, drive it with the
client commands, and terminate it in a ``finally``.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import pytest
from rich.console import Console
from rich.progress import Progress
from typer.testing import CliRunner

from taskbus import (
    ErrorType,
    TaskCompleted,
    TaskFailed,
    TaskProgress,
    TaskRetrying,
    TaskStarted,
)
from taskbus.integrations._cli_client import (
    ApiClient,
    ApiError,
    ServerUnreachable,
    SseMessage,
    SseParser,
)
from taskbus.integrations._cli_views import schema_summary, snapshot_table, stats_table
from taskbus.integrations.cli import TaskBar, app
from taskbus.integrations.cli import _report_final as report_final
from taskbus.integrations.cli import _report_snapshot as report_snapshot
from taskbus.integrations.cli import _watch_task as watch_task
from taskbus.integrations.demo_tasks import register_demo_tasks

TOKEN = "s3cret-token"
runner = CliRunner()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- SSE parsing and the HTTP client, no server -------------------------------------


def parse(lines: list[str]) -> list[SseMessage]:
    parser = SseParser()
    return [message for line in lines if (message := parser.feed(line)) is not None]


def test_sse_parser_reads_id_event_and_multiline_data() -> None:
    lines = [
        ": ping",
        "id: 7",
        "event: task-progress",
        'data: {"a":',
        "data:1}",
        "",
        "retry: 3000",
        "",
        "data: plain\r",
        "",
    ]
    assert parse(lines) == [
        SseMessage(event="task-progress", data='{"a":\n1}', id="7"),
        SseMessage(event="message", data="plain", id="7"),
    ]


def test_sse_parser_ignores_comments_and_empty_messages() -> None:
    assert parse([": keep-alive", "", "event: x", "", ""]) == []


def mock_client(handler: httpx.MockTransport) -> ApiClient:
    return ApiClient("http://testserver", "tok", transport=handler)


def test_client_maps_the_error_body_and_sends_the_token() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = {"error": {"code": "not_found", "message": "no task with id abc", "details": None}}
        return httpx.Response(404, json=body)

    with mock_client(httpx.MockTransport(handler)) as client, pytest.raises(ApiError) as caught:
        client.get("abc")
    assert (caught.value.status, caught.value.code) == (404, "not_found")
    assert caught.value.message == "no task with id abc"
    assert seen[0].headers["authorization"] == "Bearer tok"


def test_client_survives_a_non_json_error() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text="bad gateway"))
    with mock_client(transport) as client, pytest.raises(ApiError) as caught:
        client.stats()
    assert (caught.value.code, caught.value.message) == ("http_error", "bad gateway")


def test_client_streams_events_with_last_event_id() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["last-event-id"] == "0"
        assert request.url.params["task_id"] == "t1"
        body = b"id: 1\nevent: task-started\ndata: {}\n\n: ping\n\nid: 2\ndata: {}\n\n"
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    with mock_client(httpx.MockTransport(handler)) as client:
        ids = [message.id for message in client.events(task_id="t1", last_event_id="0")]
    assert ids == ["1", "2"]


def progress_frame(seq: int, task_id: str, percent: float) -> str:
    event = TaskProgress(
        timestamp=datetime.now(UTC),
        task_id=task_id,
        task_type="demo:long-job",
        progress=percent,
        current=None,
        total=None,
        message=f"at {percent}",
        estimated_time_remaining=None,
    )
    return f"id: {seq}\nevent: task-progress\ndata: {event.model_dump_json()}\n\n"


def test_watch_resumes_a_dropped_stream_then_reads_the_snapshot() -> None:
    states = iter(["running", "running", "completed"])
    resumed_from: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/events":
            resumed_from.append(request.headers.get("last-event-id"))
            seq = len(resumed_from)
            body = progress_frame(seq, "t1", 10.0 * seq)
            return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
        snap = {"id": "t1", "type": "demo:long-job", "state": next(states), "result": 7}
        return httpx.Response(200, json=snap)

    console = Console(file=io.StringIO(), width=100)
    with mock_client(httpx.MockTransport(handler)) as client:
        code = watch_task(client, console, "t1")
    assert code == 0
    assert resumed_from == ["0", "1"]
    assert "completed 7" in console.file.getvalue()  # type: ignore[attr-defined]


def test_the_bar_of_a_task_that_succeeds_on_attempt_3_keeps_no_earlier_error() -> None:
    now = datetime.now(UTC)
    common = {"task_id": "t1", "task_type": "demo:flaky", "timestamp": now}
    progress = Progress(console=Console(file=io.StringIO()))
    bar = TaskBar(progress, "t1", "demo:flaky")

    def shown() -> tuple[str, str]:
        fields = progress.tasks[0].fields
        return fields["state"], fields["message"]

    for attempt in (1, 2):
        bar.apply(TaskStarted(**common, attempt=attempt))
        error = f"service unavailable on attempt {attempt}"
        bar.apply(
            TaskRetrying(
                **common, attempt=attempt, delay=0.1, error=error, error_type=ErrorType.RETRYABLE
            )
        )
        assert shown() == ("retrying", error)
    bar.apply(TaskStarted(**common, attempt=3))
    assert shown() == ("running #3", "")
    bar.apply(TaskCompleted(**common, result="ok", duration=0.1))
    assert shown() == ("completed", "")
    assert progress.tasks[0].completed == 100


@pytest.mark.parametrize(
    ("error_type", "attempts", "expected"),
    [
        (ErrorType.RETRYABLE, 3, "failed (after 3 attempts): boom"),
        (ErrorType.FATAL, 1, "failed (fatal, after 1 attempt): boom"),
    ],
)
def test_a_final_failure_is_reported_without_retryable(
    error_type: ErrorType, attempts: int, expected: str
) -> None:
    event = TaskFailed(
        task_id="t1",
        task_type="x:y",
        timestamp=datetime.now(UTC),
        error="boom",
        error_type=error_type,
        suggested_action=None,
        retryable=error_type is ErrorType.RETRYABLE,
        attempt_count=attempts,
    )
    console = Console(file=io.StringIO(), width=100)
    assert report_final(console, event) == 1
    snap = {
        "state": "failed",
        "attempts": attempts,
        "error": {"message": "boom", "error_type": error_type.value},
    }
    assert report_snapshot(console, snap) == 1
    lines = console.file.getvalue().splitlines()  # type: ignore[attr-defined]
    assert lines == [expected, expected]


def test_no_server_is_a_clear_message() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with ApiClient(url) as client, pytest.raises(ServerUnreachable):
        client.stats()
    result = runner.invoke(app, ["stats", "--url", url])
    assert result.exit_code == 1
    assert f"no taskbus server at {url}" in result.output
    assert "taskbus serve" in result.output


# -- argument handling ----------------------------------------------------------------


def test_serve_refuses_a_public_host_without_a_token() -> None:
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0", "--port", str(free_port())])
    assert result.exit_code == 2
    assert "--token" in result.output


def test_serve_app_must_be_a_bus(app_module: str) -> None:
    result = runner.invoke(app, ["serve", "--app", f"{app_module}:not_a_bus", "--port", "1"])
    assert result.exit_code == 2
    assert "not a TaskBus" in result.output


def test_serve_rejects_a_malformed_token() -> None:
    result = runner.invoke(app, ["serve", "--token", "no-owner"])
    assert result.exit_code == 2
    assert "TOKEN=OWNER" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "demo:flaky", "--json", "{oops"], "--json is not valid JSON"),
        (["submit", "demo:flaky", "--app", "nocolon"], "module:attr"),
        (["submit", "demo:flaky", "--app", "no_such_module_xyz:bus"], "cannot load --app"),
        (["submit", "demo:flaky", "--priority", "11"], "priority"),
    ],
    ids=["bad-json", "app-without-colon", "app-not-found", "priority-out-of-range"],
)
def test_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output


# -- submit --app: a bus in this process --------------------------------------------

APP_MODULE = """
from taskbus import TaskBus
from taskbus.integrations.demo_tasks import register_demo_tasks

bus = TaskBus(workers=2, shutdown_grace=1.0)
register_demo_tasks(bus)

def make_bus():
    fresh = TaskBus(workers=2, shutdown_grace=1.0)
    register_demo_tasks(fresh)
    return fresh

not_a_bus = 42

@bus.task("cli:markup")
async def markup(ctx, text: str) -> None:
    from taskbus import FatalError

    raise FatalError(text)

def shared_client():
    import os
    return TaskBus(store=f"sqlite:///{os.environ['TASKBUS_CLI_DB']}", workers=0)

def shared_worker():
    import os
    worker = TaskBus(store=f"sqlite:///{os.environ['TASKBUS_CLI_DB']}", workers=1)
    register_demo_tasks(worker)
    return worker

def shared_fixable():
    import os
    from taskbus import FatalError, RetryPolicy
    fixable = TaskBus(store=f"sqlite:///{os.environ['TASKBUS_CLI_DB']}", workers=1)

    @fixable.task("cli:fixable", retry=RetryPolicy.never())
    async def run(ctx, text: str) -> str:
        if not os.environ.get("TASKBUS_CLI_FIXED"):
            raise FatalError("not fixed yet")
        return text

    return fixable
"""


@pytest.fixture
def app_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = f"cli_app_{os.getpid()}_{time.monotonic_ns()}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(APP_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_submit_in_process_watches_to_completion(app_module: str) -> None:
    payload = json.dumps({"repo": "a/b", "objects": 4, "batch": 2, "step_delay": 0})
    args = ["submit", "demo:clone-repo", "--json", payload, "--watch"]
    result = runner.invoke(app, [*args, "--app", f"{app_module}:bus"])
    assert result.exit_code == 0, result.output
    assert "completed" in result.output
    assert '"path": "./b"' in result.output


def test_submit_in_process_factory_reports_failure(app_module: str) -> None:
    args = ["submit", "demo:flaky", "--json", '{"failures": 5}', "--app", f"{app_module}:make_bus"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "failed (after 3 attempts): service unavailable on attempt 3" in result.output
    assert "retryable" not in result.output


def test_submit_in_process_after_an_unknown_task_is_an_error(app_module: str) -> None:
    args = ["submit", "demo:flaky", "--json", '{"failures": 0}', "--after", "nope"]
    args += ["--app", f"{app_module}:bus"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "unknown parent task 'nope' in after" in result.output


def test_submit_in_process_rejects_what_is_not_a_bus(app_module: str) -> None:
    result = runner.invoke(app, ["submit", "demo:flaky", "--app", f"{app_module}:not_a_bus"])
    assert result.exit_code == 2
    assert "not a TaskBus" in result.output


def test_user_text_is_never_read_as_markup_or_emoji(app_module: str) -> None:
    text = "[bold]boom[/bold] on the :bus: [red]"
    args = ["submit", "cli:markup", "--json", json.dumps(text), "--app", f"{app_module}:bus"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert text in result.output
    assert "\N{BUS}" not in result.output


@pytest.mark.parametrize(
    ("attr", "message"),
    [
        ("nosuchmod_xyz:bus", "cannot load --app nosuchmod_xyz:bus: No module named"),
        ("{module}:no_such_attr", "has no attribute 'no_such_attr'"),
        ("{module}:not_a_bus", "is not a TaskBus (it is of type 'int')"),
    ],
    ids=["no-module", "no-attribute", "not-a-bus"],
)
@pytest.mark.parametrize("command", ["serve", "worker", "submit"])
def test_a_bad_app_is_one_line_exit_2(
    app_module: str, command: str, attr: str, message: str
) -> None:
    args = [command, "--app", attr.format(module=app_module)]
    result = runner.invoke(app, [*args, "demo:flaky"] if command == "submit" else args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.strip().count("\n") == 0, result.output
    assert "Traceback" not in result.output
    assert "\N{BUS}" not in result.output


def test_serve_cannot_open_its_store_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "missing-dir" / "tasks.db"
    result = runner.invoke(app, ["serve", "--db", str(db), "--port", str(free_port())])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"taskbus: SQLite store '{db}': cannot open")
    assert "not writable" in result.output
    assert "Traceback" not in result.output


def test_serve_on_a_store_file_another_process_locks_is_one_line(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("CREATE TABLE held (x)")
        holder.execute("BEGIN EXCLUSIVE")  # as another process mid-write would
        result = runner.invoke(app, ["serve", "--db", str(db), "--port", str(free_port())])
    finally:
        holder.close()
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"taskbus: SQLite store '{db}': cannot ")
    assert "database is locked (another connection holds a lock on it)" in result.output
    assert "Traceback" not in result.output


def test_log_options_are_checked() -> None:
    result = runner.invoke(app, ["serve", "--log-format", "xml"])
    assert result.exit_code == 2
    assert "--log-format" in result.output
    result = runner.invoke(app, ["worker", "--app", "x:y", "--log-level", "chatty"])
    assert result.exit_code == 2
    assert "--log-level" in result.output


def test_show_prints_a_snapshot_with_user_text_as_is() -> None:
    snap = {
        "id": "a" * 32,
        "type": "t:x",
        "state": "failed",
        "priority": 5,
        "owner": None,
        "input": {"q": "[bold]x[/bold] :bus:"},
        "progress": 40.0,
        "message": "page [i]3[/i]",
        "attempts": 2,
        "max_attempts": 3,
        "created_at": "2026-01-02T03:04:05.000006Z",
        "started_at": "2026-01-02T03:04:06Z",
        "finished_at": "2026-01-02T03:04:07Z",
        "worker": None,
        "error": {
            "message": "no [red]luck[/red]",
            "error_type": "fatal",
            "exception_type": "taskbus.FatalError",
            "suggested_action": "retry :bus:",
        },
    }
    console = Console(record=True, width=200)
    console.print(snapshot_table(snap))
    text = console.export_text()
    for expected in (
        '{"q": "[bold]x[/bold] :bus:"}',
        "40% page [i]3[/i]",
        "no [red]luck[/red] (fatal, FatalError)",
        "retry :bus:",
        "2/3",
        "failed",
    ):
        assert expected in text


def test_stats_show_the_queued_by_priority_most_urgent_first() -> None:
    counts = {
        "by_state": {"queued": 4, "completed": 1},
        "by_type": {"mail:[b]send[/b]": {"queued": 3, "completed": 1}, "jobs": {"queued": 1}},
        "queued_by_priority": {"mail:[b]send[/b]": {"2": 1, "10": 2}, "jobs": {"5": 1}},
        "store_outage": None,
    }
    console = Console(record=True, width=200)
    console.print(stats_table(counts, "stats at [red]x[/red]"))
    lines = console.export_text().splitlines()
    assert "stats at [red]x[/red]" in lines[0]
    rows = {cells[0]: cells[1:] for cells in map(_cells, lines) if cells}
    assert rows["type"][-1] == "queued by priority"
    assert rows["mail:[b]send[/b]"] == ["3", "0", "0", "1", "0", "0", "p10 2  p2 1"]
    assert rows["jobs"][-1] == "p5 1"
    assert rows["all"] == ["4", "0", "0", "1", "0", "0", ""]


def _cells(line: str) -> list[str]:
    """The cells of one row of a rich table (none for a rule or the title)."""
    separator = "│" if "│" in line else "┃"
    return [cell.strip() for cell in line.split(separator)[1:-1]]


def test_types_summarise_input_schemas() -> None:
    schema = {
        "properties": {"repo": {"type": "string"}, "n": {"anyOf": [{"type": "integer"}, {}]}},
        "required": ["repo"],
    }
    assert schema_summary(schema) == "repo: string, n?: integer | any"
    assert schema_summary({"type": "integer"}) == "integer"
    assert schema_summary(None) == "any"


def test_retry_in_process_runs_a_task_another_bus_failed_on_a_shared_store(
    app_module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKBUS_CLI_DB", str(tmp_path / "jobs.db"))
    spec = f"{app_module}:shared_fixable"
    result = runner.invoke(app, ["submit", "cli:fixable", "--json", '"hello"', "--app", spec])
    assert result.exit_code == 1, result.output
    assert "not fixed yet" in result.output
    old = result.output.split()[0]
    monkeypatch.setenv("TASKBUS_CLI_FIXED", "1")
    result = runner.invoke(app, ["retry", old, "--priority", "9", "--watch", "--app", spec])
    assert result.exit_code == 0, result.output
    new = result.output.split()[0]
    assert len(new) == 32 and new != old
    assert '"hello"' in result.output and "completed" in result.output
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        rows = dict(db.execute("SELECT id, state FROM tasks").fetchall())
    assert rows == {old: "failed", new: "completed"}
    result = runner.invoke(app, ["retry", new, "--app", spec])
    assert result.exit_code == 1
    assert "only a failed or cancelled task can be retried" in result.output


def test_submit_in_process_unknown_type_is_an_error(app_module: str) -> None:
    result = runner.invoke(app, ["submit", "nope:nothing", "--app", f"{app_module}:bus"])
    assert result.exit_code == 1
    assert "nope:nothing" in result.output


# -- end to end against `taskbus serve` --------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``taskbus serve`` with one token, for the module; its URL."""
    pytest.importorskip("taskbus.integrations.http", reason="needs the HTTP API")
    port = free_port()
    folder = tmp_path_factory.mktemp("serve")
    command = [sys.executable, "-m", "taskbus.integrations.cli", "serve"]
    command += ["--port", str(port), "--db", str(folder / "tasks.db")]
    command += ["--token", f"{TOKEN}=alice"]
    log = folder / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                pytest.fail(f"taskbus serve exited early:\n{log.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("taskbus serve did not answer /healthz within 10 s")
            time.sleep(0.05)
        yield url
        assert f"taskbus serving on {url}" in log.read_text()
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def cli(server: str, *args: str, token: str = TOKEN) -> tuple[int, str]:
    env = {"TASKBUS_URL": server, "TASKBUS_TOKEN": token}
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_submit_watch_completes(server: str) -> None:
    payload = json.dumps({"repo": "x/y", "objects": 6, "batch": 2, "step_delay": 0.01})
    code, out = cli(server, "submit", "demo:clone-repo", "--json", payload, "--watch")
    assert code == 0, out
    task_id = out.split()[0]
    assert len(task_id) == 32
    assert "completed" in out
    assert '"repo": "x/y"' in out
    code, out = cli(server, "watch", task_id)  # already final: its outcome at once
    assert code == 0, out
    assert "completed" in out


def test_submit_after_runs_once_its_parents_end(server: str) -> None:
    payload = json.dumps({"repo": "x/y", "objects": 2, "batch": 1, "step_delay": 0.01})
    code, out = cli(server, "submit", "demo:clone-repo", "--json", payload)
    assert code == 0, out
    parent = out.strip()
    code, out = cli(
        server, "submit", "demo:clone-repo", "--json", payload, "--after", parent, "--watch"
    )
    assert code == 0, out
    assert "completed" in out
    code, out = cli(server, "submit", "demo:clone-repo", "--json", payload, "--after", "0" * 32)
    assert code != 0
    assert "unknown parent task" in out
    code, out = cli(server, "submit", "demo:clone-repo", "--on-parent-failure", "ignore")
    assert code == 2, out


def test_submit_watch_a_failing_task_exits_1(server: str) -> None:
    code, out = cli(server, "submit", "demo:slow-timeout", "--json", '{"seconds": 3}', "--watch")
    assert code == 1, out
    assert "failed" in out
    assert "timed out" in out


def test_cancel_then_watch_exits_3(server: str) -> None:
    code, out = cli(
        server, "submit", "demo:long-job", "--json", '{"steps": 100}', "--priority", "9"
    )
    assert code == 0, out
    task_id = out.strip()
    code, out = cli(server, "cancel", task_id, "--reason", "test says stop")
    assert code == 0, out
    assert f"cancelled {task_id}" in out
    code, out = cli(server, "watch", task_id)
    assert code == 3, out
    assert "cancelled" in out
    code, out = cli(server, "cancel", task_id)
    assert code == 1
    assert "not cancelled" in out


def test_list_and_stats_show_tables(server: str) -> None:
    code, out = cli(server, "submit", "demo:flaky", "--json", '{"failures": 0}', "--watch")
    assert code == 0, out
    code, out = cli(server, "list", "--type", "demo:flaky", "--limit", "5")
    assert code == 0, out
    for column in ("id", "type", "state", "progress", "attempts", "created"):
        assert column in out
    assert "demo:flaky" in out
    assert "completed" in out
    code, out = cli(server, "stats")
    assert code == 0, out
    assert "demo:flaky" in out
    assert "all" in out


def test_list_is_newest_first_and_all_pages_through(server: str) -> None:
    ids = []
    for n in range(3):
        code, out = cli(
            server, "submit", "demo:flaky", "--json", '{"failures": 0}', "--key", f"l{n}"
        )
        assert code == 0, out
        ids.append(out.strip())
    code, out = cli(server, "list", "--type", "demo:flaky", "--limit", "1")
    assert code == 0, out
    assert ids[2] in out and ids[1] not in out
    assert "more: taskbus list --cursor" in out
    code, out = cli(server, "list", "--type", "demo:flaky", "--all")
    assert code == 0, out
    assert out.index(ids[2]) < out.index(ids[1]) < out.index(ids[0])
    assert "more:" not in out


def test_show_prints_one_task(server: str) -> None:
    payload = json.dumps({"repo": "s/how", "objects": 2, "step_delay": 0})
    code, out = cli(server, "submit", "demo:clone-repo", "--json", payload, "--watch")
    assert code == 0, out
    task_id = out.split()[0]
    code, out = cli(server, "show", task_id)
    assert code == 0, out
    for expected in (task_id, "demo:clone-repo", "completed", "1/", '"repo": "s/how"', "result"):
        assert expected in out, out
    code, out = cli(server, "show", task_id, "--json")
    assert code == 0, out
    assert json.loads(out)["input"]["repo"] == "s/how"
    code, out = cli(server, "show", "0" * 32)
    assert code == 1
    assert out.startswith("taskbus: ")


def test_dead_letters_are_listed_and_retried(server: str) -> None:
    code, out = cli(server, "submit", "demo:flaky", "--json", '{"failures": 5}', "--watch")
    assert code == 1, out
    old = out.split()[0]
    code, out = cli(server, "submit", "demo:flaky", "--json", '{"failures": 0}', "--watch")
    assert code == 0, out
    done = out.split()[0]
    code, out = cli(server, "list", "--dead-letters", "--all")
    assert code == 0, out
    assert "dead letters" in out and old in out and done not in out
    code, out = cli(server, "retry", old, "--priority", "9", "--watch")
    assert code == 1, out  # the same input fails the same way
    new = out.split()[0]
    assert len(new) == 32 and new != old
    assert "failed (after 3 attempts)" in out
    code, out = cli(server, "show", new, "--json")
    assert code == 0, out
    rerun = json.loads(out)
    assert (rerun["metadata"]["retry_of"], rerun["priority"], rerun["owner"]) == (old, 9, "alice")
    assert rerun["dead_letter"] == "attempts-exhausted"
    code, out = cli(server, "retry", done)
    assert code == 1
    assert "is completed: only a failed or cancelled task can be retried" in out
    code, out = cli(server, "retry", "0" * 32)
    assert code == 1
    assert out.startswith("taskbus: no task")


def test_show_prints_the_question_and_respond_answers_it(server: str) -> None:
    code, out = cli(server, "submit", "demo:deploy", "--json", '{"service": "api"}')
    assert code == 0, out
    task_id = out.strip()
    deadline = time.monotonic() + 10
    while (snap := json.loads(cli(server, "show", task_id, "--json")[1]))["state"] != "waiting":
        assert time.monotonic() < deadline, snap
        time.sleep(0.02)
    code, out = cli(server, "show", task_id)
    assert code == 0, out
    for expected in ("waiting", "asks", "Which branch of api to deploy? (ask-1)", "branch"):
        assert expected in out, out
    code, out = cli(server, "respond", task_id, '{"dry_run": true}')
    assert code == 1, out
    assert "branch" in out and "Field required" in out
    code, out = cli(server, "respond", task_id, "{not json")
    assert code == 2, out
    code, out = cli(server, "respond", task_id, '{"branch": "main"}')
    assert code == 0, out
    assert f"answered {task_id}" in out
    code, out = cli(server, "watch", task_id)
    assert code == 0, out
    assert "deployed api@main" in out
    code, out = cli(server, "respond", task_id, '{"branch": "again"}')
    assert code == 1, out
    assert "not waiting" in out


def test_types_lists_names_descriptions_and_inputs(server: str) -> None:
    code, out = cli(server, "types")
    assert code == 0, out
    assert "demo:clone-repo" in out
    assert "repo: string" in out
    code, out = cli(server, "types", "--json")
    assert code == 0, out
    found = {item["name"]: item for item in json.loads(out)}
    assert "repo" in found["demo:clone-repo"]["input_schema"]["properties"]


def test_errors_from_the_api_are_clear(server: str) -> None:
    code, out = cli(server, "stats", token="wrong-token")
    assert code == 1
    assert "taskbus:" in out
    code, out = cli(server, "cancel", "0" * 32)
    assert code == 1
    assert "taskbus:" in out
    code, out = cli(server, "submit", "demo:nothing-like-it")
    assert code == 1
    assert "demo:nothing-like-it" in out


def test_watch_all_prints_events_until_ctrl_c(server: str, tmp_path: Path) -> None:
    env = {**os.environ, "TASKBUS_URL": server, "TASKBUS_TOKEN": TOKEN}
    log = tmp_path / "watch.log"
    command = [sys.executable, "-m", "taskbus.integrations.cli", "watch"]
    with log.open("w") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        payload = {"repo": "w/atch", "objects": 2, "step_delay": 0}
        with ApiClient(server, TOKEN) as client:
            deadline = time.monotonic() + 8
            # Until the stream is connected for a task's whole life: one that connects
            # between a task's queued and completed events hears only the end of it.
            while not {"task-queued", "task-completed"} <= set(log.read_text().split()):
                assert time.monotonic() < deadline, log.read_text()
                client.submit("demo:clone-repo", payload)
                time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=5) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    text = log.read_text()
    assert "task-queued" in text
    assert "demo:clone-repo" in text
    assert "stopped watching" in text


def test_worker_refuses_a_bus_whose_store_processes_cannot_share(app_module: str) -> None:
    result = runner.invoke(app, ["worker", "--app", f"{app_module}:bus"])
    assert result.exit_code == 2, result.output
    assert "store that processes share" in result.output
    assert "sqlite:///" in result.output


def test_worker_asks_for_workers_when_the_app_has_none(
    app_module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKBUS_CLI_DB", str(tmp_path / "jobs.db"))
    result = runner.invoke(app, ["worker", "--app", f"{app_module}:shared_client"])
    assert result.exit_code == 2, result.output
    assert "pass --workers N" in result.output
    bad_level = ["--workers", "1", "--log-level", "chatty"]
    result = runner.invoke(app, ["worker", "--app", f"{app_module}:shared_client", *bad_level])
    assert result.exit_code == 2, result.output
    assert "--log-level" in result.output


def test_worker_app_must_be_a_bus(app_module: str) -> None:
    result = runner.invoke(app, ["worker", "--app", f"{app_module}:not_a_bus"])
    assert result.exit_code == 2
    assert "not a TaskBus" in result.output


def wait_for_text(path: Path, pattern: str, process: subprocess.Popen[bytes]) -> re.Match[str]:
    """The first match of `pattern` in the file at `path`, within 10 s."""
    deadline = time.monotonic() + 10
    while (found := re.search(pattern, path.read_text())) is None:
        if process.poll() is not None:
            pytest.fail(f"the process exited early:\n{path.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {pattern!r} within 10 s:\n{path.read_text()}")
        time.sleep(0.05)
    return found


def test_serve_announces_once_listening_logs_json_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path,
) -> None:
    command = [sys.executable, "-m", "taskbus.integrations.cli", "serve", "--port", "0"]
    command += ["--db", str(tmp_path / "tasks.db"), "--log-format", "json"]
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
    try:
        url = wait_for_text(out, r"serving on (http://127\.0\.0\.1:\d+)", process)[1]
        # Said once it listens: the first request, with no retry, is answered.
        with ApiClient(url) as client:
            assert client.health()["status"] == "ok"
            task_id = client.submit("demo:flaky", {"failures": 0})["id"]
            events = httpx.stream("GET", f"{url}/events", timeout=httpx.Timeout(5, read=None))
            with events as stream:  # open at the Ctrl-C
                assert stream.status_code == 200
                wait_for_text(err, rf'"message": "completed {task_id}', process)
                process.send_signal(signal.SIGINT)
                assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    output = out.read_text() + err.read_text()
    for noise in ("Traceback", "ASGI", "CancelledError", "KeyboardInterrupt"):
        assert noise not in output, output
    assert out.read_text().count("serving on") == 1
    assert "taskbus serve: SIGINT: stopping (running tasks get 10s" in out.read_text()
    assert out.read_text().rstrip().endswith("taskbus serve stopped")
    logs = [json.loads(line) for line in err.read_text().splitlines()]
    [completed] = [
        line for line in logs if line.get("task_id") == task_id and line["level"] == "INFO"
    ]
    assert completed["logger"] == "taskbus.lifecycle"
    assert completed["task_type"] == "demo:flaky"
    assert completed["duration"] >= 0


def test_worker_logs_each_transition_it_makes_once_as_json(
    app_module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKBUS_CLI_DB", str(tmp_path / "jobs.db"))
    module = importlib.import_module(app_module)

    async def submit_one() -> str:
        async with module.shared_client() as client:
            register_demo_tasks(client)
            return str((await client.submit("demo:flaky", {"failures": 0})).id)

    task_id = anyio.run(submit_one)
    command = [sys.executable, "-m", "taskbus.integrations.cli", "worker"]
    command += ["--app", f"{app_module}:shared_worker", "--log-format", "json"]
    command += ["--log-level", "debug"]
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env)
    try:
        wait_for_text(err, rf'"message": "completed {task_id}', process)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    logs = [json.loads(line) for line in err.read_text().splitlines()]
    mine = [line for line in logs if task_id in line["message"]]
    assert [line["message"].split()[0] for line in mine] == ["started", "completed"], mine
    assert {(line["task_id"], line["task_type"]) for line in mine} == {(task_id, "demo:flaky")}
    assert "Traceback" not in out.read_text() + err.read_text()


def test_schedules_add_list_pause_resume_and_remove(server: str) -> None:
    payload = json.dumps({"failures": 0})
    code, out = cli(server, "schedules", "add", "demo:flaky", "--every", "3600", "--json", payload)
    assert code == 0, out
    assert out.startswith("alice/demo:flaky next fire "), out
    code, out = cli(server, "schedules")
    assert code == 0, out
    for column in ("id", "type", "when", "next fire", "paused"):
        assert column in out
    assert "alice/demo:flaky" in out and "every 3600.0 s" in out
    code, out = cli(server, "schedules", "--json")
    assert code == 0, out
    listed = json.loads(out)
    assert [s["id"] for s in listed] == ["alice/demo:flaky"]
    code, out = cli(server, "schedules", "pause", "alice/demo:flaky")
    assert (code, out.strip()) == (0, "paused alice/demo:flaky")
    assert json.loads(cli(server, "schedules", "--json")[1])[0]["paused"] is True
    code, out = cli(server, "schedules", "resume", "alice/demo:flaky")
    assert (code, out.strip()) == (0, "resumed alice/demo:flaky")
    code, out = cli(server, "schedules", "remove", "alice/demo:flaky")
    assert (code, out.strip()) == (0, "removed alice/demo:flaky")
    assert json.loads(cli(server, "schedules", "--json")[1]) == []


def test_schedules_bad_input_says_why(server: str) -> None:
    code, out = cli(server, "schedules", "add", "demo:flaky", "--cron", "never")
    assert code == 1
    assert "not a cron expression" in out
    code, out = cli(server, "schedules", "add", "demo:nothing", "--every", "5")
    assert code == 1
    assert "no task type named 'demo:nothing'" in out
    code, out = cli(server, "schedules", "pause", "nope")
    assert code == 1
    assert "no schedule with id 'nope'" in out
