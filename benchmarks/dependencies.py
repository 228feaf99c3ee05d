"""Dependencies: 10,000 no-op tasks in chains of 10, against the same tasks without.

On each store (memory, SQLite, Redis), one bus with ``workers=100`` runs an
``async def noop(ctx: TaskContext, step: Step) -> None`` handler twice, on a
fresh store each time:

- the reference, in the same process just before: 10,000 tasks submitted one
  after the other (each `submit` awaited), no dependencies;
- 1,000 chains of 10 steps, each chain one ``await bus.chain(...)`` (every step
  after the one before, so 9,000 tasks wait for a parent), chains submitted one
  after the other.

Each is timed from the first submit until every task's final event is heard;
three rounds (one with ``--quick``), reference then chains, the best of each
counting (noise only slows a run down).
The handler notes the order in which it ran the steps of each chain; a chain is
in order when its steps ran 0, 1, ..., 9 (`in_order`; the handler does not read
``ctx.parents``, a no-op's due). One JSON line per store: both throughputs, their ratio
(target: within 2x, ratio >= 0.5) and `in_order`. Redis is the server at
``TASKBUS_REDIS_URL`` (default ``redis://127.0.0.1:6379/14``), under a key
prefix of this run's own, deleted afterwards.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/redis.py would shadow redis-py for the Redis store: the folder goes last.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
sys.path.append(str(_HERE))

import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import anyio
from _reference import emit, parser, rounded
from pydantic import BaseModel

from taskbus import TaskBus, TaskContext
from taskbus.stores import Store

TASK_TYPE = "bench:step"
CHAIN_LENGTH = 10
WORKERS = 100
TARGET_RATIO = 0.5
ROUNDS = 3
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"
WAIT = 300.0


class Step(BaseModel):
    chain: int
    index: int


class Run:
    """One bus over one store: what ran, in which order, and when every task ended."""

    def __init__(self, store: Store | str, total: int) -> None:
        self.bus = TaskBus(store=store, workers=WORKERS, shutdown_grace=5.0)
        self.total = total
        self.finished = 0
        self.done = anyio.Event()
        self.ran: defaultdict[int, list[int]] = defaultdict(list)

        @self.bus.task(TASK_TYPE)
        async def noop(ctx: TaskContext, step: Step) -> None:
            self.ran[step.chain].append(step.index)

        self.noop = noop

        self.bus.on("task-completed", self._ended)
        self.bus.on("task-failed", self._ended)
        self.bus.on("task-cancelled", self._ended)

    def _ended(self, event: Any) -> None:
        self.finished += 1
        if self.finished == self.total:
            self.done.set()


async def independent(store: Store | str, tasks: int) -> float:
    """Tasks per second for `tasks` tasks without dependencies."""
    run = Run(store, tasks)
    async with run.bus:
        start = time.perf_counter()
        for n in range(tasks):
            await run.bus.submit(TASK_TYPE, Step(chain=n, index=0))
        with anyio.fail_after(WAIT):
            await run.done.wait()
        elapsed = time.perf_counter() - start
    return tasks / elapsed


async def chained(store: Store | str, tasks: int) -> tuple[float, bool]:
    """Tasks per second for `tasks` tasks in chains, and whether every chain ran in
    order."""
    chains = tasks // CHAIN_LENGTH
    run = Run(store, chains * CHAIN_LENGTH)
    async with run.bus:
        start = time.perf_counter()
        for chain in range(chains):
            steps = [run.noop.step(Step(chain=chain, index=i)) for i in range(CHAIN_LENGTH)]
            await run.bus.chain(*steps)
        with anyio.fail_after(WAIT):
            await run.done.wait()
        elapsed = time.perf_counter() - start
    in_order = len(run.ran) == chains and all(
        ran == list(range(CHAIN_LENGTH)) for ran in run.ran.values()
    )
    return chains * CHAIN_LENGTH / elapsed, in_order


def _redis_url() -> str:
    return os.environ.get("TASKBUS_REDIS_URL", DEFAULT_REDIS)


async def _drop_redis_keys(prefix: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(_redis_url())
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        for first in range(0, len(keys), 1000):
            await client.delete(*keys[first : first + 1000])
    finally:
        await client.aclose()


def _stores(directory: Path) -> dict[str, Callable[[str], Store | str]]:
    def sqlite(case: str) -> Store | str:
        return f"sqlite:///{directory / f'{case}.db'}"

    def redis_store(case: str) -> Store | str:
        from taskbus.stores.redis import RedisStore

        return RedisStore(_redis_url(), prefix=f"bench-deps-{os.getpid()}-{case}:")

    return {"memory": lambda case: "memory://", "sqlite": sqlite, "redis": redis_store}


async def main(tasks: int, rounds: int, only: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="taskbus-deps-bench-") as folder:
        for name, make in _stores(Path(folder)).items():
            if only and name not in only:
                continue
            reference = rate = 0.0
            in_order = True
            for round_ in range(rounds):
                try:
                    reference = max(reference, await independent(make(f"flat{round_}"), tasks))
                    chains_rate, ordered = await chained(make(f"chains{round_}"), tasks)
                finally:
                    if name == "redis":
                        await _drop_redis_keys(f"bench-deps-{os.getpid()}-")
                rate = max(rate, chains_rate)
                in_order = in_order and ordered
            ratio = rate / reference
            emit(
                {
                    "bench": "dependencies",
                    "case": "chains",
                    "store": name,
                    "tasks": tasks,
                    "chain_length": CHAIN_LENGTH,
                    "workers": WORKERS,
                    "tasks_per_s": rounded(rate, 1),
                    "reference_no_dependencies_tasks_per_s": rounded(reference, 1),
                    "ratio": rounded(ratio),
                    "target_ratio": TARGET_RATIO,
                    "meets_target": ratio >= TARGET_RATIO,
                    "in_order": in_order,
                }
            )


if __name__ == "__main__":
    arguments = parser(__doc__)
    arguments.add_argument(
        "--store", action="append", choices=["memory", "sqlite", "redis"], default=[]
    )
    options = arguments.parse_args()
    quick = options.quick
    anyio.run(main, 1_000 if quick else 10_000, 1 if quick else ROUNDS, options.store)
    sys.exit(0)
