"""`TaskAccess`: reading, awaiting and cancelling a task, wherever it runs.

A task this bus runs is read from the bus's own records (the freshest view);
any other from the store, a copy. Waiting never trusts a copy to change: it
watches for the task's final state (announced here, or delivered by the
store's event log from another process) and reads the store again.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import anyio

from ._errors import BusNotRunning, TaskCancelledError, TaskFailedError, TaskNotFound
from ._executor import TaskExecutor
from ._held import HeldTasks
from ._leasing import LeaseKeeper
from ._lifecycle import Lifecycle, final_event
from ._queue import TaskQueue
from ._record import TaskRecord
from ._snapshot import TaskSnapshot
from ._states import TaskState
from ._validation import check_text

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._registry import TaskRegistry

__all__ = ["TaskAccess"]

_NOT_RUNNING = frozenset({TaskState.QUEUED, TaskState.WAITING})


class TaskAccess:
    """Get, wait for, and cancel tasks for one bus."""

    def __init__(
        self,
        *,
        lifecycle: Lifecycle,
        executor: TaskExecutor,
        queue: TaskQueue,
        held: HeldTasks,
        registry: TaskRegistry,
        leases: LeaseKeeper | None,
        accepting: Callable[[], bool],
    ) -> None:
        self._lifecycle = lifecycle
        self._store = lifecycle.store
        self._executor = executor
        self._queue = queue
        self._held = held
        self._registry = registry
        self._leases = leases
        self._accepting = accepting

    async def record(self, task_id: str) -> TaskRecord:
        """The task as this bus knows it now; raises `TaskNotFound`."""
        if not isinstance(task_id, str):
            raise TaskNotFound(task_id)
        if self._leases is not None:  # what this bus runs, as it is now
            held = self._leases.local(task_id)
            if held is not None:
                return held
        record = await self._store.get(task_id)
        if record is None:
            raise TaskNotFound(task_id)
        return record

    async def get(self, task_id: str) -> TaskSnapshot:
        record = await self.record(task_id)
        lifecycle = self._lifecycle
        if record.state.is_final and not lifecycle.settled(record):
            with lifecycle.watching(task_id) as woken:
                await woken.wait()
            record = await self.record(task_id)
        return self.snapshot(record)

    def snapshot(self, record: TaskRecord) -> TaskSnapshot:
        """A copy for callers, its result in the handler's type (read back from a
        store, it is JSON data)."""
        snapshot = record.snapshot()
        if record.loaded and record.state is TaskState.COMPLETED:
            snapshot = snapshot.model_copy(update={"result": self.typed_result(record)})
        return snapshot

    async def wait(self, task_id: str, timeout: float | None) -> TaskSnapshot:
        return self.snapshot(await self.final_record(task_id, timeout))

    async def final_record(self, task_id: str, timeout: float | None) -> TaskRecord:
        """The task's record once final (read again after each wake: on a shared
        store another process may have run it)."""
        record = await self.record(task_id)
        lifecycle = self._lifecycle
        if lifecycle.settled(record):
            return record
        with anyio.fail_after(timeout) if timeout is not None else nullcontext():
            while True:
                with lifecycle.watching(task_id) as woken:
                    # Read again once watching, so a final state reached meanwhile counts.
                    record = await self.record(task_id)
                    if lifecycle.settled(record):
                        return record
                    await woken.wait()
                if not self._accepting():
                    record = await self.record(task_id)
                    if lifecycle.settled(record):
                        return record
                    raise BusNotRunning(
                        f"the bus stopped before task {record.id} finished (it is "
                        f"{record.state.value}; a durable store runs it on the next start)"
                    )

    async def result(self, task_id: str, timeout: float | None) -> Any:
        record = await self.final_record(task_id, timeout)
        if record.state is TaskState.COMPLETED:
            return self.typed_result(record)
        if record.state is TaskState.CANCELLED:
            raise TaskCancelledError(record.id, record.cancel_reason)
        raise TaskFailedError(record.snapshot())

    def typed_result(self, record: TaskRecord) -> Any:
        """The result, validated back into the handler's type if it came from storage."""
        definition = self._registry.find(record.type)
        if not record.loaded or definition is None or not definition.checks_output:
            return record.result
        return definition.output_adapter.validate_python(record.result)

    async def cancel(self, task_id: str, reason: str | None) -> bool:
        if reason is not None:
            check_text(reason, "reason")
        record = await self.record(task_id)
        if record.state.is_final:
            return False
        if self._leases is not None and self._leases.local(task_id) is None:
            return await self._cancel_elsewhere(task_id, reason)
        lifecycle = self._lifecycle
        if record.state in _NOT_RUNNING:  # queued, or waiting for input: no worker holds it
            if await lifecycle.cancelled(record, reason):
                self._queue.discard(record)
                self._held.discard(record)
                await lifecycle.wait_final(record)  # durable before we say so
                return True
            return False
        if self._executor.cancel_running(task_id, reason or "cancelled"):
            await lifecycle.wait_final(record)
            return record.state is TaskState.CANCELLED
        return False

    async def _cancel_elsewhere(self, task_id: str, reason: str | None) -> bool:
        """Cancel a task this bus does not hold: in the store if it is queued, else
        through the store's log, to whichever process runs it."""
        leases = self._lifecycle.leases
        assert leases is not None
        cancelled = await leases.cancel_queued(task_id, reason, event_for=final_event)
        if cancelled is not None:
            self._lifecycle.announced_elsewhere(cancelled)
            return True
        leases.request_cancel(task_id, reason or "cancelled")
        record = await self.final_record(task_id, None)
        return record.state is TaskState.CANCELLED

    def cancel_requested(self, task_id: str, reason: str | None) -> None:
        """A cancel request from the store's log: stop the task if it runs here."""
        self._executor.cancel_running(task_id, reason or "cancelled")
