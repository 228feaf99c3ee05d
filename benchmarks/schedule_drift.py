"""Schedule drift: how late a schedule's task starts after its intended fire time.

A schedule fires every second (`every=1`) for `--minutes` (default 10) on each
store (memory, SQLite, Redis), on a bus with idle workers. For each fire, the
drift is the handler's start (wall time) minus the fire's intended time (the
task's ``metadata["scheduled_for"]``). The reference, in the same process and
at the same time, is a bare anyio task that sleeps until each whole second and
records how late it woke: the floor the event loop and the OS give. One JSON line
per store: fires (``tasks``), p50/p99/max drift in ms, the reference's, and the target
(p99 < 50 ms).

Run: ``.venv/bin/python benchmarks/schedule_drift.py [--minutes 10] [--stores memory,sqlite]``
(Redis at ``TASKBUS_REDIS_URL``, default ``redis://127.0.0.1:6379/15``).
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/redis.py would shadow redis-py (this folder is first on sys.path): move
# the folder to the end, as benchmarks/redis.py itself does.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
sys.path.append(str(_HERE))

import math
import os
import tempfile
import time
import uuid
from datetime import datetime

import anyio
from _reference import emit, parser, percentile, rounded

from taskbus import TaskBus, TaskContext
from taskbus.stores import Store

TARGET_P99_MS = 50.0
INTERVAL = 1.0


def build_store(kind: str, folder: Path) -> Store | str:
    if kind == "memory":
        return "memory://"
    if kind == "sqlite":
        return f"sqlite:///{folder / 'drift.db'}"
    from taskbus.stores.redis import RedisStore

    url = os.environ.get("TASKBUS_REDIS_URL", "redis://127.0.0.1:6379/15")
    return RedisStore(url, prefix=f"bench-drift:{uuid.uuid4().hex[:8]}:")


async def reference(seconds: float, lateness: list[float]) -> None:
    """Sleep until each whole second, recording how late the wake was (ms)."""
    end = time.time() + seconds
    while (target := math.floor(time.time()) + 1.0) < end:
        await anyio.sleep(target - time.time())
        lateness.append((time.time() - target) * 1000)


async def measure(kind: str, seconds: float) -> dict[str, object]:
    drifts: list[float] = []
    lateness: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        bus = TaskBus(store=build_store(kind, Path(folder)), workers=4)

        @bus.task("bench:tick")
        async def tick(ctx: TaskContext) -> None:
            started = time.time()
            task = await bus.get(ctx.task_id)
            intended = datetime.fromisoformat(task.metadata["scheduled_for"]).timestamp()
            drifts.append((started - intended) * 1000)

        async with bus, anyio.create_task_group() as tg:
            tg.start_soon(reference, seconds, lateness)
            await bus.schedule("bench:tick", id=f"drift-{kind}", every=INTERVAL)
            await anyio.sleep(seconds + 0.5)
            await bus.remove_schedule(f"drift-{kind}")
    p99 = percentile(drifts, 99) if drifts else math.inf
    return {
        "bench": "schedule_drift",
        "case": "schedule-drift",
        "store": kind,
        "interval_s": INTERVAL,
        "seconds": seconds,
        "tasks": len(drifts),
        "p50_ms": rounded(percentile(drifts, 50)) if drifts else None,
        "p99_ms": rounded(p99),
        "max_ms": rounded(max(drifts)) if drifts else None,
        "reference_p50_ms": rounded(percentile(lateness, 50)) if lateness else None,
        "reference_p99_ms": rounded(percentile(lateness, 99)) if lateness else None,
        "reference_max_ms": rounded(max(lateness)) if lateness else None,
        "target_p99_ms": TARGET_P99_MS,
        "meets_target": p99 < TARGET_P99_MS,
    }


async def main() -> None:
    args = parser(__doc__)
    args.add_argument("--minutes", type=float, default=10.0, help="how long per store")
    args.add_argument("--stores", default="memory,sqlite,redis", help="comma-separated")
    options = args.parse_args()
    seconds = 3.0 if options.quick else options.minutes * 60
    for kind in options.stores.split(","):
        emit(await measure(kind.strip(), seconds))


if __name__ == "__main__":
    anyio.run(main)
