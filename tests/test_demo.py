"""The demo's task types and views: strict inputs, plain schemas, honest failures."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import anyio
import pytest
from rich.console import Console

from taskbus import (
    ErrorType,
    InvalidTaskInput,
    TaskBus,
    TaskCancelledError,
    TaskFailed,
    TaskProgress,
    TaskQueued,
)
from taskbus.integrations.demo import PlainView, failure_note
from taskbus.integrations.demo_tasks import register_demo_tasks
from taskbus.testing import EventRecorder, FakeClock


def demo_bus() -> TaskBus:
    bus = TaskBus()
    register_demo_tasks(bus)
    return bus


def descriptions(schema: Any) -> Iterator[str]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "description" and isinstance(value, str):
                yield value
            else:
                yield from descriptions(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from descriptions(item)


@pytest.mark.parametrize(
    ("task_type", "payload", "unknown"),
    [
        ("demo:clone-repo", {"repo": "a/b", "delay": 0}, "delay"),
        ("demo:long-job", {"steps": 3, "step_dealy": 0}, "step_dealy"),
        ("demo:flaky", {"failure": 1}, "failure"),
    ],
)
def test_a_demo_input_refuses_an_unknown_key_and_names_it(
    task_type: str, payload: dict[str, Any], unknown: str
) -> None:
    definition = demo_bus().registry.get(task_type)
    with pytest.raises(InvalidTaskInput) as raised:
        definition.validate_input(payload)
    assert [(error["type"], error["loc"]) for error in raised.value.errors()] == [
        ("extra_forbidden", (unknown,))
    ]
    assert unknown in str(raised.value)


def test_demo_schema_descriptions_are_plain_text() -> None:
    bus = demo_bus()
    for definition in bus.registry.definitions():
        schema = definition.input_schema()
        assert schema.get("additionalProperties") is False, definition.name
        texts = list(descriptions(schema))
        assert texts, definition.name
        for text in texts:
            assert "`" not in text, f"{definition.name}: reST markup in {text!r}"
        assert all(prop.get("description") for prop in schema["properties"].values())


def test_a_final_failure_is_never_called_retryable() -> None:
    assert failure_note(ErrorType.RETRYABLE, 3) == "after 3 attempts"
    assert failure_note(ErrorType.FATAL, 1) == "fatal, after 1 attempt"
    assert failure_note("user-actionable", 2) == "user-actionable, after 2 attempts"
    buffer = io.StringIO()
    view = PlainView(Console(file=buffer, width=200))
    now = datetime.now(UTC)
    common = {"task_id": "t1", "task_type": "demo:slow-timeout", "timestamp": now}
    view.apply(TaskQueued(**common, priority=5, estimated_duration=None, metadata={}))
    view.apply(
        TaskFailed(
            **common,
            error="timed out after 1s",
            error_type=ErrorType.RETRYABLE,
            suggested_action=None,
            retryable=True,
            attempt_count=1,
        )
    )
    line = buffer.getvalue().splitlines()[-1]
    assert "failed: timed out after 1s (after 1 attempt)" in line
    assert "retryable" not in line


def test_the_demo_runs_on_the_cli_extra_alone() -> None:
    """`make demo` installs ``.[cli]`` only: the demo must import nothing from the
    other extras or the test toolchain."""
    import subprocess
    import sys
    import textwrap

    others = ["starlette", "uvicorn", "sse_starlette", "httpx", "redis", "mcp", "PySide6"]
    others += ["trio", "pytest", "hypothesis", "playwright"]
    code = textwrap.dedent(
        f"""
        import sys

        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in {others!r}:
                    raise ImportError(f"the demo imported {{name}}")
                return None

        sys.meta_path.insert(0, Refuse())
        from taskbus.integrations.cli import main

        sys.argv = ["taskbus", "demo", "--no-live"]
        main()
        """
    )
    ran = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert "every task ended as expected" in ran.stdout


@pytest.mark.anyio
async def test_crunch_reports_progress_from_its_process() -> None:
    bus = TaskBus(shutdown_grace=1.0, clock=FakeClock())  # no trailing edges: deterministic
    register_demo_tasks(bus)
    async with bus:
        recorder = EventRecorder(bus)
        handle = await bus.submit("demo:crunch", {"limit": 20_000})
        assert await handle.result(timeout=30) == 2262  # primes below 20,000
    progress = recorder.of(TaskProgress, handle.id)
    assert [event.current for event in progress] == [5_000, 15_000]
    assert progress[-1].message == "1754 primes below 15,000"


@pytest.mark.anyio
async def test_crunch_stops_when_cancelled() -> None:
    bus = TaskBus(shutdown_grace=1.0)
    register_demo_tasks(bus)
    async with bus:
        recorder = EventRecorder(bus)
        handle = await bus.submit("demo:crunch", {"limit": 10_000_000})
        await recorder.wait_for(TaskProgress, task_id=handle.id, timeout=30)
        await handle.cancel("user pressed stop")
        with anyio.fail_after(10), pytest.raises(TaskCancelledError):
            await handle.result()
