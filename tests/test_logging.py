"""Log lines people can read: one per transition, structured fields, JSON, no root.

The transition lines (`taskbus._transition_log`) are checked on a memory and a
SQLite bus (the SQLite one logs through the store's event log); `JsonFormatter`
and the CLI's `configure_logging` on plain records.
"""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import anyio
import pytest

from taskbus import FatalError, JsonFormatter, RetryableError, RetryPolicy, TaskBus, TaskContext
from taskbus.integrations._cli_logging import LogFormat, LogLevel, configure_logging

pytestmark = pytest.mark.anyio

WAIT = 5.0


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 't.db'}"


def of_task(records: list[logging.LogRecord], task_id: str) -> list[logging.LogRecord]:
    return [r for r in records if getattr(r, "task_id", None) == task_id]


class Bus(TaskBus):
    """A bus with the test's task types; `holding` is set once log:hold runs."""

    holding: anyio.Event


def make_bus(store: str) -> Bus:
    bus = Bus(store=store, workers=2, shutdown_grace=1.0)
    bus.holding = anyio.Event()
    attempts: list[int] = []

    @bus.task("log:flaky", retry=RetryPolicy(max_attempts=3, base_delay=0.01, jitter=0))
    async def flaky(ctx: TaskContext, failures: int) -> str:
        attempts.append(1)
        if len(attempts) <= failures:
            raise RetryableError(f"try {len(attempts)} [bold]failed[/bold]")
        return "ok"

    @bus.task("log:fatal")
    async def fatal(ctx: TaskContext, text: str) -> None:
        raise FatalError(text)

    @bus.task("log:hold")
    async def hold(ctx: TaskContext, seconds: float) -> None:
        bus.holding.set()
        await anyio.sleep(seconds)

    return bus


async def test_a_retried_task_logs_one_line_per_transition_with_its_fields(
    store: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="taskbus")
    async with make_bus(store) as bus:
        handle = await bus.submit("log:flaky", 1)
        assert await handle.result(timeout=WAIT) == "ok"
    records = of_task(caplog.records, handle.id)
    kinds = [(r.levelname, r.getMessage().split()[0]) for r in records]
    assert kinds == [
        ("DEBUG", "queued"),
        ("DEBUG", "started"),
        ("INFO", "retrying"),
        ("DEBUG", "started"),
        ("INFO", "completed"),
    ], [r.getMessage() for r in records]
    assert {r.name for r in records} == {"taskbus.lifecycle"}
    assert all(r.__dict__["task_type"] == "log:flaky" for r in records)
    retrying, completed = records[2], records[4]
    assert retrying.__dict__["delay"] == pytest.approx(0.01)
    assert retrying.__dict__["reason"] == "try 1 [bold]failed[/bold]"
    assert retrying.__dict__["attempt"] == 1
    assert "in 0.010s: try 1 [bold]failed[/bold]" in retrying.getMessage()
    assert completed.__dict__["attempt"] == 2
    assert completed.__dict__["duration"] >= 0
    assert f"completed {handle.id} log:flaky attempt=2 in " in completed.getMessage()


async def test_a_failure_logs_its_error_type_and_message(
    store: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskbus")
    async with make_bus(store) as bus:
        handle = await bus.submit("log:fatal", "bad input :bus:")
        await handle.wait(timeout=WAIT)
    [failed] = of_task(caplog.records, handle.id)
    assert failed.levelname == "INFO"
    assert failed.__dict__["error_type"] == "fatal"
    assert failed.__dict__["exception_type"] == "taskbus.FatalError"
    assert failed.__dict__["error"] == "bad input :bus:"
    assert failed.getMessage().endswith("(fatal, FatalError): bad input :bus:")
    assert failed.getMessage().startswith(f"failed {handle.id} log:fatal attempt=1 in ")


async def test_a_cancel_logs_its_reason_once(store: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="taskbus")
    async with make_bus(store) as bus:
        running = await bus.submit("log:hold", 30)
        with anyio.fail_after(WAIT):
            await bus.holding.wait()
        assert await bus.cancel(running.id, reason="user pressed stop")
        await running.wait(timeout=WAIT)
    [cancelled] = of_task(caplog.records, running.id)
    assert cancelled.__dict__["reason"] == "user pressed stop"
    assert cancelled.getMessage().startswith(f"cancelled {running.id} log:hold attempt=1 in ")
    assert cancelled.getMessage().endswith(": user pressed stop")


# -- JsonFormatter --------------------------------------------------------------------


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    logger = logging.getLogger("taskbus.test")
    made = logger.makeRecord(logger.name, logging.INFO, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_json_formatter_writes_one_object_with_the_extra_fields() -> None:
    line = JsonFormatter().format(
        record("completed %s", "abc", task_id="abc", task_type="t:x", duration=0.25, note=object)
    )
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "INFO"
    assert data["logger"] == "taskbus.test"
    assert data["message"] == "completed abc"
    assert data["task_id"] == "abc" and data["task_type"] == "t:x"
    assert data["duration"] == 0.25
    assert data["note"] == str(object)  # what JSON cannot hold, as text
    assert data["time"].endswith("+00:00")
    assert not {"args", "msg", "levelno", "pathname", "exception"} & set(data)


def test_json_formatter_adds_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        made = record("it failed")
        made.exc_info = sys.exc_info()
    data = json.loads(JsonFormatter().format(made))
    assert data["message"] == "it failed"
    assert "ValueError: boom" in data["exception"]


# -- the CLI's configuration ----------------------------------------------------------


def test_configure_logging_sets_only_its_loggers_and_puts_them_back() -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    taskbus_logger = logging.getLogger("taskbus")
    saved = (taskbus_logger.level, taskbus_logger.propagate, list(taskbus_logger.handlers))
    with configure_logging(LogLevel.DEBUG, LogFormat.JSON) as handler:
        assert isinstance(handler, logging.StreamHandler)
        handler.setStream(stream := io.StringIO())
        assert (list(root.handlers), root.level) == before
        assert taskbus_logger.level == logging.DEBUG and not taskbus_logger.propagate
        logging.getLogger("taskbus.lifecycle").debug(
            "queued %s", "abc", extra={"task_id": "abc", "task_type": "t:x"}
        )
    assert (taskbus_logger.level, taskbus_logger.propagate, taskbus_logger.handlers) == (
        saved[0],
        saved[1],
        saved[2],
    )
    data = json.loads(stream.getvalue())
    assert data["message"] == "queued abc"
    assert data["logger"] == "taskbus.lifecycle"
    assert data["task_id"] == "abc"


def test_configure_logging_writes_text_lines() -> None:
    with configure_logging(LogLevel.WARNING, LogFormat.TEXT) as handler:
        handler.setStream(stream := io.StringIO())
        logging.getLogger("taskbus.x").info("not at INFO")
        logging.getLogger("taskbus.x").warning("a warning")
    assert stream.getvalue().endswith(" WARNING taskbus.x: a warning\n")
