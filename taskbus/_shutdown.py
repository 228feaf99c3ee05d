"""Leaving ``async with bus:``: the grace, then cancel or hand back what still runs."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio

from ._bus import EventBus
from ._executor import TaskExecutor
from ._held import HeldTasks
from ._lifecycle import Lifecycle
from ._queue import TaskQueue
from ._record import TaskRecord
from ._reports import ShutdownReport

__all__ = ["shut_down"]

logger = logging.getLogger("taskbus.bus")


async def shut_down(
    executor: TaskExecutor,
    queue: TaskQueue,
    held: HeldTasks,
    lifecycle: Lifecycle,
    events: EventBus,
    *,
    grace: float,
    durable: bool,
    hand_back: Callable[[list[TaskRecord]], Awaitable[None]] | None = None,
    waiting: Callable[[], list[TaskRecord]] | None = None,
) -> ShutdownReport:
    """Stop intake, give running tasks `grace` seconds, then interrupt the rest.

    A `durable` store gets them back, queued, their attempt not counted; otherwise
    they are cancelled. Waiters and subscriptions end once final states are out.
    Tasks left queued include those `waiting` for their parents.
    """
    running_before = set(executor.running_ids)
    executor.stop_intake()
    with anyio.move_on_after(grace):
        await executor.wait_stopped()
    interrupted = [
        task_id
        for task_id in executor.running_ids
        if executor.cancel_running(task_id, "bus shutdown", requeue=durable)
    ]
    with anyio.move_on_after(max(grace, 1.0)):
        await executor.wait_stopped()
    drained = queue.drain()
    if hand_back is not None:  # claimed here, never started: back to the store's queue
        with anyio.move_on_after(max(grace, 1.0)):
            await hand_back(drained)
    parked = [] if waiting is None else waiting()
    left = [record.id for record in [*drained, *held.take_all(), *parked]]
    with anyio.move_on_after(max(grace, 1.0)):
        await lifecycle.flush_final()  # final states reach listeners once durable
    lifecycle.release_waiters()  # they get BusNotRunning for what is left
    await events.drain(timeout=1.0)
    events.close_subscriptions()
    _log(interrupted, left, grace=grace, durable=durable)
    return ShutdownReport(
        finished_in_grace=len(running_before - set(interrupted)),
        cancelled=[] if durable else interrupted,
        left_queued=left,
        handed_back=interrupted if durable else [],
    )


def _log(interrupted: list[str], left: list[str], *, grace: float, durable: bool) -> None:
    level = logging.INFO if durable else logging.WARNING  # a durable store loses nothing
    if interrupted:
        logger.log(
            level,
            "taskbus stopped: %d running task(s) %s after the %.1fs grace",
            len(interrupted),
            "handed back to the queue for the next start" if durable else "cancelled",
            grace,
        )
    if left:
        logger.log(
            level,
            "taskbus stopped with %d task(s) left queued%s",
            len(left),
            " (kept in the store for the next start)" if durable else " (lost)",
        )
