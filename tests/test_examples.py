"""Every example runs and prints what its docstring says; so does `taskbus demo`.

Each runs in a subprocess with this interpreter, under a bounded timeout.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _redis import URL as REDIS_URL
from rich.console import Console
from typer.testing import CliRunner

from taskbus import TaskBus, TaskState, __version__
from taskbus.integrations.cli import app
from taskbus.integrations.demo import DemoItem, PlainView, run_demo, summary_table
from taskbus.integrations.demo_tasks import register_demo_tasks

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

#: Lines each example must print (a substring of its output, in any order).
EXPECTED: dict[str, list[str]] = {
    "quickstart.py": [
        "  0.0% receiving objects 0%",
        "100.0% receiving objects 100%",
        "cloned https://example.com/repo.git",
    ],
    "progress_listener.py": [
        "[sync listener]  queued files:copy",
        "[subscription]   task-progress",
        "[subscription]   task-completed",
        "subscription ended after the final event",
        "late subscriber got: ['task-completed']",
        "[async listener] files:copy completed",
    ],
    "retries_and_timeouts.py": [
        "retrying net:fetch: attempt 2 failed",
        "net:fetch: completed: 200 OK from https://example.org on attempt 3",
        "net:slow: failed after 2 attempt(s), retryable, but no attempts left: timed out",
        "net:upload: failed after 1 attempt(s), user-actionable",
        "suggested action: run `app login`, then try again",
        "net:parse: failed after 1 attempt(s), fatal",
    ],
    "durable_jobs.py": [
        "first bus finished 2023 and closed with 2 jobs queued",
        "second bus ran 2024: Summary",
        "second bus ran 2025: Summary",
        "same key returns the finished job: True",
        "typed result from the file: year=2023 rows=23",
    ],
    "plugin_site_builder.py": [
        "running in host: ['host:index']",
        "running in site-builder: ['site-builder:site-build']",
        "registered after unload: ['host:index']",
        "docs: docs -> 20 files",
        "blog: task type removed: plugin 'site-builder' unregistered it",
    ],
    "ipc_router.py": [
        "status -> {'status': 'done', 'result': {'path': '/src/app', 'dirty': False}}",
        "clone -> queued",
        "  completed: cloned https://example.com/app.git",
        "clone result: cloned https://example.com/app.git",
    ],
    "batch_import.py": [
        "  batch finished: 5 ok, 1 failed",
        "summary: total=6 completed=5 failed=1",
    ],
    "process_progress.py": [
        "sum of squares below 2,000,000: 2,666,664,666,667,000,000",
        "first report 0%, last report 100%",
        "reports in order: True",
        "cancel running: True",
        "result() raised TaskCancelledError: user pressed stop",
        "cancelled task: cancelled",
    ],
    "metrics.py": [
        "'error_type': '', 'outcome': 'completed', 'type': 'images:thumbnail'} 4",
        "'error_type': 'fatal', 'outcome': 'failed', 'type': 'images:thumbnail'} 1",
        "taskbus_task_retries_total {'error_type': 'retryable', 'type': 'images:thumbnail'} 1",
        "taskbus_task_run_seconds_count {'type': 'images:thumbnail'} 6",
        "taskbus_tasks {'state': 'completed', 'type': 'images:thumbnail'} 4",
    ],
    "otel_metrics.py": [
        "{'error.type': '', 'outcome': 'completed', 'type': 'images:thumbnail'} 4",
        "{'error.type': 'fatal', 'outcome': 'failed', 'type': 'images:thumbnail'} 1",
        "taskbus.task.retries {'error.type': 'retryable', 'type': 'images:thumbnail'} 1",
        "taskbus.task.run {'type': 'images:thumbnail'} 6",
        "taskbus.tasks {'state': 'completed', 'type': 'images:thumbnail'} 4",
    ],
    "run_at.py": [
        "weekly is queued until",
        "overdue ran at once: True",
        "weekly ran no sooner than asked: True",
        "refused: run_at must be timezone-aware",
    ],
    "dead_letters.py": [
        "dead letters: 2",
        "invoice 1: attempts-exhausted after 2/2 attempt(s): mail server unreachable",
        "invoice 2: not-retryable after 1/2 attempt(s): no address for invoice 2",
        "retried: invoice 1 sent to ann@example.com",
        "owner ann, metadata keys ['batch', 'retry_of']",
        "retried: invoice 2 sent to bob",
        "owner bob, metadata keys ['retry_of']",
        "re-run names the old task: True",
        "the old task stays failed",
        "refused: completed tasks are not retried",
    ],
    "rate_limits.py": [
        "bob's clone ran while alice's first ran: bob/docs",
        "alice's second clone waits for: concurrency 1 per key 'alice'",
        "at most one clone per user at once: {'alice': 1, 'bob': 1}",
        "globex's call was not held up; acme calls waiting: 1",
        "acme's third call waits for: rate limit 2/second (key 'acme')",
        "acme's third call started a window after its first: True",
    ],
    "dependencies.py": [
        "publish is queued, waiting for parents",
        "build: app-1.2.0.whl",
        "test: tested app-1.2.0.whl",
        "publish: published after 'tested app-1.2.0.whl'",
        "report: ci:publish completed; ci:publish completed",
        "on_parent_failure=cancel: cancelled (parent task ",
        "on_parent_failure=fail: failed (parent task ",
        "on_parent_failure=run: completed (ci:build failed)",
    ],
    "schedules.py": [
        "registered twice, one schedule: 1",
        "next fire kept: True",
        "nightly next fires at 02:30 in Paris",
        "beat: api is alive (schedule ops:heartbeat)",
        "refused: not a cron expression: 'every night'",
        "paused: True",
    ],
    "input_required.py": [
        "waiting: Which branch of shop?",
        "meanwhile, with one worker: pong",
        "the bus stopped while the task waited",
        "after a restart it is still waiting",
        "refused: branch field required",
        "deployed shop@main",
    ],
    "cancel.py": [
        "cancel queued: True",
        "cancel running: True",
        "result() raised TaskCancelledError: user pressed stop",
        "queued task: cancelled, attempts=0",
        "running task: cancelled, attempts=1",
        "cancel finished: False",
    ],
    "sync_script.py": [
        "100.0% resized c.jpg",
        "resized 3 images: ['a.png', 'b.png', 'c.png']",
        "thumbnails: 2 images",
        "bad input: failed as fatal: no such file: missing.png",
    ],
    "qt_window.py": [
        "photos.zip: pressing Cancel at",
        "report.pdf: completed (exported 20 pages)",
        "photos.zip: cancelled (user pressed Cancel)",
    ],
    "mcp_command_runner.py": [
        "task types: shell:run",
        "echo: completed, exit 0: ['hello']",
        "  progress: step 3",
        "printf: exit 0, 3 lines: ['step 1', 'step 2', 'step 3']",
        "sleep 30 after 0.3 s: done=False, state=running",
        "a second connection reads it back: state=running",
        "cancel: cancelled=True, state=cancelled",
        "SIGTERM was enough, no SIGKILL after the grace: True",
        "your tasks: completed, completed, cancelled",
    ],
    "mcp_http_owners.py": [
        "alice: task working, polling tasks/get",
        "  working: running: 75%, page 3 of 3",
        "alice, reconnected: completed: report 2025: 3 pages",
        "bob asks for alice's task: no task with id '<id>'",
        "bob asks for no one's task: no task with id '<id>'",
        "no token: this request has no owner for tasks (not authenticated?)",
    ],
    "jobs_api.py": [
        "alice: POST /tasks -> 202 queued, at once: True",
        "Location is the job's url: True",
        "  alice's job:  45% reading 3 sources",
        "  alice's job: 100% answer ready",
        "  alice's job: completed: What changed in Q3?: answered from 3 sources",
        "alice sees 1 job(s): 'What changed in Q3?' completed",
        "bob sees 1 job(s): 'Who won the match?' completed",
        "alice asks for bob's job: 404 not_found",
        "bob cancels alice's job: 404 not_found",
        "no token: 401 unauthorized",
    ],
    "redis_workers.py": [
        "workers ready: 2",
        "same key, same task: True",
        "photo-6.jpg: photo-6.jpg resized by pid",
        "every task ran once: True",
        "completed 7 of 7",
    ],
    "clone_daemon.py": [
        "submitted repo:clone: 202 queued",
        "connection 1: 6 events, dropped on purpose after id",
        "reconnected with Last-Event-ID:",
        "ended by the final event: True",
        "ids strictly increasing: True",
        "no event lost or duplicated: True",
        "last task-completed",
        "result: cloned https://example.com/big.git (240 objects)",
    ],
    "tracing.py": [
        "stored trace context: True",
        "result: report 2025",
        "POST /reports [UNSET]",
        "  taskbus.submit reports:build [UNSET]",
        "    taskbus.run reports:build [ERROR] taskbus.progress, exception, taskbus.retrying",
        "    taskbus.run reports:build [UNSET] taskbus.progress",
        "      render [UNSET]",
    ],
}

#: Arguments and environment for examples that need them (Qt with no display).
ARGS: dict[str, list[str]] = {
    "qt_window.py": ["--auto"],
    "mcp_command_runner.py": ["--demo"],
    "mcp_http_owners.py": ["--demo"],
    "jobs_api.py": ["--demo"],
    "clone_daemon.py": ["--demo"],
}
ENV: dict[str, dict[str, str]] = {
    "qt_window.py": {"QT_QPA_PLATFORM": "offscreen"},
    "redis_workers.py": {"TASKBUS_REDIS_URL": REDIS_URL},
}
#: What Qt's offscreen platform prints on stderr whenever a window's layout changes.
QT_OFFSCREEN_NOISE = "This plugin does not support propagateSizeHints()"

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.py"))


def run(
    args: list[str], timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **env} if env else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_example_runs(path: Path) -> None:
    assert path.name in EXPECTED, f"add the expected output of {path.name} to EXPECTED"
    if path.name == "qt_window.py":
        pytest.importorskip("PySide6", reason="needs the qt extra")
    result = run([str(path), *ARGS.get(path.name, [])], timeout=20, env=ENV.get(path.name))
    assert result.returncode == 0, result.stderr
    stderr = [line for line in result.stderr.splitlines() if line != QT_OFFSCREEN_NOISE]
    assert stderr == []
    for line in EXPECTED[path.name]:
        assert line in result.stdout, f"{line!r} not in the output:\n{result.stdout}"


def test_every_example_is_listed_in_the_readme() -> None:
    readme = (EXAMPLES / "README.md").read_text()
    for path in EXAMPLE_FILES:
        assert f".venv/bin/python examples/{path.name}" in readme
    assert set(EXPECTED) == {path.name for path in EXAMPLE_FILES}


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [["--no-live"], ["--backend", "trio"]],
    ids=["asyncio-no-live", "trio-live-not-a-tty"],
)
def test_demo_ends_as_expected(options: list[str]) -> None:
    started = time.monotonic()
    result = run(["-m", "taskbus.integrations.cli", "demo", *options], timeout=25)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed < 15
    out = result.stdout
    assert "taskbus demo: final states" in out
    for state in ("completed", "failed", "cancelled"):
        assert state in out
    assert "6 completed" in out
    assert "user pressed stop" in out
    assert "timed out after 1s" in out
    assert "every task ended as expected" in out


def test_demo_task_types_are_registered() -> None:
    bus = TaskBus()
    register_demo_tasks(bus)
    assert bus.registry.types() == [
        "demo:clone-repo",
        "demo:crunch",
        "demo:deploy",
        "demo:flaky",
        "demo:long-job",
        "demo:slow-timeout",
    ]
    assert bus.registry.get("demo:crunch").run_in == "process"


def test_cli_version_and_help() -> None:
    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0
    assert __version__ in version.output
    helped = runner.invoke(app, ["demo", "--help"])
    assert helped.exit_code == 0
    assert "--no-live" in helped.output


@pytest.mark.anyio
async def test_demo_summary_flags_an_unexpected_state() -> None:
    plan = [
        DemoItem(
            "quick clone",
            "demo:clone-repo",
            {"repo": "a/b", "objects": 2, "step_delay": 0},
            5,
            TaskState.FAILED,  # it completes: the summary must say so
        )
    ]
    buffer = io.StringIO()
    console = Console(file=buffer, width=120)
    outcome = await run_demo(PlainView(console), 2, plan)
    assert outcome.finished_in_time
    assert [snap.state for _, snap in outcome.snapshots] == [TaskState.COMPLETED]
    table, all_expected = summary_table(outcome)
    assert not all_expected
    console.print(table)
    output = buffer.getvalue()
    assert "completed (expected failed)" in output
    assert "quick clone" in output
    assert "started (attempt 1)" in output
