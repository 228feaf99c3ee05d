"""Observability: tasks per second with traces and metrics both on and exporting,
against both off (issue 13's target: within 15 %, ratio >= 0.85).

Each case runs a workload (see `_observed`: ``noop``, and ``realistic``: a pydantic
input and about 1 ms of CPU work) through ``TaskBus(workers=100)`` on the memory
store, alternately:

- ``off`` (the reference): a bus with neither;
- ``on``: the same bus traced by `taskbus.otel.instrument` on the OpenTelemetry SDK
  (a batch span processor, the SDK's defaults, over a counting exporter; always
  sampling, or ``ParentBased(TraceIdRatioBased(0.1))`` in the ``-sampled`` cases)
  and counted by ``taskbus.metrics.instrument(bus, CollectorRegistry())``, its
  registry refreshed and rendered once at the end as a scrape would, inside the
  timing.

Each submit runs under a request span of its own in both runs (a traced app's
request handler), so each traced task makes a submit and a run span.

Three rounds (one with ``--quick``), the best of each counts. One JSON line per
case: both throughputs, the ratio, the cost per task in µs (1/on - 1/off), the
process's CPU time per task on and off with their difference and ratio (other
processes on a busy machine move these much less than the wall clock), the target
0.85 and whether it is met. ``--case NAME`` (repeatable) runs only those cases.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
from _observed import WORKERS, Best, calibrate, compare, provider, run, workloads
from _reference import emit, parser
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry, generate_latest

from taskbus import TaskBus
from taskbus.metrics import instrument
from taskbus.otel import instrument as trace

TARGET_RATIO = 0.85
ROUNDS = 3
#: (case, workload, sampler)
CASES = [
    ("noop", "noop", "always"),
    ("noop-sampled", "noop", "ratio-0.1"),
    ("realistic", "realistic", "always"),
    ("realistic-sampled", "realistic", "ratio-0.1"),
]


async def scrape(observed: tuple[Any, CollectorRegistry]) -> None:
    """What a scrape does: read the store's counts, render the registry."""
    metrics, registry = observed
    await metrics.refresh()
    generate_latest(registry)


def main() -> None:
    options = parser(__doc__)
    options.add_argument(
        "--case", action="append", choices=[case[0] for case in CASES], help="only these cases"
    )
    args = options.parse_args()
    rounds = 1 if args.quick else ROUNDS
    iterations = calibrate()
    loads = workloads(args.quick)
    for case, load_name, sampler in CASES:
        if args.case and case not in args.case:
            continue
        load = loads[load_name]
        off, on = Best(), Best()
        for _ in range(rounds):
            caller, _ = provider("batch", sampler)
            off.add(anyio.run(partial(run, load, caller=caller)))
            caller.shutdown()
            traced, _ = provider("batch", sampler)

            def observe(
                bus: TaskBus, traced: TracerProvider = traced
            ) -> tuple[Any, CollectorRegistry]:
                trace(bus, tracer_provider=traced)
                registry = CollectorRegistry()
                return instrument(bus, registry), registry

            on.add(anyio.run(partial(run, load, caller=traced, setup=observe, finish=scrape)))
            traced.shutdown()
        figures = compare(on, off)
        emit(
            {
                "bench": "observability",
                "case": case,
                "task": load_name,
                "work_iterations": iterations if load_name == "realistic" else 0,
                "processor": "batch",
                "sampler": sampler,
                "tasks": load.tasks,
                "workers": WORKERS,
                **figures,
                "reference_off_tasks_per_s": round(off.tasks_per_s),
                "target_ratio": TARGET_RATIO,
                "meets_target": figures["ratio"] >= TARGET_RATIO,
            }
        )


if __name__ == "__main__":
    main()
