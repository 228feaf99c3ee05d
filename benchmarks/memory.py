"""Memory: RSS growth for 100,000 queued tasks, against the raw reference.

Each measure runs in a fresh process (this script with ``--child CASE``), so
one measure's garbage and allocator arenas never count in another's. In each,
the process's RSS (psutil) is read after ``gc.collect()`` just before the
100,000 submits and again just after them, with every task still queued:

- ``blocked-worker``: a ``TaskBus(workers=4)`` with the task type registered
  with ``concurrency=1``; the first task blocks its worker on an
  ``anyio.Event``, so the other 100,000 can never start (they wait, ready, in
  the queue or set aside by the concurrency limit).
- ``delayed``: the same 100,000 submitted with ``delay=3600`` (each waits in
  the delayed heap with a wake-up timer of its own).
- ``input-model``: as ``blocked-worker``, but each task takes a two-field
  pydantic input (``url: str, depth: int``, a distinct URL each), submitted as
  a dict and validated, as users submit work.
- reference: 100,000 ``(priority, seq, future)`` items in an
  `asyncio.PriorityQueue`.

The handles returned by submit are dropped, as a fire-and-forget caller would;
the bus keeps what it needs. The ratio is taskbus bytes over reference bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
from typing import Any

import anyio
from _reference import emit, fill_reference_queue, parser, rounded
from pydantic import BaseModel

from taskbus import TaskBus, TaskContext, TaskState

TASK_TYPE = "bench:blocked"
TARGET_MIB_PER_100K = 60.0
MIB = 1024 * 1024
CASES = ("blocked-worker", "delayed", "input-model")


class CloneParams(BaseModel):
    url: str
    depth: int


def rss() -> int:
    import psutil

    gc.collect()
    return int(psutil.Process().memory_info().rss)


def _trace_start(trace: int) -> None:
    if trace:
        import tracemalloc

        tracemalloc.start(1)


def _trace_report(trace: int, tasks: int) -> None:
    """Diagnostics only (``--trace N``): the top N lines by bytes still held, on stderr."""
    if not trace:
        return
    import tracemalloc

    stats = tracemalloc.take_snapshot().statistics("lineno")
    tracemalloc.stop()
    total = sum(stat.size for stat in stats)
    sys.stderr.write(f"traced: {total / tasks:.0f} B/task in all\n")
    for stat in stats[:trace]:
        frame = stat.traceback[0]
        sys.stderr.write(
            f"{stat.size / tasks:8.1f} B/task {stat.count / tasks:6.2f} blocks/task"
            f"  {frame.filename}:{frame.lineno}\n"
        )


async def _taskbus_child(case: str, tasks: int, trace: int = 0) -> dict[str, Any]:
    running, gate = anyio.Event(), anyio.Event()
    bus = TaskBus(workers=4, shutdown_grace=0)

    @bus.task(TASK_TYPE, concurrency=1)
    async def blocked(ctx: TaskContext) -> None:
        running.set()
        await gate.wait()

    @bus.task(TASK_TYPE + "-input", concurrency=1)
    async def clone(ctx: TaskContext, params: CloneParams) -> None:
        await gate.wait()

    delay = 3600.0 if case == "delayed" else None
    async with bus:
        await bus.submit(TASK_TYPE)
        with anyio.fail_after(5):
            await running.wait()
        if case == "input-model":  # one runs and blocks; the limit holds the rest
            await bus.submit(TASK_TYPE + "-input", {"url": "https://example.com/first", "depth": 0})
            await anyio.sleep(0.05)
        before = rss()
        _trace_start(trace)
        if case == "input-model":
            for n in range(tasks):
                payload = {"url": f"https://example.com/repos/{n}.git", "depth": n % 5}
                await bus.submit(TASK_TYPE + "-input", payload)
        else:
            for _ in range(tasks):
                await bus.submit(TASK_TYPE, delay=delay)
        await anyio.sleep(0.05)  # idle workers set aside what the limit holds
        after = rss()
        _trace_report(trace, tasks)
        queued = (await bus.stats()).by_state.get(TaskState.QUEUED, 0)
        gate.set()
    if queued != tasks:
        raise RuntimeError(f"{case}: {queued} tasks queued, not {tasks}")
    return {"before": before, "after": after}


async def _reference_child(tasks: int) -> dict[str, Any]:
    before = rss()
    queue = await fill_reference_queue(tasks)
    after = rss()
    if queue.qsize() != tasks:
        raise RuntimeError(f"reference: {queue.qsize()} items queued, not {tasks}")
    return {"before": before, "after": after}


def child(case: str, tasks: int, trace: int = 0) -> None:
    if case == "reference":
        result = asyncio.run(_reference_child(tasks))
    else:
        result = asyncio.run(_taskbus_child(case, tasks, trace))
    print(json.dumps(result), flush=True)


def _run_child(case: str, tasks: int) -> int:
    """RSS growth in bytes, measured in a fresh process."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", case, "--tasks", str(tasks)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"memory child {case!r} failed with exit code {done.returncode}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return int(result["after"]) - int(result["before"])


def measure(tasks: int, rounds: int) -> None:
    reference = min(_run_child("reference", tasks) for _ in range(rounds))
    for case in CASES:
        grown = min(_run_child(case, tasks) for _ in range(rounds))
        mib = grown / MIB
        per_100k = mib * 100_000 / tasks
        emit(
            {
                "bench": "memory",
                "case": case,
                "tasks": tasks,
                "rounds": rounds,
                "rss_growth_mib": rounded(mib, 2),
                "mib_per_100k_tasks": rounded(per_100k, 2),
                "bytes_per_task": rounded(grown / tasks, 0),
                "reference_rss_growth_mib": rounded(reference / MIB, 2),
                "reference_bytes_per_task": rounded(reference / tasks, 0),
                "ratio": rounded(grown / reference, 2) if reference > 0 else None,
                "target_mib_per_100k_tasks": TARGET_MIB_PER_100K,
                "meets_target": per_100k <= TARGET_MIB_PER_100K,
            }
        )


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--tasks", type=int, default=None, help="queued tasks (100,000)")
    args.add_argument("--rounds", type=int, default=None, help="fresh processes per measure (2)")
    args.add_argument("--child", choices=[*CASES, "reference"], help=argparse.SUPPRESS)
    args.add_argument(
        "--trace",
        type=int,
        default=0,
        metavar="N",
        help="diagnostics: with --child CASE, the top N lines by bytes held (tracemalloc)",
    )
    opts = args.parse_args()
    tasks = opts.tasks or (10_000 if opts.quick else 100_000)
    if opts.child:
        child(opts.child, tasks, opts.trace)
        return
    measure(tasks, opts.rounds or (1 if opts.quick else 2))


if __name__ == "__main__":
    main()
