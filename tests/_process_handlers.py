"""Module-level handlers for process tests (a worker process must import them)."""

import os
import time
from pathlib import Path
from typing import Any

from taskbus import ProcessContext


def write_pid_and_sleep(path: str) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(60)


def square(value: int) -> int:
    return value * value


def count_with_progress(ctx: ProcessContext, steps: int) -> int:
    for step in range(1, steps + 1):
        ctx.progress(current=step, total=steps, message=f"step {step}")
    return steps


def ask_in_a_process(ctx: ProcessContext) -> Any:
    return ctx.ask("Which branch?")


def report_then_wait(ctx: ProcessContext, path: str) -> str:
    ctx.progress(50, "half way")
    _wait_for(Path(path))
    return "done"


def spin_until_cancelled(ctx: ProcessContext, path: str) -> str:
    """Polls for cancellation; writes "cleaned up" to `path` as it stops."""
    try:
        ctx.progress(0, "spinning")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ctx.raise_if_cancelled()
            time.sleep(0.005)
        return "never cancelled"
    finally:
        Path(path).write_text("cleaned up")


def deaf_to_cancel(ctx: ProcessContext, path: str) -> None:
    """Never checks for cancellation: writes its pid to `path` and sleeps."""
    Path(path).write_text(str(os.getpid()))
    ctx.progress(0, "sleeping")
    time.sleep(60)


def describe(ctx: ProcessContext) -> dict[str, Any]:
    return {
        "task_id": ctx.task_id,
        "task_type": ctx.task_type,
        "attempt": ctx.attempt,
        "owner": ctx.owner,
        "metadata": ctx.metadata,
        "cancelled": ctx.cancelled,
        "pid": os.getpid(),
    }


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


def parent_results(ctx: ProcessContext, label: str) -> list[Any]:
    """The label, then each parent's result, as the worker process sees them."""
    return [label, *(parent.result for parent in ctx.parents)]


def trace_ids() -> tuple[str, str]:
    """The trace and span ids current in the worker process (hex)."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def span_with_own_sdk(ctx: ProcessContext) -> tuple[str, str, str]:
    """Make a span with an SDK of the worker process's own: its trace id, parent span
    id and the current span's ids before it, as the test reads them."""
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    with provider.get_tracer("child").start_as_current_span("in process") as span:
        parent = span.parent  # type: ignore[attr-defined]  # an SDK span has one
        context = span.get_span_context()
    provider.shutdown()
    return f"{context.trace_id:032x}", f"{parent.span_id:016x}", ctx.task_id
