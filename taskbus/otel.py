"""OpenTelemetry traces for a bus (extra ``otel``: ``pip install 'taskbus[otel]'``).

`instrument(bus)` makes every attempt of every task run under a span
``taskbus.run <type>`` (kind CONSUMER), a child of the span that was current
when the task was submitted, in this process or another: the submitting span's
W3C trace context is stored with the task (``metadata["traceparent"]``), so a
trace goes from an HTTP request through SQLite or Redis to a worker process.
Progress and retries are span events; a failed attempt records its exception
and status ERROR; a cancel or timeout is an event (a timeout also ERROR).

Only ``opentelemetry-api`` is needed here; the application chooses the SDK and
exporters (without one, the API's spans are no-ops).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import metrics, trace
    from opentelemetry.context import Context
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - the message says what to install
    raise ImportError("taskbus.otel needs OpenTelemetry: pip install 'taskbus[otel]'") from exc

from ._otel_metrics import OtelMetrics
from ._states import TaskState
from ._tracing import TRACE_KEYS, Interruption

if TYPE_CHECKING:
    from ._record import TaskRecord
    from ._taskbus import TaskBus

__all__ = ["OtelMetrics", "instrument", "instrument_metrics"]

_PROPAGATOR = TraceContextTextMapPropagator()
_VERSION = "0.1.0"


def instrument(bus: TaskBus, *, tracer_provider: TracerProvider | None = None) -> None:
    """Trace `bus`'s tasks with OpenTelemetry (the global tracer provider unless
    `tracer_provider` is given). Call it once, before ``async with bus``, in every
    process that submits or runs tasks: a submitting process stores the trace
    context, a worker process makes the run spans."""
    if bus.executor.tracing is not None:
        raise RuntimeError("this bus is traced already")
    tracing = _OtelTracing(trace.get_tracer("taskbus", _VERSION, tracer_provider))
    bus.executor.tracing = tracing
    bus.lifecycle.tracing = tracing
    bus._intake.tracing = tracing


class _OtelTracing:
    """The spans of the attempts that run on one bus (see `taskbus._tracing.Tracing`)."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._spans: dict[str, Span] = {}

    def inject(self, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        if not carrier:  # no recording span is current: nothing to continue
            return metadata
        return {**(metadata or {}), **carrier}

    @contextmanager
    def attempt(self, record: TaskRecord) -> Iterator[None]:
        metadata = record.metadata or {}
        carrier = {key: metadata[key] for key in TRACE_KEYS if isinstance(metadata.get(key), str)}
        # Without a stored context the attempt starts a trace of its own, rather than
        # joining whatever span was current when the bus started.
        parent = _PROPAGATOR.extract(carrier) if carrier else Context()
        attributes: dict[str, str | int] = {
            "taskbus.task.id": record.id,
            "taskbus.task.type": record.type,
        }
        if record.owner is not None:
            attributes["taskbus.task.owner"] = record.owner
        with self._tracer.start_as_current_span(
            f"taskbus.run {record.type}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            self._spans[record.id] = span
            try:
                yield
            finally:
                # Counted as the attempt starts (here, or by a shared store's claim).
                span.set_attribute("taskbus.task.attempt", record.attempt)
                if self._spans.get(record.id) is span:
                    del self._spans[record.id]
                if record.state is TaskState.CANCELLED and span.is_recording():
                    span.add_event("taskbus.cancelled")

    def failed(self, record: TaskRecord, exc: BaseException, retry_in: float | None) -> None:
        span = self._spans.get(record.id)
        if span is None:  # a timeout, settled after its span ended (`interrupted`)
            return
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        if retry_in is not None:
            span.add_event("taskbus.retrying", {"attempt": record.attempt, "delay": retry_in})

    def interrupted(self, record: TaskRecord, kind: Interruption, reason: str) -> None:
        span = self._spans.get(record.id)
        if span is None:
            return
        if kind == "timeout":
            span.set_status(Status(StatusCode.ERROR, reason))
        span.add_event(f"taskbus.{kind}", {"reason": reason})

    def progress(self, record: TaskRecord) -> None:
        span = self._spans.get(record.id)
        if span is None or not span.is_recording():
            return
        attributes: dict[str, str | int | float] = {}
        for name in ("progress", "message", "current", "total"):
            value = getattr(record, name)
            if value is not None:
                attributes[name] = value
        span.add_event("taskbus.progress", attributes)


def instrument_metrics(
    bus: TaskBus, *, meter_provider: MeterProvider | None = None, stats_interval: float = 10.0
) -> OtelMetrics:
    """Export `bus`'s figures (those `taskbus.metrics` gives Prometheus) as
    OpenTelemetry metrics, through `meter_provider` (the global one when None).
    The store's counts are read every `stats_interval` seconds while the bus runs;
    ``close()`` stops exporting."""
    meter = metrics.get_meter("taskbus", _VERSION, meter_provider)
    exported = OtelMetrics(bus, meter, stats_interval=stats_interval)
    bus.add_service(exported.keep_refreshing)
    return exported
