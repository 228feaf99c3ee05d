"""Keyed concurrency: throughput of a type limited per key, beside the same type without keys.

Submits N tasks of a no-op handler taking ``Clone(user=...)`` (users round robin
over K keys) to ``TaskBus(store=..., workers=W)``, all at once, and times from the
first submit until every result is in. Two types, the same input and handler:

- ``keyed``: ``concurrency_key=lambda clone: clone.user, key_concurrency=1``
  (every claim counts the running tasks of each key and skips full keys);
- the reference, ``plain``: no key, measured in the same process a moment before.

One JSON line per store (memory, SQLite on a temporary file, Redis at
``TASKBUS_REDIS_URL``, default ``redis://127.0.0.1:6379/15``, under a prefix of its
own removed afterwards): ``keyed_tasks_per_s``, ``reference_tasks_per_s`` and
``ratio`` (keyed ÷ plain, higher is better; no target). After an untimed warm-up
run of each, the best of the rounds counts. ``--quick``: fewer tasks, one round.
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/redis.py would shadow redis-py (Python puts this folder first on
# sys.path): move the folder to the end, as redis.py itself does.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
sys.path.append(str(_HERE))

import os
import tempfile
import time
import uuid
from functools import partial
from typing import Any

import anyio
import redis
from _reference import emit, parser, rounded
from pydantic import BaseModel

from taskbus import TaskBus, TaskContext
from taskbus.stores import Store
from taskbus.stores.redis import RedisStore

REDIS_URL = os.environ.get("TASKBUS_REDIS_URL", "redis://127.0.0.1:6379/15")


class Clone(BaseModel):
    user: str


async def clone(ctx: TaskContext, params: Clone) -> None:
    return None


async def run_once(
    store: Store | str, *, keyed: bool, tasks: int, keys: int, workers: int
) -> float:
    """Tasks per second, first submit to last result."""
    bus = TaskBus(store=store, workers=workers)
    options: dict[str, Any] = {"concurrency_key": lambda params: params.user} if keyed else {}
    bus.task("bench:clone", **options)(clone)
    inputs = [{"user": f"user-{n % keys}"} for n in range(tasks)]
    async with bus:
        started = time.perf_counter()
        handles = [await bus.submit("bench:clone", payload) for payload in inputs]
        for handle in handles:
            await handle.result(timeout=600)
        elapsed = time.perf_counter() - started
    return tasks / elapsed


def _stores(place: Path, prefix: str) -> dict[str, Any]:
    """A fresh store of each kind for one run (`n` keeps their data apart)."""
    return {
        "memory": lambda n: "memory://",
        "sqlite": lambda n: f"sqlite:///{place / f'run-{n}.db'}",
        "redis": lambda n: RedisStore(REDIS_URL, prefix=f"{prefix}{n}:"),
    }


def _remove_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start : start + 1000])
    finally:
        client.close()


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--tasks", type=int, default=2000)
    args.add_argument("--keys", type=int, default=50)
    args.add_argument("--workers", type=int, default=20)
    args.add_argument("--rounds", type=int, default=3)
    options = args.parse_args()
    tasks = 200 if options.quick else options.tasks
    rounds = 1 if options.quick else options.rounds
    prefix = f"taskbus-bench-keys:{uuid.uuid4().hex[:12]}:"
    runs = iter(range(1_000_000))
    try:
        with tempfile.TemporaryDirectory(prefix="taskbus-keys-bench-") as directory:
            stores = _stores(Path(directory), prefix)
            for kind, make in stores.items():
                best = {"plain": 0.0, "keyed": 0.0}
                for label in best:  # warm up (imports, scripts, a first file), not timed
                    anyio.run(
                        partial(
                            run_once,
                            make(next(runs)),
                            keyed=label == "keyed",
                            tasks=min(tasks, 100),
                            keys=options.keys,
                            workers=options.workers,
                        )
                    )
                for _ in range(rounds):
                    for label, so_far in list(best.items()):
                        rate = anyio.run(
                            partial(
                                run_once,
                                make(next(runs)),
                                keyed=label == "keyed",
                                tasks=tasks,
                                keys=options.keys,
                                workers=options.workers,
                            )
                        )
                        best[label] = max(so_far, rate)
                emit(
                    {
                        "bench": "keyed_concurrency",
                        "case": kind,
                        "tasks": tasks,
                        "keys": options.keys,
                        "workers": options.workers,
                        "key_concurrency": 1,
                        "keyed_tasks_per_s": rounded(best["keyed"], 1),
                        "reference_tasks_per_s": rounded(best["plain"], 1),
                        "ratio": rounded(best["keyed"] / best["plain"]),
                        "meets_target": None,
                    }
                )
    finally:
        _remove_keys(prefix)


if __name__ == "__main__":
    main()
