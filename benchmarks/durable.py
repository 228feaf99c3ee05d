"""Durable throughput: no-op tasks per second through the SQLite store, against raw SQLite.

Submits 20,000 tasks of an ``async def noop(ctx: TaskContext) -> None`` handler
(``timeout=30``) to ``TaskBus(store=SqliteStore(file), workers=100)`` from 100
concurrent submitter coroutines (200 submits each: `submit` returns only once
its row is committed, and group commit shares one commit among the submitters
waiting at that moment). Timed from the first submit until every task is final
*and* its final state is committed (``await store.flush()``); the last task
queued is the last to finish (FIFO, a no-op never yields), and the store's
counts are checked after the clock stops.

The raw references run in the same process on a file with the very same schema
(created by `SqliteStore`, then used through a plain `sqlite3` connection with
the store's pragmas: WAL, ``synchronous=NORMAL``), each task being the three
statements a task's life needs (INSERT queued, UPDATE running, UPDATE
completed):

- ``per-commit``: each statement its own transaction (3 commits per task);
- ``one-commit-per-task``: a task's three statements in one transaction, the
  least a sequential submitter that waits for each commit can cost (no events,
  no runtime): the ceiling for ``end-to-end-sequential``;
- ``batched``: the same statements in one transaction per 100 tasks.

Cases, each one JSON line:

- ``end-to-end``: the throughput above, with both references and the ratios;
  targets ≥ 10,000 tasks/s and ratio to ``batched`` ≥ 1/2.
- ``end-to-end-sequential``: the same, but one submitter awaiting each submit
  before the next (every submit waits for its own commit); target ≥ 10,000
  tasks/s.
- ``submit-latency``: 1,000 submits one at a time (``await bus.submit``
  timed, 50 warm-up submits not counted) on ``workers=10``, p50 and p99,
  beside a raw one-row INSERT + COMMIT timed the same way.
- ``submit-to-result``: 1,000 tasks one at a time, each submitted and its
  result awaited before the next (a desktop app's use) on ``workers=10``, p50
  and p99, beside raw SQLite committing a task's INSERT and then its
  completed UPDATE (two commits, the least a durable submit and outcome take).

Each round runs the references and then taskbus, each on a fresh file (and a
fresh event loop); the best round counts for throughput (noise only slows a
run down), the median round for latency. ``--profile`` runs the end-to-end
case once under pyinstrument and writes the report to stderr.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from _reference import emit, median, parser, percentile, rounded

from taskbus import TaskBus, TaskContext, TaskState
from taskbus.stores.sqlite import SqliteStore

TASK_TYPE = "bench:noop"
TIMEOUT = 30.0
WARMUP = 50
BATCH = 100
TARGET_TASKS_PER_S = 10_000
#: Of 100 concurrent submitters (the one sequential submitter has the rate target only).
TARGET_RATIO_TO_BATCHED = 1 / 2
PRAGMAS = {"journal_mode": "WAL", "synchronous": "NORMAL"}

INSERT_QUEUED = (
    "INSERT INTO tasks (id, type, state, priority, input, attempt, max_attempts, "
    "created_at, queued_at) VALUES (?, ?, 'queued', 5, NULL, 0, 3, ?, ?)"
)
_RUNNING = "UPDATE tasks SET state = 'running', attempt = 1, started_at = ? WHERE id = ?"
_COMPLETED = "UPDATE tasks SET state = 'completed', finished_at = ?, result = 'null' WHERE id = ?"


async def noop(ctx: TaskContext) -> None:
    return None


@contextmanager
def fresh_file() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="taskbus-durable-") as directory:
        yield Path(directory) / "tasks.db"


# -- raw SQLite references ---------------------------------------------------------


def schema_file(path: Path) -> None:
    """An empty database with the store's own schema (tables, indexes)."""

    async def create() -> None:
        store = SqliteStore(path)
        await store.open()
        await store.close()

    asyncio.run(create())


def raw_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    for name, value in PRAGMAS.items():
        conn.execute(f"PRAGMA {name} = {value}").fetchall()
    return conn


def task_ids(tasks: int) -> list[str]:
    return [os.urandom(16).hex() for _ in range(tasks)]


def reference_per_commit(tasks: int) -> float:
    """Tasks per second, each of the 3 statements of a task committed on its own."""
    with fresh_file() as path:
        schema_file(path)
        conn = raw_connection(path)
        ids = task_ids(tasks)
        now = time.time
        gc.collect()
        try:
            start = time.perf_counter()
            for task_id in ids:
                created = now()  # autocommit: each statement is its own transaction
                conn.execute(INSERT_QUEUED, (task_id, TASK_TYPE, created, created))
                conn.execute(_RUNNING, (now(), task_id))
                conn.execute(_COMPLETED, (now(), task_id))
            elapsed = time.perf_counter() - start
        finally:
            conn.close()
    return tasks / elapsed


def reference_batched(tasks: int, batch: int = BATCH) -> float:
    """Tasks per second, the same statements in one transaction per `batch` tasks."""
    with fresh_file() as path:
        schema_file(path)
        conn = raw_connection(path)
        ids = task_ids(tasks)
        now = time.time
        gc.collect()
        try:
            start = time.perf_counter()
            for first in range(0, tasks, batch):
                conn.execute("BEGIN")
                for task_id in ids[first : first + batch]:
                    created = now()
                    conn.execute(INSERT_QUEUED, (task_id, TASK_TYPE, created, created))
                    conn.execute(_RUNNING, (now(), task_id))
                    conn.execute(_COMPLETED, (now(), task_id))
                conn.execute("COMMIT")
            elapsed = time.perf_counter() - start
        finally:
            conn.close()
    return tasks / elapsed


def _raw_latency(
    samples: int, warmup: int, one_task: Callable[[sqlite3.Connection, str], None]
) -> list[float]:
    """Microseconds per ``one_task(conn, task_id)``, one at a time, in autocommit."""
    latencies: list[float] = []
    perf_counter = time.perf_counter
    with fresh_file() as path:
        schema_file(path)
        conn = raw_connection(path)
        gc.collect()
        try:
            for index, task_id in enumerate(task_ids(warmup + samples)):
                start = perf_counter()
                one_task(conn, task_id)
                elapsed = perf_counter() - start
                if index >= warmup:
                    latencies.append(elapsed * 1e6)
        finally:
            conn.close()
    return latencies


def _insert(conn: sqlite3.Connection, task_id: str) -> None:
    created = time.time()
    conn.execute(INSERT_QUEUED, (task_id, TASK_TYPE, created, created))  # autocommit


def _insert_then_complete(conn: sqlite3.Connection, task_id: str) -> None:
    _insert(conn, task_id)
    conn.execute(_COMPLETED, (time.time(), task_id))  # a second commit


def reference_insert_latency(samples: int, warmup: int = WARMUP) -> list[float]:
    """Microseconds per one-row INSERT + COMMIT, one at a time."""
    return _raw_latency(samples, warmup, _insert)


def reference_round_trip_latency(samples: int, warmup: int = WARMUP) -> list[float]:
    """Microseconds per task committed queued, then committed completed (2 commits)."""
    return _raw_latency(samples, warmup, _insert_then_complete)


# -- taskbus -------------------------------------------------------------------------


def make_bus(path: Path, workers: int) -> tuple[TaskBus, SqliteStore]:
    store = SqliteStore(path)
    bus = TaskBus(store=store, workers=workers)
    bus.task(TASK_TYPE, timeout=TIMEOUT)(noop)
    return bus, store


async def _submit_all(bus: TaskBus, store: SqliteStore, tasks: int, submitters: int) -> float:
    per_submitter, extra = divmod(tasks, submitters)
    last: list[Any] = [None]

    async def submit(count: int) -> None:
        for _ in range(count):
            last[0] = await bus.submit(TASK_TYPE)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for index in range(submitters):
            tg.start_soon(submit, per_submitter + (1 if index < extra else 0))
    await last[0].result()  # queued last, so finished last
    await store.flush()  # ... and its final state is on disk
    return time.perf_counter() - start


async def taskbus_throughput(path: Path, tasks: int, workers: int, submitters: int) -> float:
    bus, store = make_bus(path, workers)
    gc.collect()
    async with bus:
        await anyio.sleep(0.005)  # every worker reaches its idle wait
        elapsed = await _submit_all(bus, store, tasks, submitters)
        stats = await bus.stats()
    completed = stats.by_state.get(TaskState.COMPLETED, 0)
    if completed != tasks:
        raise RuntimeError(f"end-to-end: {completed} of {tasks} tasks completed ({stats})")
    return tasks / elapsed


async def taskbus_submit_latency(
    path: Path, samples: int, workers: int, *, await_result: bool = False
) -> list[float]:
    """Microseconds per ``await bus.submit`` (and, with `await_result`, until its
    result is back), one task at a time."""
    bus, store = make_bus(path, workers)
    perf_counter = time.perf_counter
    latencies: list[float] = []
    gc.collect()
    async with bus:
        await anyio.sleep(0.01)
        for index in range(WARMUP + samples):
            start = perf_counter()
            handle = await bus.submit(TASK_TYPE)
            if await_result:
                await handle.result()
            elapsed = perf_counter() - start
            if index >= WARMUP:
                latencies.append(elapsed * 1e6)
        await store.flush()
    return latencies


# -- output --------------------------------------------------------------------------


def _throughput_line(
    case: str,
    tasks: int,
    workers: int,
    submitters: int,
    rates: list[float],
    per_commit: list[float],
    per_task: list[float],
    batched: list[float],
    target_ratio: float | None,
) -> dict[str, Any]:
    best, best_per_commit, best_batched = max(rates), max(per_commit), max(batched)
    best_per_task = max(per_task)
    ratio_batched = best / best_batched
    return {
        "bench": "durable",
        "case": case,
        "backend": "asyncio",
        "store": "sqlite (WAL, synchronous=NORMAL)",
        "tasks": tasks,
        "workers": workers,
        "submitters": submitters,
        "handler": f"async no-op, timeout={TIMEOUT:g}s",
        "rounds": len(rates),
        "tasks_per_s": rounded(best, 0),
        "tasks_per_s_median": rounded(median(rates), 0),
        "reference_per_commit_tasks_per_s": rounded(best_per_commit, 0),
        "reference_one_commit_per_task_tasks_per_s": rounded(best_per_task, 0),
        "reference_batched_tasks_per_s": rounded(best_batched, 0),
        "reference_batch": BATCH,
        "ratio_to_per_commit": rounded(best / best_per_commit, 3),
        "ratio_to_one_commit_per_task": rounded(best / best_per_task, 3),
        "ratio_to_batched": rounded(ratio_batched, 3),
        "ratio_to_batched_median": rounded(
            median([r / ref for r, ref in zip(rates, batched, strict=True)]), 3
        ),
        "target_tasks_per_s": TARGET_TASKS_PER_S,
        "target_ratio_to_batched": rounded(target_ratio),
        "meets_target": best >= TARGET_TASKS_PER_S
        and (target_ratio is None or ratio_batched >= target_ratio),
    }


def _latency_line(
    samples: int,
    workers: int,
    taskbus: list[list[float]],
    reference: list[list[float]],
    *,
    case: str = "submit-latency",
    reference_name: str = "one-row INSERT + COMMIT",
) -> dict[str, Any]:
    p50 = median([percentile(values, 50) for values in taskbus])
    p99 = median([percentile(values, 99) for values in taskbus])
    ref_p50 = median([percentile(values, 50) for values in reference])
    ref_p99 = median([percentile(values, 99) for values in reference])
    return {
        "bench": "durable",
        "case": case,
        "backend": "asyncio",
        "store": "sqlite (WAL, synchronous=NORMAL)",
        "tasks": samples,
        "workers": workers,
        "rounds": len(taskbus),
        "p50_us": rounded(p50, 1),
        "p99_us": rounded(p99, 1),
        "reference": reference_name,
        "reference_p50_us": rounded(ref_p50, 1),
        "reference_p99_us": rounded(ref_p99, 1),
        "ratio_p50": rounded(p50 / ref_p50, 2),
        "ratio_p99": rounded(p99 / ref_p99, 2),
        "meets_target": None,
    }


def measure(tasks: int, workers: int, submitters: int, samples: int, rounds: int) -> None:
    rates: list[float] = []
    sequential: list[float] = []
    per_commit: list[float] = []
    per_task: list[float] = []
    batched: list[float] = []
    latencies: list[list[float]] = []
    reference_latencies: list[list[float]] = []
    round_trips: list[list[float]] = []
    reference_round_trips: list[list[float]] = []
    for _ in range(rounds):
        per_commit.append(reference_per_commit(tasks))
        per_task.append(reference_batched(tasks, batch=1))
        batched.append(reference_batched(tasks))
        with fresh_file() as path:
            rates.append(asyncio.run(taskbus_throughput(path, tasks, workers, submitters)))
        with fresh_file() as path:
            sequential.append(asyncio.run(taskbus_throughput(path, tasks, workers, 1)))
        reference_latencies.append(reference_insert_latency(samples))
        with fresh_file() as path:
            latencies.append(asyncio.run(taskbus_submit_latency(path, samples, 10)))
        reference_round_trips.append(reference_round_trip_latency(samples))
        with fresh_file() as path:
            round_trips.append(
                asyncio.run(taskbus_submit_latency(path, samples, 10, await_result=True))
            )
    emit(
        _throughput_line(
            "end-to-end",
            tasks,
            workers,
            submitters,
            rates,
            per_commit,
            per_task,
            batched,
            TARGET_RATIO_TO_BATCHED,
        )
    )
    emit(
        _throughput_line(
            "end-to-end-sequential",
            tasks,
            workers,
            1,
            sequential,
            per_commit,
            per_task,
            batched,
            None,
        )
    )
    emit(_latency_line(samples, 10, latencies, reference_latencies))
    emit(
        _latency_line(
            samples,
            10,
            round_trips,
            reference_round_trips,
            case="submit-to-result",
            reference_name="INSERT + COMMIT, then UPDATE completed + COMMIT",
        )
    )


def profile(tasks: int, workers: int, submitters: int) -> None:
    from pyinstrument import Profiler

    with fresh_file() as path:
        asyncio.run(taskbus_throughput(path, tasks, workers, submitters))  # warm up
    profiler = Profiler(interval=0.0002, async_mode="disabled")
    with fresh_file() as path:
        profiler.start()
        rate = asyncio.run(taskbus_throughput(path, tasks, workers, submitters))
        profiler.stop()
    sys.stderr.write(f"end-to-end: {rate:.0f} tasks/s under the profiler\n")
    sys.stderr.write(profiler.output_text(unicode=True, show_all=False))


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--tasks", type=int, default=None, help="tasks per run (20,000)")
    args.add_argument("--workers", type=int, default=100, help="workers (100)")
    args.add_argument("--submitters", type=int, default=100, help="submitter coroutines (100)")
    args.add_argument("--samples", type=int, default=None, help="latency samples (1,000)")
    args.add_argument("--rounds", type=int, default=None, help="rounds (3)")
    args.add_argument("--profile", action="store_true", help="profile end-to-end to stderr")
    opts = args.parse_args()
    tasks = opts.tasks or (2_000 if opts.quick else 20_000)
    samples = opts.samples or (200 if opts.quick else 1_000)
    rounds = opts.rounds or (1 if opts.quick else 3)
    if opts.profile:
        profile(tasks, opts.workers, opts.submitters)
        return
    measure(tasks, opts.workers, opts.submitters, samples, rounds)


if __name__ == "__main__":
    main()
