"""Tracing: tasks per second with OpenTelemetry traces on, against off, as users run it.

Each case runs a workload (see `_observed`: ``noop`` and ``realistic``, a pydantic
input and about 1 ms of CPU work) through ``TaskBus(workers=100)`` on the memory
store twice per round, on fresh event loops:

- ``off`` (the reference, just before): a bus `taskbus.otel.instrument` never saw;
- ``on``: an instrumented bus on the OpenTelemetry SDK, exporting to a counting
  exporter through a simple (synchronous) or a batch span processor (what
  production uses, the SDK's defaults), always sampling or with
  ``ParentBased(TraceIdRatioBased(0.1))``.

With ``caller: "span"`` each submit runs under a request span of its own (made in
both runs), so each task makes a ``taskbus.submit`` and a ``taskbus.run`` span;
with ``caller: "none"`` the submitting code is untraced: no submit span, and each
run span is a trace's root (what it would cost to make a submit span always is the
"span" case's cost, as that makes both).

Three rounds (one with ``--quick``); the best of each counts. One JSON line per
case: both throughputs, their ratio, the cost per task in µs (1/on - 1/off), the
process's CPU time per task on and off with their difference and ratio (other
processes on a busy machine move these much less than the wall clock), and the
spans exported, the caller's included (a batch processor drops what overflows
its queue). ``--case NAME`` (repeatable) runs only those cases.
"""

from __future__ import annotations

from functools import partial

import anyio
from _observed import WORKERS, Best, calibrate, compare, provider, run, workloads
from _reference import emit, parser
from opentelemetry.sdk.trace import TracerProvider

from taskbus import TaskBus
from taskbus.otel import instrument

TARGET_RATIO = 0.85
ROUNDS = 3
#: (case, workload, span processor, sampler, caller)
CASES = [
    ("traces-on", "noop", "simple", "always", "span"),
    ("batch-processor", "noop", "batch", "always", "span"),
    ("ratio-sampler", "noop", "batch", "ratio-0.1", "span"),
    ("untraced-caller", "noop", "batch", "always", "none"),
    ("realistic", "realistic", "batch", "always", "span"),
    ("realistic-ratio-sampler", "realistic", "batch", "ratio-0.1", "span"),
]


def main() -> None:
    options = parser(__doc__)
    options.add_argument(
        "--case", action="append", choices=[case[0] for case in CASES], help="only these cases"
    )
    args = options.parse_args()
    rounds = 1 if args.quick else ROUNDS
    iterations = calibrate()
    loads = workloads(args.quick)
    for case, load_name, processor, sampler, caller in CASES:
        if args.case and case not in args.case:
            continue
        load = loads[load_name]
        off, on = Best(), Best()
        exported = 0
        for _ in range(rounds):
            reference, _ = provider(processor, sampler)
            off.add(anyio.run(partial(run, load, caller=reference if caller == "span" else None)))
            reference.shutdown()
            traced, exporter = provider(processor, sampler)

            def trace(bus: TaskBus, traced: TracerProvider = traced) -> None:
                instrument(bus, tracer_provider=traced)

            on.add(
                anyio.run(
                    partial(run, load, caller=traced if caller == "span" else None, setup=trace)
                )
            )
            traced.shutdown()  # flushes a batch processor
            exported = exporter.exported
        figures = compare(on, off)
        emit(
            {
                "bench": "tracing",
                "case": case,
                "task": load_name,
                "work_iterations": iterations if load_name == "realistic" else 0,
                "processor": processor,
                "sampler": sampler,
                "caller": caller,
                "tasks": load.tasks,
                "workers": WORKERS,
                **figures,
                "reference_tracing_off_tasks_per_s": round(off.tasks_per_s),
                "spans_exported": exported,
                "target_ratio": TARGET_RATIO,
                "meets_target": figures["ratio"] >= TARGET_RATIO,
            }
        )


if __name__ == "__main__":
    main()
