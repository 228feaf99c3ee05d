"""Latency: submit->start and submit->result of one task at a time, p50 and p99.

Submits 1,000 no-op tasks one after the other (submit one, await its result,
submit the next) to a bus whose workers are idle and waiting. For each task:

- submit->start: from just before ``bus.submit`` to the ``time.perf_counter()``
  taken by a ``task-started`` listener (``bus.on("task-started", fn)``);
- submit->result: from the same moment to the return of ``await handle.result()``.

The raw reference does the same with one item at a time in an
`asyncio.PriorityQueue` (start: a worker has the item; result: the submitter's
``await future`` returns). 50 warm-up tasks are not counted. Each round runs
the reference then taskbus on fresh event loops; the median round is reported.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import anyio
from _reference import Latency, emit, median, parser, percentile, reference_latency, rounded

from taskbus import TaskBus, TaskContext

TASK_TYPE = "bench:noop"
TIMEOUT = 30.0
WARMUP = 50
TARGET_P50_START_US = 50.0


async def noop(ctx: TaskContext) -> None:
    return None


async def taskbus_latency(samples: int, workers: int, warmup: int = WARMUP) -> Latency:
    bus = TaskBus(workers=workers)
    bus.task(TASK_TYPE, timeout=TIMEOUT)(noop)
    perf_counter = time.perf_counter
    started = 0.0

    def on_started(event: Any) -> None:
        nonlocal started
        started = perf_counter()

    bus.on("task-started", on_started)
    latency = Latency()
    gc.collect()
    async with bus:
        await anyio.sleep(0.01)  # every worker is idle, waiting for work
        for index in range(warmup + samples):
            submitted = perf_counter()
            handle = await bus.submit(TASK_TYPE)
            await handle.result()
            finished = perf_counter()
            if index >= warmup:
                latency.add(submitted, started, finished)
    return latency


def _line(
    case: str,
    samples: int,
    workers: int,
    taskbus: list[list[float]],
    reference: list[list[float]],
    target_p50: float | None,
) -> dict[str, Any]:
    p50 = median([percentile(values, 50) for values in taskbus])
    p99 = median([percentile(values, 99) for values in taskbus])
    ref_p50 = median([percentile(values, 50) for values in reference])
    ref_p99 = median([percentile(values, 99) for values in reference])
    return {
        "bench": "latency",
        "case": case,
        "backend": "asyncio",
        "tasks": samples,
        "workers": workers,
        "handler": f"async no-op, timeout={TIMEOUT:g}s",
        "rounds": len(taskbus),
        "p50_us": rounded(p50, 1),
        "p99_us": rounded(p99, 1),
        "reference_p50_us": rounded(ref_p50, 1),
        "reference_p99_us": rounded(ref_p99, 1),
        "ratio_p50": rounded(p50 / ref_p50, 2),
        "ratio_p99": rounded(p99 / ref_p99, 2),
        "target_p50_us": target_p50,
        "meets_target": None if target_p50 is None else p50 <= target_p50,
    }


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--tasks", type=int, default=None, help="sequential tasks (1,000)")
    args.add_argument("--workers", type=int, default=10, help="idle workers waiting (10)")
    args.add_argument("--rounds", type=int, default=None, help="rounds, median counts (5)")
    opts = args.parse_args()
    samples = opts.tasks or (100 if opts.quick else 1_000)
    rounds = opts.rounds or (1 if opts.quick else 5)
    workers = opts.workers
    taskbus: list[Latency] = []
    reference: list[Latency] = []
    for _ in range(rounds):
        gc.collect()
        reference.append(asyncio.run(reference_latency(samples, workers, WARMUP)))
        taskbus.append(asyncio.run(taskbus_latency(samples, workers)))
    emit(
        _line(
            "submit-to-start",
            samples,
            workers,
            [run.start_us for run in taskbus],
            [run.start_us for run in reference],
            TARGET_P50_START_US,
        )
    )
    emit(
        _line(
            "submit-to-result",
            samples,
            workers,
            [run.result_us for run in taskbus],
            [run.result_us for run in reference],
            None,
        )
    )


if __name__ == "__main__":
    main()
