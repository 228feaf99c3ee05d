"""Tasks whose type goes away, or is not there yet: hold, release, fail, retire."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import ErrorType, UnknownTaskType
from ._executor import TaskExecutor
from ._held import HeldTasks
from ._lifecycle import Lifecycle, error_info
from ._queue import TaskQueue
from ._record import TaskRecord
from .stores import Store

if TYPE_CHECKING:
    from ._registry import TaskRegistry

__all__ = ["TypeChanges"]


class TypeChanges:
    """What the bus does when task types register, unregister, or never show up."""

    def __init__(
        self,
        *,
        registry: TaskRegistry,
        queue: TaskQueue,
        held: HeldTasks,
        executor: TaskExecutor,
        lifecycle: Lifecycle,
        store: Store,
        monotonic: Any,
    ) -> None:
        self._registry = registry
        self._queue = queue
        self._held = held
        self._executor = executor
        self._lifecycle = lifecycle
        self._store = store
        self._monotonic = monotonic

    def changed(self, name: str, definition: Any) -> None:
        """The registry added (`definition`) or removed (None) type `name`."""
        self._queue.set_limit(name, definition.concurrency if definition is not None else None)
        self._queue.set_key_limit(name, definition.key_limit if definition is not None else None)
        if definition is None:
            self._held.removed.add(name)
        else:
            self._held.removed.discard(name)
            now = self._monotonic()
            for record in self._held.release(name):
                self._queue.push(record, now)
        self._executor.notify(self._executor.workers)

    async def fail_held(self, reason: str | None) -> int:
        records = self._held.take_all()
        for record in records:
            await self.fail_unregistered(record, reason)
        return len(records)

    async def fail_unregistered(self, record: TaskRecord, reason: str | None = None) -> None:
        exc = UnknownTaskType(record.type, self._registry.types())
        if reason:
            exc.args = (f"{reason} ({record.type})",)
        await self._lifecycle.failed(record, error_info(exc, ErrorType.FATAL))

    async def retire(self, names: list[str], *, reason: str, cancel_running: bool) -> None:
        """Queued tasks of `names` fail now with `reason`; running ones finish, or are
        cancelled and awaited if `cancel_running`."""
        for name in names:
            for record in [*self._queue.take_type(name), *self._held.release(name)]:
                exc = UnknownTaskType(name)
                exc.args = (f"{reason} ({name})",)
                await self._lifecycle.failed(record, error_info(exc, ErrorType.FATAL))
        if not cancel_running:
            return
        doomed: list[TaskRecord] = []
        for task_id in self._executor.running_ids:
            running = await self._store.get(task_id)
            if running is not None and running.type in names:
                doomed.append(running)
        for record in doomed:
            self._executor.cancel_running(record.id, reason)
        for record in doomed:
            await self._lifecycle.wait_final(record)
