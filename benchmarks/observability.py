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
target 0.85 and whether it is met.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
from _observed import WORKERS, calibrate, provider, run, workloads
from _reference import emit, parser, rounded
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
    args = parser(__doc__).parse_args()
    rounds = 1 if args.quick else ROUNDS
    iterations = calibrate()
    loads = workloads(args.quick)
    for case, load_name, sampler in CASES:
        load = loads[load_name]
        off: list[float] = []
        on: list[float] = []
        for _ in range(rounds):
            caller, _ = provider("batch", sampler)
            off.append(anyio.run(partial(run, load, caller=caller)))
            caller.shutdown()
            traced, _ = provider("batch", sampler)

            def observe(
                bus: TaskBus, traced: TracerProvider = traced
            ) -> tuple[Any, CollectorRegistry]:
                trace(bus, tracer_provider=traced)
                registry = CollectorRegistry()
                return instrument(bus, registry), registry

            on.append(anyio.run(partial(run, load, caller=traced, setup=observe, finish=scrape)))
            traced.shutdown()
        best_off, best_on = max(off), max(on)
        ratio = best_on / best_off
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
                "tasks_per_s": round(best_on),
                "reference_off_tasks_per_s": round(best_off),
                "ratio": rounded(ratio),
                "cost_per_task_us": rounded((1 / best_on - 1 / best_off) * 1e6, 2),
                "target_ratio": TARGET_RATIO,
                "meets_target": ratio >= TARGET_RATIO,
            }
        )


if __name__ == "__main__":
    main()
