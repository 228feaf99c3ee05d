"""The traced app the OpenTelemetry tests run in a `taskbus worker` process.

Its store is the SQLite file ``TASKBUS_TEST_DB``, or the Redis store with the key
prefix ``TASKBUS_TEST_REDIS_PREFIX`` when set. Every span it ends is written to
``TASKBUS_TEST_SPANS`` as one JSON line, so the test reads the worker's spans.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from taskbus import TaskBus, TaskContext
from taskbus.otel import instrument
from taskbus.stores import Store


class JsonLinesExporter(SpanExporter):
    """Appends each span to a file, one JSON object a line."""

    def __init__(self, path: str) -> None:
        self._path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with open(self._path, "a") as out:
            out.writelines(json.dumps(span_fields(span)) + "\n" for span in spans)
        return SpanExportResult.SUCCESS


def span_fields(span: ReadableSpan) -> dict[str, object]:
    """What the tests check of a span, as plain JSON."""
    context = span.context
    parent = span.parent
    assert context is not None
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": None if parent is None else f"{parent.span_id:016x}",
        "attributes": dict(span.attributes or {}),
        "events": [event.name for event in span.events],
        "status": span.status.status_code.name,
    }


def _store() -> Store | str:
    prefix = os.environ.get("TASKBUS_TEST_REDIS_PREFIX")
    if prefix is None:
        return f"sqlite:///{os.environ['TASKBUS_TEST_DB']}"
    from taskbus.stores.redis import RedisStore

    url = os.environ.get("TASKBUS_REDIS_URL", "redis://127.0.0.1:6379/15")
    return RedisStore(url, prefix=prefix)


def build(workers: int = 2) -> TaskBus:
    """The app's bus, not traced yet."""
    bus = TaskBus(store=_store(), workers=workers, shutdown_grace=0.5)

    @bus.task("otel:echo")
    async def echo(ctx: TaskContext, text: str) -> str:
        await ctx.progress(50, text)
        return text

    return bus


def make() -> TaskBus:
    """The worker's bus: traced, its spans written to ``TASKBUS_TEST_SPANS``."""
    bus = build()
    provider = TracerProvider()
    spans = os.environ.get("TASKBUS_TEST_SPANS")
    if spans is not None:
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(spans)))
    instrument(bus, tracer_provider=provider)
    return bus
