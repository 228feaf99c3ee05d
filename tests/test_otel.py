"""OpenTelemetry traces (`taskbus.otel`): a span per attempt, a child of the span
that submitted the task, in this process, through a SQLite file, and across a
`taskbus worker` process on SQLite and on Redis. Spans are read back through the
SDK's in-memory exporter (here) or a JSON lines file (the worker's)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from _redis import prefix_for
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, Tracer

from taskbus import (
    InvalidSubmission,
    RetryableError,
    RetryPolicy,
    TaskBus,
    TaskCancelledError,
    TaskContext,
    TaskFailedError,
)
from taskbus.otel import instrument

pytestmark = pytest.mark.anyio

TESTS = Path(__file__).parent


class Traces:
    """An SDK tracer provider whose spans end up in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer: Tracer = self.provider.get_tracer("tests")

    def spans(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.exporter.get_finished_spans() if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        (span,) = self.spans(name)
        return span


@pytest.fixture
def traces() -> Iterator[Traces]:
    found = Traces()
    yield found
    found.provider.shutdown()


def _is_child(span: ReadableSpan, parent: ReadableSpan) -> bool:
    assert span.parent is not None and parent.context is not None
    same_trace: bool = span.parent.trace_id == parent.context.trace_id
    return same_trace and span.parent.span_id == parent.context.span_id


async def test_an_attempt_runs_under_a_span_that_is_a_child_of_the_submitting_span(
    traces: Traces, anyio_backend: str
) -> None:
    bus = TaskBus(workers=2)
    instrument(bus, tracer_provider=traces.provider)
    inner: list[bool] = []

    @bus.task("otel:echo")
    async def echo(ctx: TaskContext, text: str) -> str:
        await ctx.progress(50, "halfway")
        with traces.tracer.start_as_current_span("inside"):
            inner.append(True)
        return text

    async with bus:
        with traces.tracer.start_as_current_span("request"):
            handle = await bus.submit("otel:echo", "hi", owner="alice")
        assert await handle.result(timeout=10) == "hi"
    request, run = traces.one("request"), traces.one("taskbus.run otel:echo")
    submit = traces.one("taskbus.submit otel:echo")
    assert _is_child(submit, request) and _is_child(run, submit)
    assert submit.kind is SpanKind.PRODUCER
    assert submit.attributes == {
        "messaging.system": "taskbus",
        "messaging.operation.type": "send",
        "messaging.destination.name": "otel:echo",
        "taskbus.task.type": "otel:echo",
    }
    assert _is_child(traces.one("inside"), run)
    assert run.kind is SpanKind.CONSUMER
    assert run.attributes == {
        "taskbus.task.id": handle.id,
        "taskbus.task.type": "otel:echo",
        "taskbus.task.attempt": 1,
        "taskbus.task.owner": "alice",
    }
    assert [event.name for event in run.events] == ["taskbus.progress"]
    assert run.events[0].attributes == {"progress": 50, "message": "halfway"}
    assert run.status.status_code is StatusCode.UNSET


async def test_each_attempt_has_a_span_and_a_failure_records_its_exception(
    traces: Traces, anyio_backend: str
) -> None:
    bus = TaskBus(workers=1)
    instrument(bus, tracer_provider=traces.provider)

    @bus.task("otel:flaky", retry=RetryPolicy(max_attempts=2, base_delay=0, jitter=0))
    async def flaky(ctx: TaskContext) -> None:
        raise RetryableError(f"attempt {ctx.attempt} broke")

    async with bus:
        with traces.tracer.start_as_current_span("request"):
            handle = await bus.submit("otel:flaky")
        with pytest.raises(TaskFailedError):
            await handle.result(timeout=10)
    first, second = traces.spans("taskbus.run otel:flaky")
    submit = traces.one("taskbus.submit otel:flaky")
    assert _is_child(first, submit) and _is_child(second, submit)
    assert [(span.attributes or {})["taskbus.task.attempt"] for span in (first, second)] == [1, 2]
    assert [event.name for event in first.events] == ["exception", "taskbus.retrying"]
    assert [event.name for event in second.events] == ["exception"]
    for span in (first, second):
        assert span.status.status_code is StatusCode.ERROR
        assert span.events[0].attributes is not None
        assert span.events[0].attributes["exception.type"] == "taskbus.RetryableError"


async def test_a_cancelled_attempt_says_so_in_its_span(traces: Traces, anyio_backend: str) -> None:
    bus = TaskBus(workers=1)
    instrument(bus, tracer_provider=traces.provider)
    started = anyio.Event()

    @bus.task("otel:wait")
    async def wait(ctx: TaskContext) -> None:
        started.set()
        await anyio.sleep_forever()

    async with bus:
        handle = await bus.submit("otel:wait")
        with anyio.fail_after(10):
            await started.wait()
        await bus.cancel(handle.id, reason="user pressed stop")
        with pytest.raises(TaskCancelledError):
            await handle.result(timeout=10)
    run = traces.one("taskbus.run otel:wait")
    assert run.parent is None  # nothing was current at submit: a trace of its own
    assert [event.name for event in run.events] == ["taskbus.cancelled"]
    assert run.events[0].attributes == {"reason": "user pressed stop"}


async def test_a_timed_out_attempt_is_an_error_that_says_so(
    traces: Traces, anyio_backend: str
) -> None:
    bus = TaskBus(workers=1)
    instrument(bus, tracer_provider=traces.provider)

    @bus.task("otel:slow", timeout=0.05, retry=RetryPolicy.never())
    async def slow(ctx: TaskContext) -> None:
        await anyio.sleep_forever()

    async with bus:
        handle = await bus.submit("otel:slow")
        with pytest.raises(TaskFailedError):
            await handle.result(timeout=10)
    run = traces.one("taskbus.run otel:slow")
    assert [event.name for event in run.events] == ["taskbus.timeout"]
    assert run.status.status_code is StatusCode.ERROR


async def test_a_thread_handler_runs_inside_its_attempts_span(
    traces: Traces, anyio_backend: str
) -> None:
    bus = TaskBus(workers=1)
    instrument(bus, tracer_provider=traces.provider)

    @bus.task("otel:sync")
    def work(ctx: TaskContext) -> int:
        with traces.tracer.start_as_current_span("in thread"):
            return 7

    async with bus:
        with traces.tracer.start_as_current_span("request"):
            handle = await bus.submit("otel:sync")
        assert await handle.result(timeout=10) == 7
    run = traces.one("taskbus.run otel:sync")
    assert _is_child(run, traces.one("taskbus.submit otel:sync"))
    assert _is_child(traces.one("in thread"), run)


async def test_the_trace_context_is_taskbuss_metadata(traces: Traces, anyio_backend: str) -> None:
    bus = TaskBus(workers=1)
    instrument(bus, tracer_provider=traces.provider)

    @bus.task("otel:noop")
    async def noop() -> None:
        return None

    async with bus:
        with pytest.raises(InvalidSubmission, match="traceparent"):
            await bus.submit("otel:noop", metadata={"traceparent": "00-" + "1" * 32 + "-2-01"})
        untraced = await bus.submit("otel:noop", metadata={"a": 1})
        assert (await bus.get(untraced.id)).metadata == {"a": 1}
        with traces.tracer.start_as_current_span("request"):
            traced = await bus.submit("otel:noop")
        context = traces.one("taskbus.submit otel:noop").context
        assert context is not None
        stored = (await bus.get(traced.id)).metadata
        flags = f"{context.trace_flags:02x}"
        assert stored == {
            "traceparent": f"00-{context.trace_id:032x}-{context.span_id:016x}-{flags}"
        }


async def test_untraced_buses_store_nothing_and_refuse_the_key_too(anyio_backend: str) -> None:
    bus = TaskBus(workers=1)

    @bus.task("otel:noop")
    async def noop() -> None:
        return None

    async with bus:
        with pytest.raises(InvalidSubmission, match="tracestate"):
            await bus.submit("otel:noop", metadata={"tracestate": "a=b"})


async def test_a_batch_and_a_rerun_join_the_trace_current_when_they_are_submitted(
    traces: Traces, anyio_backend: str
) -> None:
    bus = TaskBus(workers=1)
    instrument(bus, tracer_provider=traces.provider)

    runs: list[str] = []

    @bus.task("otel:once", retry=RetryPolicy.never())
    async def once(ctx: TaskContext) -> None:
        runs.append(ctx.task_id)
        if len(runs) == 1:
            raise RetryableError("the first run fails")

    async with bus:
        with traces.tracer.start_as_current_span("batch"):
            batch = await bus.submit_batch([("otel:once", None)])
        (first,) = batch.task_ids
        with pytest.raises(TaskFailedError):
            await bus.result(first, timeout=10)
        with traces.tracer.start_as_current_span("rerun"):
            again = await bus.retry(first)  # the stored context is not carried over
        await again.result(timeout=10)
    failed, rerun = traces.spans("taskbus.run otel:once")
    batch_span = traces.one("taskbus.submit_batch")
    assert batch_span.kind is SpanKind.PRODUCER
    assert (batch_span.attributes or {})["messaging.batch.message_count"] == 1
    assert _is_child(batch_span, traces.one("batch")) and _is_child(failed, batch_span)
    resubmit = traces.one("taskbus.submit otel:once")
    assert _is_child(resubmit, traces.one("rerun")) and _is_child(rerun, resubmit)


async def test_the_context_goes_through_a_sqlite_file_to_another_bus(
    traces: Traces, tmp_path: Path, anyio_backend: str
) -> None:
    store = f"sqlite:///{tmp_path / 'jobs.db'}"
    client, worker = TaskBus(store=store, workers=0), TaskBus(store=store, workers=1)
    instrument(client, tracer_provider=traces.provider)
    instrument(worker, tracer_provider=traces.provider)
    for bus in (client, worker):
        bus.task("otel:echo")(_echo)
    async with client:
        with traces.tracer.start_as_current_span("request"):
            handle = await client.submit("otel:echo", "via sqlite")
        async with worker:
            assert await handle.result(timeout=10) == "via sqlite"
    submit = traces.one("taskbus.submit otel:echo")
    assert _is_child(submit, traces.one("request"))
    assert _is_child(traces.one("taskbus.run otel:echo"), submit)


async def _echo(ctx: TaskContext, text: str) -> str:
    return text


@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("store_kind", ["sqlite", "redis"])
async def test_a_worker_process_continues_the_trace_of_the_submitting_process(
    traces: Traces, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_kind: str
) -> None:
    spans_file = tmp_path / "spans.jsonl"
    monkeypatch.setenv("TASKBUS_TEST_DB", str(tmp_path / "jobs.db"))
    if store_kind == "redis":
        monkeypatch.setenv("TASKBUS_TEST_REDIS_PREFIX", prefix_for(tmp_path))
    import _otel_app

    client = _otel_app.build(workers=0)  # this process submits only, its spans in memory
    instrument(client, tracer_provider=traces.provider)
    command = [sys.executable, "-m", "taskbus.integrations.cli", "worker"]
    with (tmp_path / "worker.err").open("ab") as errors:
        async with await anyio.open_process(
            [*command, "--app", "_otel_app:make"],
            cwd=TESTS,
            env={**os.environ, "TASKBUS_TEST_SPANS": str(spans_file)},
            stdout=subprocess.DEVNULL,
            stderr=errors,
        ) as process:
            try:
                async with client:
                    with traces.tracer.start_as_current_span("request"):
                        handle = await client.submit("otel:echo", "across")
                    assert await handle.result(timeout=20) == "across"
                    run = await _worker_span(spans_file, "taskbus.run otel:echo")
            finally:
                process.kill()
    submit = traces.one("taskbus.submit otel:echo")
    assert submit.context is not None
    assert run["trace_id"] == f"{submit.context.trace_id:032x}"
    assert run["parent_id"] == f"{submit.context.span_id:016x}"
    assert run["attributes"] == {
        "taskbus.task.id": handle.id,
        "taskbus.task.type": "otel:echo",
        "taskbus.task.attempt": 1,
    }
    assert run["events"] == ["taskbus.progress"]
    assert not traces.spans("taskbus.run otel:echo")  # it ran in the worker only


async def _worker_span(path: Path, name: str) -> dict[str, Any]:
    """The span the worker process writes once its attempt has settled."""
    with anyio.fail_after(20):
        while (span := _written_span(path, name)) is None:  # noqa: ASYNC110 - another process writes it
            await anyio.sleep(0.02)
    return span


def _written_span(path: Path, name: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    for line in path.read_text().splitlines():
        span: dict[str, Any] = json.loads(line)
        if span["name"] == name:
            return span
    return None
