"""`TaskHandle`: what `submit` returns, typed by the handler's result."""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar, cast

from ._snapshot import TaskSnapshot

__all__ = ["TaskHandle", "TaskReader"]

ResultT_co = TypeVar("ResultT_co", covariant=True)


class TaskReader(Protocol):
    """What a handle reads its task through (a `TaskBus`)."""

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any: ...
    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskSnapshot: ...
    async def get(self, task_id: str) -> TaskSnapshot: ...
    async def cancel(self, task_id: str, *, reason: str | None = None) -> bool: ...


class TaskHandle(Generic[ResultT_co]):
    """A submitted task: its id, and ways to wait for it, read it or cancel it."""

    __slots__ = ("_bus", "id", "type")

    def __init__(self, bus: TaskReader, task_id: str, task_type: str) -> None:
        self._bus = bus
        self.id = task_id
        self.type = task_type

    def __repr__(self) -> str:
        return f"<TaskHandle {self.id} {self.type}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TaskHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    async def result(self, timeout: float | None = None) -> ResultT_co:
        """The handler's return value, once the task is final.

        Raises `TaskFailedError` or `TaskCancelledError` for those outcomes, and
        `TimeoutError` if `timeout` seconds pass first (the task goes on).
        """
        return cast(ResultT_co, await self._bus.result(self.id, timeout=timeout))

    async def wait(self, timeout: float | None = None) -> TaskSnapshot:
        """The final snapshot, whatever the outcome (never raises for it)."""
        return await self._bus.wait(self.id, timeout=timeout)

    async def get(self) -> TaskSnapshot:
        """The task as it is now."""
        return await self._bus.get(self.id)

    async def cancel(self, reason: str | None = None) -> bool:
        """Cancel the task; False if it had already finished."""
        return await self._bus.cancel(self.id, reason=reason)
