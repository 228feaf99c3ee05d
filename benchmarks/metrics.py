"""Metrics on vs off: in-memory throughput with `taskbus.metrics.instrument` counting.

Submits N no-op tasks to ``TaskBus(workers=W)`` on the memory store, one after
another (each ``await bus.submit``), and times from the first submit until every
result is in. Two runs, the same handler and tasks:

- ``on``: the bus instrumented into a registry of its own (one listener on every
  event: counters, histograms, the per-process bookkeeping), and the registry
  rendered once at the end, as a scrape would;
- the reference, ``off``: no metrics, measured in the same process alternately;
- ``listener``: a no-op sync listener on the same events instead of the metrics:
  what building and delivering the events costs (a bus with no listener builds
  none), which every app with the HTTP API or a listener of its own already pays.

One JSON line: ``tasks_per_s`` (on), ``reference_tasks_per_s`` (off), ``ratio``
(on ÷ off; target at least 0.85, within 15 %), ``reference_listener_tasks_per_s``
and ``ratio_to_listener`` (on ÷ listener). After an untimed warm-up run of each,
the best of the rounds counts. ``--quick``: fewer tasks, one round.
"""

from __future__ import annotations

import time
from functools import partial

import anyio
from _reference import emit, parser, rounded
from prometheus_client import CollectorRegistry, generate_latest

from taskbus import TaskBus, TaskContext
from taskbus.metrics import instrument

TARGET_RATIO = 0.85
#: The events the metrics listen to.
EVENTS = (
    "task-queued",
    "task-started",
    "task-retrying",
    "task-completed",
    "task-failed",
    "task-cancelled",
)


async def noop(ctx: TaskContext, n: int) -> int:
    return n


def ignore(event: object) -> None:
    return None


async def run_once(*, mode: str, tasks: int, workers: int) -> float:
    """Tasks per second, first submit to last result."""
    bus = TaskBus(workers=workers)
    bus.task("bench:noop")(noop)
    counted = instrument(bus, CollectorRegistry()) if mode == "on" else None
    if mode == "listener":
        for name in EVENTS:
            bus.on(name, ignore)
    async with bus:
        started = time.perf_counter()
        handles = [await bus.submit("bench:noop", n) for n in range(tasks)]
        for handle in handles:
            await handle.result(timeout=600)
        if counted is not None:
            await counted.refresh()
            generate_latest(counted.registry)
        elapsed = time.perf_counter() - started
    return tasks / elapsed


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--tasks", type=int, default=20_000)
    args.add_argument("--workers", type=int, default=100)
    args.add_argument("--rounds", type=int, default=5)
    options = args.parse_args()
    tasks = 2_000 if options.quick else options.tasks
    rounds = 1 if options.quick else options.rounds
    best = {"off": 0.0, "listener": 0.0, "on": 0.0}
    for mode in best:  # warm up, not timed
        anyio.run(partial(run_once, mode=mode, tasks=min(tasks, 500), workers=options.workers))
    for _ in range(rounds):
        for mode, so_far in list(best.items()):
            rate = anyio.run(partial(run_once, mode=mode, tasks=tasks, workers=options.workers))
            best[mode] = max(so_far, rate)
    ratio = best["on"] / best["off"]
    emit(
        {
            "bench": "metrics",
            "case": "on-vs-off",
            "store": "memory",
            "tasks": tasks,
            "workers": options.workers,
            "tasks_per_s": rounded(best["on"], 1),
            "reference_tasks_per_s": rounded(best["off"], 1),
            "ratio": rounded(ratio),
            "reference_listener_tasks_per_s": rounded(best["listener"], 1),
            "ratio_to_listener": rounded(best["on"] / best["listener"]),
            "target_ratio": TARGET_RATIO,
            "meets_target": ratio >= TARGET_RATIO,
        }
    )


if __name__ == "__main__":
    main()
