"""Throughput: no-op tasks per second through a TaskBus, against the raw reference.

Submits 20,000 tasks of an ``async def noop(ctx: TaskContext) -> None`` handler
registered with ``timeout=30`` (so every task arms and disarms a timeout timer)
to ``TaskBus(workers=100)``, and times from the first submit until every task
is final (the last handle's result is awaited; tasks of one priority start in
FIFO order and a no-op finishes without yielding, so the last one is the last
to finish; the store's counts are checked afterwards, outside the timing).

Cases, each one JSON line:

- ``no-subscriber``: nobody listens, so no event is even built.
- ``sync-listener``: one sync listener on every event, ``bus.on("*", count)``.
- ``async-subscriber``: one ``async with bus.subscribe()`` consumer draining
  every event (timed until it has read all of them). Its buffer is sized to
  hold them all: a bulk submit that never yields would otherwise overflow the
  default buffer (see the README).
- ``no-subscriber`` on trio, compared with the asyncio reference (there is no
  trio reference), when trio is installed.
- ``peer-aiojobs``: the same no-op coroutines through aiojobs (the bench extra
  installs it) with ``limit=workers``; ``taskbus_to_peer`` is taskbus's
  no-subscriber rate over aiojobs' (target: at least 1).

Each round runs the reference (20,000 items, 100 workers) and then every case,
each on a fresh event loop; the best round counts, the medians are reported
beside it. ``--profile CASE`` instead runs that case once under pyinstrument
and writes the report to stderr (nothing on stdout).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from typing import Any

import anyio
import anyio.lowlevel
from _reference import emit, median, parser, reference_throughput, rounded

from taskbus import ALL_EVENTS, TaskBus, TaskContext, TaskState
from taskbus.stores import MemoryStore

TASK_TYPE = "bench:noop"
TIMEOUT = 30.0
CASES: dict[str, float | None] = {
    "no-subscriber": 0.25,
    "sync-listener": 0.125,
    "async-subscriber": None,
}
EVENTS_PER_TASK = 3  # queued, started, completed


async def noop(ctx: TaskContext) -> None:
    return None


def make_bus(workers: int, tasks: int) -> TaskBus:
    # The memory store keeps the newest 10,000 finished tasks by default; sized to
    # keep every task here so that the counts can be checked (its cap still runs).
    bus = TaskBus(workers=workers, store=MemoryStore(max_finished=tasks))
    bus.task(TASK_TYPE, timeout=TIMEOUT)(noop)
    return bus


async def _submit_all(bus: TaskBus, tasks: int) -> float:
    start = time.perf_counter()
    handle = None
    for _ in range(tasks):
        handle = await bus.submit(TASK_TYPE)
    assert handle is not None
    await handle.result()
    return time.perf_counter() - start


async def _submit_all_subscribed(bus: TaskBus, tasks: int) -> float:
    expected = tasks * EVENTS_PER_TASK
    seen = 0
    all_seen = anyio.Event()
    async with (
        bus.subscribe(buffer=expected + 1) as events,
        anyio.create_task_group() as tg,
    ):

        async def consume() -> None:
            nonlocal seen
            async for _ in events:
                seen += 1
                if seen == expected:
                    all_seen.set()

        tg.start_soon(consume)
        await anyio.lowlevel.checkpoint()
        start = time.perf_counter()
        for _ in range(tasks):
            await bus.submit(TASK_TYPE)
        with anyio.fail_after(60):
            await all_seen.wait()
        elapsed = time.perf_counter() - start
        tg.cancel_scope.cancel()
    return elapsed


async def run_taskbus(case: str, tasks: int, workers: int) -> float:
    """Tasks per second for one case, on whichever event loop runs it."""
    bus = make_bus(workers, tasks)
    seen = 0

    def count(event: Any) -> None:
        nonlocal seen
        seen += 1

    if case == "sync-listener":
        bus.on(ALL_EVENTS, count)
    gc.collect()
    async with bus:
        await anyio.sleep(0.005)  # every worker reaches its idle wait
        if case == "async-subscriber":
            elapsed = await _submit_all_subscribed(bus, tasks)
        else:
            elapsed = await _submit_all(bus, tasks)
        stats = await bus.stats()
    completed = stats.by_state.get(TaskState.COMPLETED, 0)
    if completed != tasks:
        raise RuntimeError(f"{case}: {completed} of {tasks} tasks completed")
    if case == "sync-listener" and seen != tasks * EVENTS_PER_TASK:
        raise RuntimeError(f"{case}: listener saw {seen} events, not {tasks * EVENTS_PER_TASK}")
    return tasks / elapsed


async def aiojobs_throughput(tasks: int, workers: int) -> float:
    """The peer a user might pick instead: aiojobs, `workers` jobs at a time.

    aiojobs runs coroutines with a concurrency limit; it has no priorities, no
    timeouts per job, no events and no store, so this is the rate taskbus aims at.
    """
    import aiojobs

    done = 0
    finished = asyncio.Event()

    async def noop() -> None:
        nonlocal done
        done += 1
        if done == tasks:
            finished.set()

    scheduler = aiojobs.Scheduler(limit=workers, pending_limit=0)
    gc.collect()
    start = time.perf_counter()
    for _ in range(tasks):
        await scheduler.spawn(noop())
    await finished.wait()
    elapsed = time.perf_counter() - start
    await scheduler.close()
    return tasks / elapsed


def _has_aiojobs() -> bool:
    try:
        import aiojobs  # noqa: F401
    except ImportError:
        return False
    return True


def _peer_line(
    tasks: int, workers: int, peer: list[float], ours: list[float], reference: list[float]
) -> dict[str, Any]:
    line = _line("peer-aiojobs", "asyncio", tasks, workers, peer, reference, None)
    line["handler"] = "async no-op coroutine, aiojobs.Scheduler(limit=workers)"
    line["taskbus_to_peer"] = rounded(max(ours) / max(peer), 4)
    line["target_taskbus_to_peer"] = 1.0
    line["meets_target"] = max(ours) >= max(peer)
    return line


def _line(
    case: str,
    backend: str,
    tasks: int,
    workers: int,
    rates: list[float],
    reference: list[float],
    target: float | None,
) -> dict[str, Any]:
    best, best_reference = max(rates), max(reference)
    ratio = best / best_reference
    line: dict[str, Any] = {
        "bench": "throughput",
        "case": case,
        "backend": backend,
        "reference_backend": "asyncio",
        "tasks": tasks,
        "workers": workers,
        "handler": f"async no-op, timeout={TIMEOUT:g}s (timeout timer armed per task)",
        "rounds": len(rates),
        "tasks_per_s": rounded(best, 0),
        "tasks_per_s_median": rounded(median(rates), 0),
        "reference_tasks_per_s": rounded(best_reference, 0),
        "reference_tasks_per_s_median": rounded(median(reference), 0),
        "ratio": rounded(ratio, 4),
        "ratio_median": rounded(
            median([r / ref for r, ref in zip(rates, reference, strict=True)]), 4
        ),
        "target_ratio": target,
        "meets_target": None if target is None else ratio >= target,
    }
    if case == "async-subscriber":
        line["subscriber_buffer"] = tasks * EVENTS_PER_TASK + 1
    return line


def _has_trio() -> bool:
    try:
        import trio  # noqa: F401
    except ImportError:
        return False
    return True


def measure(tasks: int, workers: int, rounds: int, trio: bool) -> None:
    reference: list[float] = []
    rates: dict[str, list[float]] = {case: [] for case in CASES}
    trio_rates: list[float] = []
    peer_rates: list[float] = []
    peer = _has_aiojobs()
    for _ in range(rounds):
        reference.append(asyncio.run(reference_throughput(tasks, workers)))
        if peer:
            peer_rates.append(asyncio.run(aiojobs_throughput(tasks, workers)))
        for case, case_rates in rates.items():
            case_rates.append(asyncio.run(run_taskbus(case, tasks, workers)))
        if trio:
            trio_rates.append(
                anyio.run(run_taskbus, "no-subscriber", tasks, workers, backend="trio")
            )
    for case, target in CASES.items():
        emit(_line(case, "asyncio", tasks, workers, rates[case], reference, target))
    if trio:
        line = _line(
            "no-subscriber", "trio", tasks, workers, trio_rates, reference, CASES["no-subscriber"]
        )
        line["note"] = "trio run compared with the asyncio reference (no trio reference)"
        emit(line)
    if peer:
        emit(_peer_line(tasks, workers, peer_rates, rates["no-subscriber"], reference))


def profile(case: str, tasks: int, workers: int) -> None:
    from pyinstrument import Profiler

    asyncio.run(run_taskbus(case, tasks, workers))  # warm up imports and caches
    profiler = Profiler(interval=0.0002, async_mode="disabled")
    profiler.start()
    rate = asyncio.run(run_taskbus(case, tasks, workers))
    profiler.stop()
    sys.stderr.write(f"{case}: {rate:.0f} tasks/s under the profiler\n")
    sys.stderr.write(profiler.output_text(unicode=True, show_all=False))


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--tasks", type=int, default=None, help="tasks per run (20,000)")
    args.add_argument("--workers", type=int, default=100, help="workers (100)")
    args.add_argument("--rounds", type=int, default=None, help="rounds, best counts (5)")
    args.add_argument("--no-trio", action="store_true", help="skip the trio line")
    args.add_argument("--profile", choices=sorted(CASES), help="profile one case to stderr")
    opts = args.parse_args()
    tasks = opts.tasks or (2_000 if opts.quick else 20_000)
    rounds = opts.rounds or (1 if opts.quick else 5)
    if opts.profile:
        profile(opts.profile, tasks, opts.workers)
        return
    measure(tasks, opts.workers, rounds, trio=not opts.no_trio and _has_trio())


if __name__ == "__main__":
    main()
