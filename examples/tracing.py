"""OpenTelemetry traces: a submit made under a span is a span of its own (PRODUCER),
and each attempt of the task a span (CONSUMER) under it, even when another bus
(here, on the same SQLite file) runs it.

Needs the ``otel`` extra and an SDK (``pip install 'taskbus[otel]' opentelemetry-sdk``);
the spans go to the SDK's in-memory exporter and are printed as a tree.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import anyio
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from taskbus import RetryableError, RetryPolicy, TaskBus, TaskContext
from taskbus.otel import instrument

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("example")


def make_bus(store: str, workers: int) -> TaskBus:
    bus = TaskBus(store=store, workers=workers)

    @bus.task("reports:build", retry=RetryPolicy(max_attempts=2, base_delay=0, jitter=0))
    async def build(ctx: TaskContext, year: int) -> str:
        await ctx.progress(50, "rows loaded")
        if ctx.attempt == 1:
            raise RetryableError("the database was busy")
        with tracer.start_as_current_span("render"):  # a span of the handler's own
            return f"report {year}"

    instrument(bus, tracer_provider=provider)  # in every process that submits or runs
    return bus


def show(span: ReadableSpan, spans: list[ReadableSpan], depth: int = 0) -> None:
    events = ", ".join(event.name for event in span.events)
    print(f"{'  ' * depth}{span.name} [{span.status.status_code.name}] {events}".rstrip())
    assert span.context is not None
    for child in spans:
        if child.parent is not None and child.parent.span_id == span.context.span_id:
            show(child, spans, depth + 1)


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = f"sqlite:///{Path(folder) / 'jobs.db'}"
        web, worker = make_bus(store, workers=0), make_bus(store, workers=1)
        async with web:
            with tracer.start_as_current_span("POST /reports"):
                handle = await web.submit("reports:build", 2025)
            print("stored trace context:", "traceparent" in (await web.get(handle.id)).metadata)
            async with worker:
                print("result:", await handle.result(timeout=10))
    spans = list(exporter.get_finished_spans())
    (root,) = [span for span in spans if span.parent is None]
    show(root, spans)


if __name__ == "__main__":
    anyio.run(main)
