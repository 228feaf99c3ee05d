"""Tracing: no-op tasks per second with OpenTelemetry traces on, against off.

Submits 20,000 tasks of an ``async def noop(ctx: TaskContext) -> None`` handler
to ``TaskBus(workers=100)`` on the memory store, timed from the first submit
until the last task's result, twice per round on fresh event loops:

- ``off`` (the reference, in the same process just before): a bus that
  `taskbus.otel.instrument` never saw;
- ``on``: an instrumented bus whose tracer provider is the OpenTelemetry SDK's,
  exporting every span to an in-memory exporter through a simple (synchronous)
  span processor; every submit runs under one recording span, so each task
  stores its trace context and each attempt extracts it and makes its span.

Three rounds (one with ``--quick``); the best of each counts. One JSON line:
both throughputs, their ratio (the issue's target for traces and metrics on
together: within 15 %, ratio >= 0.85) and the spans exported (one per task).
"""

from __future__ import annotations

import gc
import time

import anyio
from _reference import emit, parser, rounded
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from taskbus import TaskBus, TaskContext
from taskbus.otel import instrument
from taskbus.stores import MemoryStore

TASK_TYPE = "bench:noop"
WORKERS = 100
TARGET_RATIO = 0.85
ROUNDS = 3


async def noop(ctx: TaskContext) -> None:
    return None


async def run(tasks: int, provider: TracerProvider | None) -> float:
    """Tasks per second through a bus, traced by `provider` when one is given."""
    bus = TaskBus(workers=WORKERS, store=MemoryStore(max_finished=tasks))
    bus.task(TASK_TYPE)(noop)
    if provider is not None:
        instrument(bus, tracer_provider=provider)
    async with bus:
        gc.collect()
        start = time.perf_counter()
        if provider is None:
            handle = None
            for _ in range(tasks):
                handle = await bus.submit(TASK_TYPE)
        else:
            with provider.get_tracer("bench").start_as_current_span("submitting"):
                for _ in range(tasks):
                    handle = await bus.submit(TASK_TYPE)
        assert handle is not None
        await handle.result()
        elapsed = time.perf_counter() - start
    return tasks / elapsed


def main() -> None:
    args = parser(__doc__).parse_args()
    tasks = 2_000 if args.quick else 20_000
    rounds = 1 if args.quick else ROUNDS
    off: list[float] = []
    on: list[float] = []
    spans = 0
    for _ in range(rounds):
        off.append(anyio.run(run, tasks, None))
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        on.append(anyio.run(run, tasks, provider))
        spans = sum(
            span.name == f"taskbus.run {TASK_TYPE}" for span in exporter.get_finished_spans()
        )
        provider.shutdown()
    best_off, best_on = max(off), max(on)
    ratio = best_on / best_off
    emit(
        {
            "bench": "tracing",
            "case": "traces-on",
            "tasks": tasks,
            "workers": WORKERS,
            "tasks_per_s": round(best_on),
            "reference_tracing_off_tasks_per_s": round(best_off),
            "ratio": rounded(ratio),
            "spans_exported": spans,
            "target_ratio": TARGET_RATIO,
            "meets_target": ratio >= TARGET_RATIO,
        }
    )


if __name__ == "__main__":
    main()
