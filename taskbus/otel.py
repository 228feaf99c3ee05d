"""OpenTelemetry traces for a bus (extra ``otel``: ``pip install 'taskbus[otel]'``).

`instrument(bus)` follows the OpenTelemetry messaging conventions:

- a submit made while a recording span is current runs under a span
  ``taskbus.submit <type>`` (kind PRODUCER; ``taskbus.submit_batch`` for a batch),
  a child of that span; its W3C trace context is stored with the task
  (``metadata["traceparent"]``), so a trace goes from an HTTP request through
  SQLite or Redis to a worker process. Without a recording span current, no
  span is made at submit (untraced code pays nothing and gets no root trace per
  submit); a valid context that is not recorded (sampled out) is stored as it is.
- each fire of a schedule starts a trace of its own under ``taskbus.schedule <id>``
  (kind PRODUCER), whatever span was current when the bus started;
- every attempt runs under ``taskbus.run <type>`` (kind CONSUMER), a child of
  the stored context (or a trace of its own without one). Sync handlers on a
  thread and handlers in a worker process run in its context too. Progress and
  retries are span events; a failed attempt records its exception and status
  ERROR; a cancel or timeout is an event (a timeout also ERROR).

`instrument_metrics(bus)` exports the bus's figures as OpenTelemetry metrics.

Only ``opentelemetry-api`` is needed here; the application chooses the SDK and
exporters (without one, the API's spans are no-ops).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from contextvars import Token
from datetime import UTC, datetime
from functools import lru_cache, partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

try:
    from opentelemetry import context as context_api
    from opentelemetry import metrics, trace
    from opentelemetry.context import Context
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - the message says what to install
    raise ImportError("taskbus.otel needs OpenTelemetry: pip install 'taskbus[otel]'") from exc

from ._otel_metrics import OtelMetrics
from ._states import TaskState
from ._tracing import Interruption

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._record import TaskRecord
    from ._taskbus import TaskBus

__all__ = ["OtelMetrics", "instrument", "instrument_metrics"]

_PROPAGATOR = TraceContextTextMapPropagator()
_VERSION = "0.1.0"
_NOTHING: AbstractContextManager[object] = nullcontext()
_ROOT = Context()
#: Span names and attributes by task type, made once (a bus has few types).
_NAMES_KEPT = 1000


def instrument(bus: TaskBus, *, tracer_provider: TracerProvider | None = None) -> None:
    """Trace `bus`'s tasks with OpenTelemetry (the global tracer provider unless
    `tracer_provider` is given). Call it once, before ``async with bus``, in every
    process that submits or runs tasks: a submitting process makes the submit spans
    and stores their context, a worker process makes the run spans."""
    if bus.executor.tracing is not None:
        raise RuntimeError("this bus is traced already")
    tracing = _OtelTracing(trace.get_tracer("taskbus", _VERSION, tracer_provider))
    bus.executor.tracing = tracing
    bus.lifecycle.tracing = tracing
    bus._intake.tracing = tracing


class _OtelTracing:
    """The spans of the tasks of one bus (see `taskbus._tracing.Tracing`)."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._spans: dict[str, Span] = {}
        self._run_names: dict[str, str] = {}
        self._submit_attributes: dict[str, dict[str, str]] = {}

    def submitting(self, name: str | None, count: int = 1) -> AbstractContextManager[object]:
        if not trace.get_current_span().is_recording():
            return _NOTHING
        if name is None:
            attributes: dict[str, str | int] = {
                **_SENDING,
                "messaging.batch.message_count": count,
            }
            return self._producer("taskbus.submit_batch", attributes)
        kept = self._submit_attributes.get(name)
        if kept is None:
            if len(self._submit_attributes) >= _NAMES_KEPT:
                self._submit_attributes.clear()
            kept = self._submit_attributes[name] = {
                **_SENDING,
                "messaging.destination.name": name,
                "taskbus.task.type": name,
            }
        return self._producer(f"taskbus.submit {name}", kept)

    def _producer(self, name: str, attributes: Any, context: Context | None = None) -> _Producing:
        span = self._tracer.start_span(
            name, context, SpanKind.PRODUCER, attributes, set_status_on_exception=False
        )
        return _Producing(span, context_api.attach(trace.set_span_in_context(span)))

    def firing(self, schedule_id: str, task_type: str, fires_for: float) -> _Producing:
        attributes = {
            **_SENDING,
            "messaging.destination.name": task_type,
            "taskbus.task.type": task_type,
            "taskbus.schedule.id": schedule_id,
            "taskbus.schedule.fire_time": datetime.fromtimestamp(fires_for, UTC).isoformat(),
        }
        return self._producer(f"taskbus.schedule {schedule_id}", attributes, _ROOT)

    def inject(self, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        if not trace.get_current_span().get_span_context().is_valid:
            return metadata  # nothing to continue: no work (the common untraced case)
        carrier: dict[str, Any] = {}
        _PROPAGATOR.inject(carrier)
        return carrier if metadata is None else {**metadata, **carrier}

    def attempt(self, record: TaskRecord) -> _Attempt:
        return _Attempt(self, record)

    def run_name(self, task_type: str) -> str:
        name = self._run_names.get(task_type)
        if name is None:
            if len(self._run_names) >= _NAMES_KEPT:
                self._run_names.clear()
            name = self._run_names[task_type] = f"taskbus.run {task_type}"
        return name

    def in_process(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        if not carrier:
            return handler
        return partial(_run_in_context, carrier, handler)

    def failed(self, record: TaskRecord, exc: BaseException, retry_in: float | None) -> None:
        span = self._spans.get(record.id)
        if span is None or not span.is_recording():  # None: a timeout, settled after
            return  # its span ended (`interrupted`)
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        if retry_in is not None:
            span.add_event("taskbus.retrying", {"attempt": record.attempt, "delay": retry_in})

    def interrupted(self, record: TaskRecord, kind: Interruption, reason: str) -> None:
        span = self._spans.get(record.id)
        if span is None or not span.is_recording():
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


_SENDING = {"messaging.system": "taskbus", "messaging.operation.type": "send"}


class _Producing:
    """A submit's (or a fire's) span, current until it ends; a refused submit's error.

    Started when made, as ``start_as_current_span`` would, without its generator."""

    __slots__ = ("_dropped", "_span", "_token")

    def __init__(self, span: Span, token: Token[Context]) -> None:
        self._span = span
        self._token = token
        self._dropped = False

    def __enter__(self) -> Self:
        return self

    def lost(self) -> None:
        # A span never ended is never exported: no orphan fire in every other process.
        self._dropped = True

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        span = self._span
        try:
            if self._dropped:
                return
            if exc is not None and isinstance(exc, Exception) and span.is_recording():
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.end()
        finally:
            context_api.detach(self._token)


class _Attempt:
    """The run span of one attempt, current from its start to its settled state.

    A class rather than ``start_as_current_span``: it is made for every task, and
    this skips the generator and the exception bookkeeping (off here anyway)."""

    __slots__ = ("_record", "_span", "_token", "_tracing")

    def __init__(self, tracing: _OtelTracing, record: TaskRecord) -> None:
        self._tracing = tracing
        self._record = record

    def __enter__(self) -> None:
        record = self._record
        metadata = record.metadata
        # Without a stored context the attempt starts a trace of its own, rather than
        # joining whatever span was current when the bus started.
        parent = _ROOT
        if metadata is not None:
            traceparent = metadata.get("traceparent")
            if isinstance(traceparent, str):
                tracestate = metadata.get("tracestate")
                parent = _parent(traceparent, tracestate if isinstance(tracestate, str) else None)
        attributes: dict[str, str | int] = {
            "taskbus.task.id": record.id,
            "taskbus.task.type": record.type,
        }
        if record.owner is not None:
            attributes["taskbus.task.owner"] = record.owner
        tracing = self._tracing
        span = tracing._tracer.start_span(
            tracing.run_name(record.type),
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )
        self._span = span
        self._token = context_api.attach(trace.set_span_in_context(span))
        tracing._spans[record.id] = span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        record, span, spans = self._record, self._span, self._tracing._spans
        try:
            if span.is_recording():
                # Counted as the attempt starts (here, or by a shared store's claim).
                span.set_attribute("taskbus.task.attempt", record.attempt)
                if record.state is TaskState.CANCELLED:
                    span.add_event("taskbus.cancelled")
            if spans.get(record.id) is span:
                del spans[record.id]
            span.end()
        finally:
            context_api.detach(self._token)


@lru_cache(maxsize=1024)
def _parent(traceparent: str, tracestate: str | None) -> Context:
    """The context stored with a task, parsed once: the tasks of a batch share it, and
    a retry has its first attempt's."""
    carrier = {"traceparent": traceparent}
    if tracestate is not None:
        carrier["tracestate"] = tracestate
    return _PROPAGATOR.extract(carrier)


def _run_in_context(carrier: dict[str, str], handler: Callable[..., Any], *args: Any) -> Any:
    """``handler(*args)`` in a worker process, in the attempt's trace context."""
    token = context_api.attach(_PROPAGATOR.extract(carrier))
    try:
        return handler(*args)
    finally:
        context_api.detach(token)


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
