"""Tasks whose type is not registered (yet): held, not failed.

A plugin host often registers its plugins' task types after ``async with bus:``
has recovered their stored tasks. Such tasks wait here, holding no worker,
until their type registers (they go back to the queue), until the grace ends,
or until `TaskBus.fail_unknown_types()` is called (they fail then).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from math import inf

import anyio

from ._clock import Clock
from ._record import TaskRecord

__all__ = ["HeldTasks", "expire_held"]

logger = logging.getLogger("taskbus.executor")


class HeldTasks:
    """Held records by id, in the order they were held, each with its deadline."""

    def __init__(self, grace: float | None) -> None:
        if grace is not None and (
            not isinstance(grace, int | float) or isinstance(grace, bool) or not 0 <= grace < inf
        ):
            raise ValueError(f"unknown_type_grace must be >= 0 seconds or None, not {grace!r}")
        self.grace = grace
        self._held: OrderedDict[str, tuple[float, TaskRecord]] = OrderedDict()
        self._added = anyio.Event()
        #: Types unregistered in this process: their tasks fail at once, not held.
        self.removed: set[str] = set()

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, record: TaskRecord, now: float) -> None:
        """Hold `record` from monotonic time `now` (deadlines follow the holding order)."""
        deadline = now + self.grace if self.grace is not None else inf
        if not any(held.type == record.type for _, held in self._held.values()):
            logger.warning(
                "task type %r is not registered: holding its tasks until it is%s",
                record.type,
                f" (for {self.grace:g}s at most)" if self.grace is not None else "",
            )
        self._held[record.id] = (deadline, record)
        self._added.set()

    def release(self, task_type: str) -> list[TaskRecord]:
        """Stop holding the tasks of `task_type` (it has just registered)."""
        released = [record for _, record in self._held.values() if record.type == task_type]
        for record in released:
            del self._held[record.id]
        return released

    def discard(self, record: TaskRecord) -> None:
        """Stop holding `record` (it was cancelled)."""
        self._held.pop(record.id, None)

    def take_all(self) -> list[TaskRecord]:
        """Stop holding everything (to fail it, or at shutdown)."""
        records = [record for _, record in self._held.values()]
        self._held.clear()
        return records

    def next_deadline(self) -> float | None:
        for deadline, _ in self._held.values():
            return deadline
        return None

    def take_expired(self, now: float) -> list[TaskRecord]:
        expired: list[TaskRecord] = []
        while self._held:
            task_id, (deadline, record) = next(iter(self._held.items()))
            if deadline > now:
                break
            del self._held[task_id]
            expired.append(record)
        return expired

    async def wait_for_more(self) -> None:
        """Return once something new is held."""
        await self._added.wait()
        self._added = anyio.Event()


async def expire_held(
    held: HeldTasks, clock: Clock, fail: Callable[[TaskRecord], Awaitable[object]]
) -> None:
    """Fail held tasks whose grace has ended, until cancelled."""
    while True:
        deadline = held.next_deadline()
        if deadline is None:
            await held.wait_for_more()
            continue
        await clock.sleep(deadline - clock.monotonic())
        for record in held.take_expired(clock.monotonic()):
            await fail(record)
