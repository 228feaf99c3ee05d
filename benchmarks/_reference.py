"""The raw reference every taskbus figure is compared with, and shared helpers.

The reference is the least any in-process task queue can do: an
`asyncio.PriorityQueue` of ``(priority, seq, future)`` items drained by N
worker coroutines, each of which takes an item and resolves its
`asyncio.Future`. No records, no events, no timeouts, no store. A worker takes
the next item without yielding while the queue is not empty, exactly as
`asyncio.Queue.get` does.

Every benchmark runs the reference in the same process, beside the taskbus
measure, and reports the taskbus figure as a ratio to it: absolute numbers
move with the machine and its load, the ratio much less.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

__all__ = [
    "PRIORITY",
    "Latency",
    "emit",
    "fill_reference_queue",
    "median",
    "parser",
    "percentile",
    "reference_latency",
    "reference_throughput",
    "rounded",
]

#: Priority of every item (taskbus's default priority, one FIFO level).
PRIORITY = 5

_Item = tuple[int, int, "asyncio.Future[Any]"]


def parser(description: str | None) -> argparse.ArgumentParser:
    """An argument parser with the `--quick` flag every script takes."""
    args = argparse.ArgumentParser(description=(description or "").split("\n\n")[0])
    args.add_argument(
        "--quick", action="store_true", help="a fast smoke run with fewer tasks (figures are noisy)"
    )
    return args


def emit(line: dict[str, Any]) -> None:
    """Print one measure as one JSON line on stdout."""
    line.setdefault("python", platform.python_version())
    print(json.dumps(line), flush=True)


def rounded(value: float | None, digits: int = 3) -> float | None:
    """`value` to `digits` significant decimals, keeping None (and inf) readable in JSON."""
    if value is None or math.isinf(value) or math.isnan(value):
        return None
    return round(value, digits)


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q` percentile (0 < q <= 100) of `values`."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# -- throughput ------------------------------------------------------------------


async def _drain(queue: asyncio.PriorityQueue[_Item]) -> None:
    while True:
        _, _, future = await queue.get()
        future.set_result(None)


async def reference_throughput(tasks: int, workers: int) -> float:
    """Items per second: put `tasks` items, then wait until the last is resolved.

    Timed from the first put to the moment the last item's future is done; the
    queue is FIFO within one priority, so the last item is resolved last.
    """
    queue: asyncio.PriorityQueue[_Item] = asyncio.PriorityQueue()
    loop = asyncio.get_running_loop()
    runners = [asyncio.create_task(_drain(queue)) for _ in range(workers)]
    await asyncio.sleep(0)  # every worker now waits in queue.get()
    gc.collect()
    try:
        start = time.perf_counter()
        future: asyncio.Future[Any] | None = None
        for seq in range(tasks):
            future = loop.create_future()
            await queue.put((PRIORITY, seq, future))
        assert future is not None
        await future
        elapsed = time.perf_counter() - start
        if not queue.empty():
            raise RuntimeError("reference: items left in the queue after the last resolved")
    finally:
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
    return tasks / elapsed


# -- latency ---------------------------------------------------------------------


class FetchParams(BaseModel):
    """The input model the multi-process benchmarks submit: two fields, as users do."""

    url: str
    depth: int


def payload(n: int) -> dict[str, Any]:
    """The `n`-th task's input (a distinct url each)."""
    return {"url": f"https://example.com/repos/{n}.git", "depth": n % 5}


@dataclass
class Latency:
    """Per-item latencies in microseconds."""

    start_us: list[float] = field(default_factory=list)
    result_us: list[float] = field(default_factory=list)

    def add(self, submitted: float, started: float, finished: float) -> None:
        self.start_us.append((started - submitted) * 1e6)
        self.result_us.append((finished - submitted) * 1e6)


async def _start_and_resolve(queue: asyncio.PriorityQueue[_Item]) -> None:
    while True:
        _, _, future = await queue.get()
        future.set_result(time.perf_counter())


async def reference_latency(samples: int, workers: int, warmup: int = 50) -> Latency:
    """Put one item, wait for it, put the next: put->picked and put->resolved.

    "Start" is when a worker has the item in hand (it resolves the future with
    that time); "result" is when the submitter's ``await future`` returns.
    """
    queue: asyncio.PriorityQueue[_Item] = asyncio.PriorityQueue()
    loop = asyncio.get_running_loop()
    runners = [asyncio.create_task(_start_and_resolve(queue)) for _ in range(workers)]
    await asyncio.sleep(0)
    latency = Latency()
    perf_counter = time.perf_counter
    try:
        for seq in range(warmup + samples):
            future: asyncio.Future[float] = loop.create_future()
            submitted = perf_counter()
            await queue.put((PRIORITY, seq, future))
            started = await future
            finished = perf_counter()
            if seq >= warmup:
                latency.add(submitted, started, finished)
    finally:
        for runner in runners:
            runner.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
    return latency


# -- memory ----------------------------------------------------------------------


async def fill_reference_queue(tasks: int) -> asyncio.PriorityQueue[_Item]:
    """A queue holding `tasks` ``(priority, seq, future)`` items (keep it alive to measure)."""
    queue: asyncio.PriorityQueue[_Item] = asyncio.PriorityQueue()
    loop = asyncio.get_running_loop()
    for seq in range(tasks):
        await queue.put((PRIORITY, seq, loop.create_future()))
    return queue
