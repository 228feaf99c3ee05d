"""The ``taskbus`` client commands and ``taskbus serve``.

Argument handling, the SSE parser and the error mapping run in-process (typer's
`CliRunner`, httpx's `MockTransport`); ``submit --app`` runs a bus in-process.
The end-to-end tests start one real ``taskbus serve`` subprocess (with a token)
for the module, wait for ``/healthz`` with a bounded loop, drive it with the
client commands, and terminate it in a ``finally``.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

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
from taskbus.integrations.cli import TaskBar, app
from taskbus.integrations.cli import _report_final as report_final
from taskbus.integrations.cli import _report_snapshot as report_snapshot
from taskbus.integrations.cli import _watch_task as watch_task

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

def shared_client():
    import os
    return TaskBus(store=f"sqlite:///{os.environ['TASKBUS_CLI_DB']}", workers=0)
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


def test_submit_in_process_rejects_what_is_not_a_bus(app_module: str) -> None:
    result = runner.invoke(app, ["submit", "demo:flaky", "--app", f"{app_module}:not_a_bus"])
    assert result.exit_code == 2
    assert "not a TaskBus" in result.output


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
            while "task-completed" not in log.read_text():  # until the stream is connected
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
