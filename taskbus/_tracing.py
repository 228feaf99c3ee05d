"""The seam through which a tracer sees tasks (`taskbus.otel` fills it).

The core never imports a tracing library: the bus holds a `Tracing` only when one
was installed (`taskbus.otel.instrument`), and otherwise checks one attribute for
None, so tracing off costs no per-task work. The submitting span's context travels
in the task's metadata (`TRACE_KEYS`, W3C Trace Context), which every store keeps,
so a worker in another process continues the trace.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from ._record import TaskRecord

__all__ = ["TRACE_KEYS", "Fired", "Interruption", "Tracing"]

#: The metadata keys that carry a task's trace context; taskbus's own (reserved).
TRACE_KEYS = ("traceparent", "tracestate")

#: How an attempt was stopped from outside its handler.
Interruption = Literal["cancelled", "timeout", "handed-back"]


class Fired(Protocol):
    """The span of one schedule fire, while it is current."""

    def lost(self) -> None:
        """Another process fired it first: the span is dropped, never exported."""


class Tracing(Protocol):
    """What the bus tells a tracer; every method is called on the event loop."""

    def submitting(self, name: str | None, count: int = 1) -> AbstractContextManager[object]:
        """Around one submit of task type `name` (None: a batch of `count` tasks): the
        context current inside is the one `inject` stores with each task."""

    def firing(
        self, schedule_id: str, task_type: str, fires_for: float
    ) -> AbstractContextManager[Fired]:
        """Around one fire of a schedule (for the wall time `fires_for`): a trace of
        its own, whatever was current when the bus started."""

    def inject(self, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        """`metadata` (already checked) plus the current trace context, if any."""

    def attempt(self, record: TaskRecord) -> AbstractContextManager[object]:
        """Around one attempt of `record`, from its start to its settled state."""

    def in_process(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        """`handler`, to be pickled to a worker process, where it runs in the
        context current now (the attempt's)."""

    def failed(self, record: TaskRecord, exc: BaseException, retry_in: float | None) -> None:
        """The attempt of `record` that runs now raised `exc`; it runs again after
        `retry_in` seconds, or never (None)."""

    def progress(self, record: TaskRecord) -> None:
        """`record` reported progress (debounced, as its events are)."""

    def interrupted(self, record: TaskRecord, kind: Interruption, reason: str) -> None:
        """The attempt of `record` that runs now was stopped from outside."""
