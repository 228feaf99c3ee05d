"""OpenTelemetry traces (`taskbus.otel`) along every way a task comes in and runs:
the PRODUCER span of a submit, a chain, a batch, a sampled-out caller, a schedule's
fire (a trace of its own), the threaded facade, and handlers in a worker process
(the run span's context is current there). See test_otel.py for the run span."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import _process_handlers
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags

from taskbus import InvalidTaskInput, TaskBus, TaskContext, TaskQueued, ThreadedTaskBus
from taskbus.otel import instrument
from taskbus.testing import EventRecorder, FakeClock

pytestmark = pytest.mark.anyio


class Traces:
    """An SDK tracer provider whose spans end up in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(sampler=ParentBased(ALWAYS_ON))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

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


def _ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


async def _echo(ctx: TaskContext, value: int) -> int:
    return value


async def test_each_step_of_a_chain_is_submitted_under_a_span_of_its_own(
    traces: Traces, anyio_backend: str
) -> None:
    bus = TaskBus(workers=2)
    bus.task("flow:a")(_echo)
    bus.task("flow:b")(_echo)
    instrument(bus, tracer_provider=traces.provider)
    async with bus:
        with traces.tracer.start_as_current_span("request"):
            _first, second = await bus.chain(("flow:a", 1), ("flow:b", 2))
        assert await second.result(timeout=10) == 2
    request = traces.one("request")
    for name in ("flow:a", "flow:b"):
        submit = traces.one(f"taskbus.submit {name}")
        assert submit.kind is SpanKind.PRODUCER and _is_child(submit, request)
        assert _is_child(traces.one(f"taskbus.run {name}"), submit)


async def test_untraced_code_makes_no_submit_span_and_its_task_a_trace_of_its_own(
    traces: Traces, anyio_backend: str
) -> None:
    bus = TaskBus(workers=1)
    bus.task("flow:a")(_echo)
    instrument(bus, tracer_provider=traces.provider)
    async with bus:
        handle = await bus.submit("flow:a", 1)
        assert await handle.result(timeout=10) == 1
        assert (await bus.get(handle.id)).metadata == {}
    assert not traces.spans("taskbus.submit flow:a")
    assert traces.one("taskbus.run flow:a").parent is None


async def test_a_sampled_out_caller_is_continued_unrecorded(
    traces: Traces, anyio_backend: str
) -> None:
    bus = TaskBus(workers=1)
    bus.task("flow:a")(_echo)
    instrument(bus, tracer_provider=traces.provider)
    caller = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(0))
    async with bus:
        with trace.use_span(NonRecordingSpan(caller)):
            handle = await bus.submit("flow:a", 1)
        assert await handle.result(timeout=10) == 1
        stored = (await bus.get(handle.id)).metadata
    assert stored == {"traceparent": f"00-{0xABC:032x}-{0xDEF:016x}-00"}
    assert traces.exporter.get_finished_spans() == ()  # the caller's sampling decision holds


async def test_a_refused_submit_is_an_error_span(traces: Traces, anyio_backend: str) -> None:
    bus = TaskBus(workers=1)
    bus.task("flow:a")(_echo)
    instrument(bus, tracer_provider=traces.provider)
    async with bus:
        with traces.tracer.start_as_current_span("request"), pytest.raises(InvalidTaskInput):
            await bus.submit("flow:a", "not a number")
    submit = traces.one("taskbus.submit flow:a")
    assert submit.status.status_code is StatusCode.ERROR
    assert [event.name for event in submit.events] == ["exception"]


async def test_each_schedule_fire_starts_a_trace_of_its_own(
    traces: Traces, anyio_backend: str
) -> None:
    clock = FakeClock(start=1_700_000_000.0)
    bus = TaskBus(workers=1, clock=clock)
    bus.task("flow:a")(_echo)
    instrument(bus, tracer_provider=traces.provider)
    # The scheduler's task inherits the context of `async with bus`: not its fires.
    with traces.tracer.start_as_current_span("startup"):
        async with bus:
            recorder = EventRecorder(bus)
            schedule = await bus.schedule("flow:a", every=10, input=7, id="every-10")
            for fired in (1, 2):
                clock.advance(10)
                queued = await recorder.wait_for(TaskQueued, count=fired)
                await bus.wait(queued.task_id, timeout=10)
    fires = traces.spans("taskbus.schedule every-10")
    runs = traces.spans("taskbus.run flow:a")
    assert len(fires) == len(runs) == 2
    assert len({span.context.trace_id for span in fires if span.context}) == 2
    for fire, run, at in zip(
        fires, runs, ("2023-11-14T22:13:30", "2023-11-14T22:13:40"), strict=True
    ):
        assert fire.parent is None and fire.kind is SpanKind.PRODUCER
        assert _is_child(run, fire)
        assert fire.attributes == {
            "messaging.system": "taskbus",
            "messaging.operation.type": "send",
            "messaging.destination.name": "flow:a",
            "taskbus.task.type": "flow:a",
            "taskbus.schedule.id": schedule.id,
            "taskbus.schedule.fire_time": f"{at}+00:00",
        }


async def test_a_fire_another_process_took_first_exports_no_span(
    traces: Traces, tmp_path: Path, anyio_backend: str
) -> None:
    clock = FakeClock(start=1_700_000_000.0)
    url = f"sqlite:///{tmp_path / 'bus.db'}"
    buses = [TaskBus(store=url, workers=1, clock=clock) for _ in range(2)]
    for bus in buses:  # two processes, as far as the store can tell
        bus.task("flow:a")(_echo)
        instrument(bus, tracer_provider=traces.provider)
    async with buses[0], buses[1]:
        recorder = EventRecorder(buses[0])
        for bus in buses:  # every process registers it at start-up
            await bus.schedule("flow:a", every=10, input=7, id="every-10")
        for fired in (1, 2, 3):
            clock.advance(10)
            queued = await recorder.wait_for(TaskQueued, count=fired)
            await buses[0].wait(queued.task_id, timeout=10)
    fires = traces.spans("taskbus.schedule every-10")
    runs = traces.spans("taskbus.run flow:a")
    assert len(runs) == 3
    assert len(fires) == 3  # one per fire, whichever process won it
    assert all(any(_is_child(run, fire) for fire in fires) for run in runs)


def test_a_span_current_in_the_calling_thread_is_the_parent_of_a_threaded_submit(
    traces: Traces,
) -> None:
    bus = TaskBus(workers=1, shutdown_grace=0.5)
    bus.task("flow:a")(_echo)
    instrument(bus, tracer_provider=traces.provider)  # before it starts, as always
    with ThreadedTaskBus.start(bus) as tb:
        with traces.tracer.start_as_current_span("gui click"):
            handle = tb.submit("flow:a", 3)
            chained = tb.chain(("flow:a", 4))
        assert tb.result(handle.id, timeout=10) == 3
        assert tb.result(chained[0].id, timeout=10) == 4
    submits = traces.spans("taskbus.submit flow:a")
    assert len(submits) == 2
    runs = traces.spans("taskbus.run flow:a")
    for submit in submits:
        assert _is_child(submit, traces.one("gui click"))
        assert sum(_is_child(run, submit) for run in runs) == 1


async def test_a_process_handler_runs_in_its_run_spans_context(
    traces: Traces, anyio_backend: str
) -> None:
    bus = TaskBus(workers=2)
    bare = bus.task("flow:ids", run_in="process")(_process_handlers.trace_ids)
    sdk = bus.task("flow:sdk", run_in="process")(_process_handlers.span_with_own_sdk)
    instrument(bus, tracer_provider=traces.provider)
    async with bus:
        with traces.tracer.start_as_current_span("request"):
            ids = await bare.submit()
            own = await sdk.submit()
        seen = await ids.result(timeout=60)
        trace_id, parent_id, task_id = await own.result(timeout=60)
    assert seen == _ids(traces.one("taskbus.run flow:ids"))  # the run span, not the submit's
    assert task_id == own.id
    assert (trace_id, parent_id) == _ids(traces.one("taskbus.run flow:sdk"))


async def test_an_untraced_process_handler_sees_no_span(anyio_backend: str) -> None:
    bus = TaskBus(workers=1)
    bare = bus.task("flow:ids", run_in="process")(_process_handlers.trace_ids)
    async with bus:
        handle = await bare.submit()
        assert await handle.result(timeout=60) == ("0" * 32, "0" * 16)


async def test_a_thread_handler_sees_its_run_span(traces: Traces, anyio_backend: str) -> None:
    bus = TaskBus(workers=1)
    bus.task("flow:ids")(_process_handlers.trace_ids)  # a sync handler: on a thread
    instrument(bus, tracer_provider=traces.provider)
    async with bus:
        with traces.tracer.start_as_current_span("request"):
            handle = await bus.submit("flow:ids")
        seen = await handle.result(timeout=10)
    assert tuple(seen) == _ids(traces.one("taskbus.run flow:ids"))
