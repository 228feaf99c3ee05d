"""``taskbus worker``: run tasks from a store that processes share, until a signal.

The process claims tasks from the store (SQLite today) and runs them; any other
process on that store (``taskbus serve``, an app with ``workers=0``) submits,
lists and streams events. SIGTERM or SIGINT stop it gracefully: it claims
nothing more, lets running tasks finish within the grace, then hands the rest
back to the store's queue (their attempt not counted) for another worker, or
for the next start. The bus logs one line per task transition it makes, on
``taskbus.lifecycle``.
"""

from __future__ import annotations

import signal
from collections.abc import Callable

import anyio

from taskbus import TaskBus

__all__ = ["WorkerError", "run_worker"]


class WorkerError(Exception):
    """The app cannot run as a worker (its store is not shared, say)."""


def check_worker_bus(bus: TaskBus, workers: int | None, grace: float | None) -> None:
    """Apply ``--workers``/``--grace``; refuse a bus whose store processes cannot share."""
    if not bus.shares_store:
        raise WorkerError(
            f"the app's bus keeps its tasks in this process ({type(bus.store).__name__}): "
            "a worker needs a store that processes share, such as "
            "TaskBus(store='sqlite:///jobs.db')"
        )
    if workers is not None:
        bus.executor.resize(workers)
    if bus.executor.workers < 1:
        raise WorkerError("the app's bus has no workers (workers=0): pass --workers N")
    if grace is not None:
        if grace < 0:
            raise WorkerError(f"--grace must be >= 0, not {grace}")
        bus.shutdown_grace = grace


async def run_worker(bus: TaskBus, *, announce: Callable[[str], None]) -> None:
    """Run `bus` until SIGTERM or SIGINT, then stop it gracefully."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with bus:
            announce(
                f"taskbus worker {bus.worker_id}: {bus.executor.workers} workers on "
                f"{bus.store!r} (SIGTERM or Ctrl-C to stop)"
            )
            async for received in signals:
                announce(
                    f"taskbus worker: {signal.Signals(received).name}: stopping (running "
                    f"tasks get {bus.shutdown_grace:g}s, then go back to the queue)"
                )
                break
    report = bus.shutdown_report
    if report is not None:
        announce(
            f"taskbus worker stopped: {report.finished_in_grace} finished in the grace, "
            f"{len(report.handed_back)} handed back to the queue"
        )
