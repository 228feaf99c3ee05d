"""Many processes on one SQLite file: one submitter, two worker processes.

The submitting process runs ``TaskBus(store="sqlite:///file", workers=0)``: it
submits, listens, and runs nothing. Each worker process is this script run with
``--worker``: ``TaskBus(store=<the same file>, workers=50)``, claiming tasks
from the store with leases. 20,000 no-op tasks, each with a two-field pydantic
input (``url: str, depth: int``, submitted as a dict and validated), are
submitted by 100 concurrent submitter coroutines (a submit returns once its
row is committed; one commit serves every submit waiting at that moment).

Cases, each one JSON line:

- ``end-to-end``: tasks per second, from the first submit until the submitter's
  ``task-completed`` listener has heard the last of them (events cross
  processes through the store's event log, which each bus polls). Should some
  never arrive, the wait ends once none has come for 3 s, the clock stops at
  the last one heard, and ``finals_not_heard`` says how many are missing.
  Beside it, in the same round: ``reference_single_process``, the same tasks,
  submitters and listener on one process's bus (``workers=4``) on a fresh file;
  and ``reference_raw_insert``, as many rows inserted by raw `sqlite3` from one
  process, each INSERT its own transaction, on a file with the store's schema
  and pragmas.
- ``exactly-once``: every worker process writes the ids of the tasks it ran to
  its own file and the parent counts runs per id. ``exactly_once``: the store
  holds every task completed on its first attempt and each ran once;
  ``every_final_heard_once``: the submitter heard each ``task-completed`` once.
  The target is both, in every round.
- ``event-latency``: from a worker's ``task-completed`` (the event's
  ``timestamp``, wall clock, taken as the task finished, before its commit) to
  the submitter's listener receiving it (``time.time()``; one machine, one
  clock), p50 and p99 over every task heard, median round; beside it the same
  on the single-process bus, where the commit delivers the event (no polling).

Each round runs the references, then the multi-process case, each on a fresh
file; the best round counts for throughput, the median round for latency.
``--tasks``, ``--processes``, ``--workers`` (per process), ``--submitters``,
``--single-workers``, ``--rounds`` (2).
"""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import PIPE
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
from _reference import FetchParams, emit, median, parser, payload, percentile, rounded
from durable import INSERT_QUEUED, raw_connection, schema_file, task_ids

from taskbus import TaskBus, TaskCompleted, TaskContext

TASK_TYPE = "bench:fetch"
TIMEOUT = 30.0
READY = b"ready\n"
#: Seconds to wait for a worker process to start or stop.
START_TIMEOUT = 30.0
#: Stop waiting for final events once none has come for this long (some never come).
QUIET = 3.0


def store_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


@contextmanager
def fresh_directory() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="taskbus-multiprocess-") as directory:
        yield Path(directory)


# -- the worker process ----------------------------------------------------------------


async def worker_main(path: Path, workers: int) -> list[str]:
    """Run tasks from the shared file until stdin closes; return the ids it ran."""
    ran: list[str] = []
    bus = TaskBus(store=store_url(path), workers=workers)

    @bus.task(TASK_TYPE, timeout=TIMEOUT)
    async def fetch(ctx: TaskContext, params: FetchParams) -> None:
        ran.append(ctx.task_id)

    async with bus:
        sys.stdout.buffer.write(READY)
        sys.stdout.flush()
        await anyio.to_thread.run_sync(sys.stdin.buffer.read)  # until the parent closes it
    return ran


# -- the submitter, and the single-process reference -----------------------------------


@dataclass
class Run:
    """What one run saw: elapsed seconds, completed events, and runs per task id."""

    elapsed: float = 0.0
    last_heard: float = 0.0
    submitted: list[str] = field(default_factory=list)
    finals: Counter[str] = field(default_factory=Counter)
    latencies_us: list[float] = field(default_factory=list)
    runs: Counter[str] = field(default_factory=Counter)
    store_states: dict[str, int] = field(default_factory=dict)
    later_attempts: int = 0


def _listen(bus: TaskBus, run: Run, tasks: int) -> anyio.Event:
    """Count each task-completed event and its latency; the event is set at `tasks`."""
    done = anyio.Event()
    wall = time.time
    finals, latencies = run.finals, run.latencies_us
    perf_counter = time.perf_counter

    def completed(event: TaskCompleted) -> None:
        latencies.append((wall() - event.timestamp.timestamp()) * 1e6)
        run.last_heard = perf_counter()
        finals[event.task_id] += 1
        if len(latencies) >= tasks:
            done.set()

    bus.on("task-completed", completed)
    return done


async def _submit_all(bus: TaskBus, run: Run, tasks: int, submitters: int) -> None:
    per_submitter, extra = divmod(tasks, submitters)
    submitted = run.submitted
    counter = iter(range(tasks))

    async def submit(count: int) -> None:
        for _ in range(count):
            handle = await bus.submit(TASK_TYPE, payload(next(counter)))
            submitted.append(handle.id)

    async with anyio.create_task_group() as tg:
        for index in range(submitters):
            tg.start_soon(submit, per_submitter + (1 if index < extra else 0))


async def _timed(
    bus: TaskBus, run: Run, tasks: int, submitters: int, done: anyio.Event, path: Path
) -> None:
    gc.collect()
    start = time.perf_counter()
    await _submit_all(bus, run, tasks, submitters)
    heard = -1
    while not done.is_set() and len(run.latencies_us) > heard:
        heard = len(run.latencies_us)
        with anyio.move_on_after(QUIET):
            await done.wait()
    if not run.latencies_us:
        _check_store(path, run)
        raise RuntimeError(f"{path.name}: no task-completed event heard; {run.store_states}")
    run.elapsed = run.last_heard - start  # the last final heard, if some never are


async def single_process(directory: Path, tasks: int, submitters: int, workers: int) -> Run:
    """The same tasks on one process's bus (`workers` of its own) on its own file."""
    path = directory / "single.db"
    run = Run()
    bus = TaskBus(store=store_url(path), workers=workers)

    @bus.task(TASK_TYPE, timeout=TIMEOUT)
    async def fetch(ctx: TaskContext, params: FetchParams) -> None:
        run.runs[ctx.task_id] += 1

    done = _listen(bus, run, tasks)
    async with bus:
        await anyio.sleep(0.01)  # every worker reaches its idle wait
        await _timed(bus, run, tasks, submitters, done, path)
    _check_store(path, run)
    return run


async def multi_process(
    directory: Path, tasks: int, submitters: int, processes: int, workers: int
) -> Run:
    """Submit from this process (workers=0); `processes` worker processes run the tasks."""
    path = directory / "shared.db"
    run = Run()
    bus = TaskBus(store=store_url(path), workers=0)

    @bus.task(TASK_TYPE, timeout=TIMEOUT)
    async def fetch(ctx: TaskContext, params: FetchParams) -> None:
        raise AssertionError("the submitting process runs no task")

    done = _listen(bus, run, tasks)
    runs_files = [directory / f"runs-{n}.txt" for n in range(processes)]
    async with bus:  # opens (creates) the file before any worker does
        workers_started = [
            await _start_worker(path, runs_file, workers) for runs_file in runs_files
        ]
        try:
            with anyio.fail_after(START_TIMEOUT):
                for process in workers_started:
                    await _wait_ready(process)
            await _timed(bus, run, tasks, submitters, done, path)
        finally:
            with anyio.CancelScope(shield=True):
                for process in workers_started:
                    await _stop_worker(process)
    for runs_file in runs_files:
        run.runs.update((await anyio.Path(runs_file).read_text()).split())
    _check_store(path, run)
    return run


async def _start_worker(path: Path, runs_file: Path, workers: int) -> anyio.abc.Process:
    command = [sys.executable, __file__, "--worker", str(path), str(runs_file), str(workers)]
    return await anyio.open_process(command, stdin=PIPE, stdout=PIPE, stderr=None)


async def _wait_ready(process: anyio.abc.Process) -> None:
    assert process.stdout is not None
    received = b""
    while not received.endswith(READY):
        chunk = await process.stdout.receive()
        received += chunk
    if received != READY:
        raise RuntimeError(f"a worker process said {received!r} before it was ready")


async def _stop_worker(process: anyio.abc.Process) -> None:
    """Close its stdin (it stops, then writes the ids it ran); kill it if it does not."""
    assert process.stdin is not None
    await process.stdin.aclose()
    with anyio.move_on_after(START_TIMEOUT):
        await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
        raise RuntimeError(f"a worker process did not stop within {START_TIMEOUT:g}s")
    if process.returncode != 0:
        raise RuntimeError(f"a worker process exited with {process.returncode}")


def _check_store(path: Path, run: Run) -> None:
    conn = sqlite3.connect(path)
    try:
        run.store_states = dict(conn.execute("SELECT state, count(*) FROM tasks GROUP BY state"))
        (run.later_attempts,) = conn.execute(
            "SELECT count(*) FROM tasks WHERE attempt != 1"
        ).fetchone()
    finally:
        conn.close()


# -- the raw reference ------------------------------------------------------------------


def reference_raw_insert(directory: Path, tasks: int) -> float:
    """Rows per second, each one-row INSERT its own transaction, from one process."""
    path = directory / "raw.db"
    schema_file(path)
    conn = raw_connection(path)
    ids = task_ids(tasks)
    now = time.time
    gc.collect()
    try:
        start = time.perf_counter()
        for task_id in ids:
            created = now()
            conn.execute(INSERT_QUEUED, (task_id, TASK_TYPE, created, created))  # autocommit
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    return tasks / elapsed


# -- checks and output -----------------------------------------------------------------


@dataclass
class Check:
    """Whether every task was final exactly once in one run, and the counts that say so."""

    completed_rows: int
    other_rows: int
    later_attempts: int
    runs: int
    ran_once: int
    ran_more: int
    never_ran: int
    unknown_ran: int
    finals_heard_once: int
    unknown_finals: int

    @property
    def exactly_once(self) -> bool:
        """Every task completed on its first attempt, and ran once."""
        tasks = self.completed_rows + self.other_rows
        return (
            self.other_rows == 0
            and self.later_attempts == 0
            and self.ran_once == tasks
            and self.ran_more == self.never_ran == self.unknown_ran == 0
        )

    @property
    def heard_every_final(self) -> bool:
        """The submitter heard each task's task-completed once, and no other."""
        tasks = self.completed_rows + self.other_rows
        return self.finals_heard_once == tasks and self.unknown_finals == 0


def check(run: Run, tasks: int) -> Check:
    submitted = set(run.submitted)
    completed = run.store_states.get("completed", 0)
    return Check(
        completed_rows=completed,
        other_rows=sum(run.store_states.values()) - completed + (tasks - len(submitted)),
        later_attempts=run.later_attempts,
        runs=sum(run.runs.values()),
        ran_once=sum(1 for task_id in submitted if run.runs[task_id] == 1),
        ran_more=sum(1 for task_id in submitted if run.runs[task_id] > 1),
        never_ran=sum(1 for task_id in submitted if run.runs[task_id] == 0),
        unknown_ran=sum(1 for task_id in run.runs if task_id not in submitted),
        finals_heard_once=sum(1 for task_id in submitted if run.finals[task_id] == 1),
        unknown_finals=sum(1 for task_id in run.finals if task_id not in submitted),
    )


def _base(tasks: int, processes: int, workers: int, submitters: int, rounds: int) -> dict[str, Any]:
    return {
        "bench": "multiprocess",
        "backend": "asyncio",
        "store": "sqlite (WAL, synchronous=NORMAL), one file",
        "tasks": tasks,
        "processes": processes,
        "workers_per_process": workers,
        "submitters": submitters,
        "handler": f"async no-op, two-field pydantic input, timeout={TIMEOUT:g}s",
        "rounds": rounds,
    }


def _throughput_line(
    base: dict[str, Any],
    multi: list[Run],
    single: list[Run],
    raw: list[float],
    tasks: int,
    single_workers: int,
) -> dict[str, Any]:
    rates = [tasks / run.elapsed for run in multi]
    single_rates = [tasks / run.elapsed for run in single]
    best, best_single, best_raw = max(rates), max(single_rates), max(raw)
    return {
        **base,
        "case": "end-to-end",
        "tasks_per_s": rounded(best, 0),
        "tasks_per_s_median": rounded(median(rates), 0),
        "finals_not_heard": max(tasks - len(run.finals) for run in multi),
        "reference_single_process_tasks_per_s": rounded(best_single, 0),
        "reference_single_process_workers": single_workers,
        "reference_raw_insert_rows_per_s": rounded(best_raw, 0),
        "ratio_to_single_process": rounded(best / best_single, 3),
        "ratio_to_raw_insert": rounded(best / best_raw, 3),
        "meets_target": None,
    }


def _exactly_once_line(base: dict[str, Any], checks: list[Check]) -> dict[str, Any]:
    worst = min(checks, key=lambda c: (c.exactly_once, c.heard_every_final, c.finals_heard_once))
    exactly_once = all(c.exactly_once for c in checks)
    heard = all(c.heard_every_final for c in checks)
    return {
        **base,
        "case": "exactly-once",
        "exactly_once": exactly_once,
        "every_final_heard_once": heard,
        "completed_rows": worst.completed_rows,
        "other_rows": worst.other_rows,
        "later_attempts": worst.later_attempts,
        "runs": worst.runs,
        "tasks_run_once": worst.ran_once,
        "tasks_run_more_than_once": worst.ran_more,
        "tasks_never_run": worst.never_ran,
        "unknown_runs": worst.unknown_ran,
        "finals_heard_once": worst.finals_heard_once,
        "unknown_finals": worst.unknown_finals,
        "target": "every task completed, run once, its task-completed heard once",
        "meets_target": exactly_once and heard,
    }


def _latency_line(base: dict[str, Any], multi: list[Run], single: list[Run]) -> dict[str, Any]:
    p50 = median([percentile(run.latencies_us, 50) for run in multi])
    p99 = median([percentile(run.latencies_us, 99) for run in multi])
    ref_p50 = median([percentile(run.latencies_us, 50) for run in single])
    ref_p99 = median([percentile(run.latencies_us, 99) for run in single])
    return {
        **base,
        "case": "event-latency",
        "event": "task-completed: worker's timestamp -> submitter's listener (wall clock)",
        "p50_us": rounded(p50, 0),
        "p99_us": rounded(p99, 0),
        "max_us": rounded(median([max(run.latencies_us) for run in multi]), 0),
        "reference": "the same on the single-process bus",
        "reference_p50_us": rounded(ref_p50, 0),
        "reference_p99_us": rounded(ref_p99, 0),
        "meets_target": None,
    }


def measure(
    tasks: int, processes: int, workers: int, submitters: int, rounds: int, single_workers: int
) -> None:
    multi: list[Run] = []
    single: list[Run] = []
    raw: list[float] = []
    for _ in range(rounds):
        with fresh_directory() as directory:
            raw.append(reference_raw_insert(directory, tasks))
            single.append(asyncio.run(single_process(directory, tasks, submitters, single_workers)))
            multi.append(
                asyncio.run(multi_process(directory, tasks, submitters, processes, workers))
            )
    base = _base(tasks, processes, workers, submitters, rounds)
    emit(_throughput_line(base, multi, single, raw, tasks, single_workers))
    emit(_exactly_once_line(base, [check(run, tasks) for run in multi]))
    emit(_latency_line(base, multi, single))


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        _, _, path, runs_file, workers = sys.argv
        ran = asyncio.run(worker_main(Path(path), int(workers)))
        Path(runs_file).write_text("".join(f"{task_id}\n" for task_id in ran))
        return
    args = parser(__doc__)
    args.add_argument("--tasks", type=int, default=None, help="tasks per run (20,000)")
    args.add_argument("--processes", type=int, default=2, help="worker processes (2)")
    args.add_argument("--workers", type=int, default=50, help="workers per process (50)")
    args.add_argument("--submitters", type=int, default=100, help="submitter coroutines (100)")
    args.add_argument(
        "--single-workers", type=int, default=4, help="workers of the single-process bus (4)"
    )
    args.add_argument("--rounds", type=int, default=None, help="rounds (2)")
    opts = args.parse_args()
    tasks = opts.tasks or (500 if opts.quick else 20_000)
    rounds = opts.rounds or (1 if opts.quick else 2)
    measure(tasks, opts.processes, opts.workers, opts.submitters, rounds, opts.single_workers)


if __name__ == "__main__":
    main()
