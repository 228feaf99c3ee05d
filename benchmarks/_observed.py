"""What the observability benchmarks (tracing.py, observability.py) share: the two
task workloads, the OpenTelemetry SDK set-ups a user runs, and one timed run.

Workloads:

- ``noop``: ``async def noop(ctx) -> None``, 20,000 tasks (2,000 with ``--quick``):
  what taskbus itself costs, the worst case for any per-task overhead;
- ``realistic``: a handler that takes a pydantic input model (``Order``: three
  fields) and does about 1 ms of CPU work (PBKDF2-SHA256, its iterations
  calibrated on the machine at start), 2,000 tasks (200 with ``--quick``).

Every task is submitted by ``await bus.submit`` one after another, each under a
span of its own when the case has a caller span (a request handler's span, made
by the same SDK in both the traced and the untraced run, so the ratio is what
taskbus's tracing adds); timed from the first submit until the last result.
"""

from __future__ import annotations

import gc
import hashlib
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased
from pydantic import BaseModel

from taskbus import TaskBus, TaskContext
from taskbus.stores import MemoryStore

__all__ = [
    "WORKERS",
    "Best",
    "CountingExporter",
    "Measure",
    "Workload",
    "calibrate",
    "compare",
    "provider",
    "run",
    "workloads",
]

WORKERS = 100


class Order(BaseModel):
    """The realistic task's input."""

    id: int
    sku: str
    quantity: int


#: PBKDF2 iterations that take about 1 ms here (`calibrate`).
_ITERATIONS = [1000]


def calibrate(target_s: float = 0.001) -> int:
    """Set the realistic task's iterations so that one takes about `target_s`."""
    probe = 20_000
    fastest = float("inf")
    for _ in range(5):  # the fastest: what another process took meanwhile does not count
        start = time.perf_counter()
        hashlib.pbkdf2_hmac("sha256", b"order", b"salt", probe)
        fastest = min(fastest, time.perf_counter() - start)
    per_iteration = fastest / probe
    _ITERATIONS[0] = max(1, round(target_s / per_iteration))
    return _ITERATIONS[0]


async def noop(ctx: TaskContext) -> None:
    return None


async def realistic(ctx: TaskContext, order: Order) -> str:
    digest = hashlib.pbkdf2_hmac("sha256", order.sku.encode(), b"salt", _ITERATIONS[0])
    return digest.hex()[: order.quantity]


@dataclass(frozen=True)
class Workload:
    name: str
    handler: Callable[..., Any]
    tasks: int
    payload: Callable[[int], Any]


def workloads(quick: bool) -> dict[str, Workload]:
    scale = 10 if quick else 1
    return {
        "noop": Workload("noop", noop, 20_000 // scale, lambda n: None),
        "realistic": Workload(
            "realistic",
            realistic,
            2_000 // scale,
            lambda n: {"id": n, "sku": f"SKU-{n % 97}", "quantity": 1 + n % 9},
        ),
    }


class CountingExporter(SpanExporter):
    """An exporter that keeps nothing but a count (a no-op exporter that can be read)."""

    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Any) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def provider(processor: str, sampler: str) -> tuple[TracerProvider, CountingExporter]:
    """An SDK tracer provider: a "simple" or "batch" span processor (the SDK's
    defaults) over a counting exporter; sampler "always" or "ratio-0.1"
    (``ParentBased(TraceIdRatioBased(0.1))``)."""
    chosen: Sampler = ALWAYS_ON if sampler == "always" else ParentBased(TraceIdRatioBased(0.1))
    exporter = CountingExporter()
    made = TracerProvider(sampler=chosen)
    span_processor = (
        SimpleSpanProcessor(exporter) if processor == "simple" else BatchSpanProcessor(exporter)
    )
    made.add_span_processor(span_processor)
    return made, exporter


@dataclass(frozen=True)
class Measure:
    """One timed run: wall-clock throughput, and the process's CPU time per task
    (every thread of it, the span processor's too; what other processes on a busy
    machine take does not count, so it moves much less than the wall clock)."""

    tasks_per_s: float
    cpu_us_per_task: float


@dataclass
class Best:
    """The best of the rounds of one side of a case."""

    tasks_per_s: float = 0.0
    cpu_us_per_task: float = float("inf")

    def add(self, measure: Measure) -> None:
        self.tasks_per_s = max(self.tasks_per_s, measure.tasks_per_s)
        self.cpu_us_per_task = min(self.cpu_us_per_task, measure.cpu_us_per_task)


def compare(on: Best, off: Best) -> dict[str, Any]:
    """The figures every observability line has, `on` against `off`."""
    ratio = on.tasks_per_s / off.tasks_per_s
    return {
        "tasks_per_s": round(on.tasks_per_s),
        "ratio": round(ratio, 3),
        "cost_per_task_us": round((1 / on.tasks_per_s - 1 / off.tasks_per_s) * 1e6, 2),
        "cpu_us_per_task": round(on.cpu_us_per_task, 2),
        "reference_cpu_us_per_task": round(off.cpu_us_per_task, 2),
        "cpu_cost_per_task_us": round(on.cpu_us_per_task - off.cpu_us_per_task, 2),
        "cpu_ratio": round(off.cpu_us_per_task / on.cpu_us_per_task, 3),
    }


async def run(
    workload: Workload,
    *,
    caller: TracerProvider | None,
    setup: Callable[[TaskBus], Any] | None = None,
    finish: Callable[[Any], Any] | None = None,
) -> Measure:
    """Tasks per second through a fresh bus on the memory store, and CPU time. `setup(bus)`
    instruments it (its result goes to ``await finish(result)`` inside the timing);
    `caller` makes a span around each submit."""
    bus = TaskBus(workers=WORKERS, store=MemoryStore(max_finished=workload.tasks))
    bus.task(f"bench:{workload.name}")(workload.handler)
    state = setup(bus) if setup is not None else None
    tracer = caller.get_tracer("bench") if caller is not None else None
    task_type, payload = f"bench:{workload.name}", workload.payload
    async with bus:
        gc.collect()
        start, cpu = time.perf_counter(), time.process_time()
        handle = None
        for n in range(workload.tasks):
            with tracer.start_as_current_span("request") if tracer else nullcontext():
                handle = await bus.submit(task_type, payload(n))
        assert handle is not None
        await handle.result()
        if finish is not None:
            await finish(state)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Measure(workload.tasks / elapsed, cpu / workload.tasks * 1e6)
