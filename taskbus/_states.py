"""Task states and the one table of legal transitions between them."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FINAL_STATES", "TRANSITIONS", "TaskState"]


class TaskState(StrEnum):
    """Where a task is in its life. The last three are final."""

    QUEUED = "queued"
    RUNNING = "running"
    #: Asked its caller for input (``ctx.ask``); holds no worker until answered.
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        """True for completed, failed and cancelled: nothing follows them."""
        return self in FINAL_STATES


FINAL_STATES: frozenset[TaskState] = frozenset(
    {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED}
)

#: Every legal move. A retry takes a running task back to queued; a queued task
#: fails without running when its type is unregistered or it cannot be recovered.
#: A task that asks for input waits; its answer (or the deadline) queues it again.
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    TaskState.QUEUED: frozenset({TaskState.RUNNING, TaskState.CANCELLED, TaskState.FAILED}),
    TaskState.RUNNING: frozenset(
        {
            TaskState.COMPLETED,
            TaskState.FAILED,
            TaskState.CANCELLED,
            TaskState.QUEUED,
            TaskState.WAITING,
        }
    ),
    TaskState.WAITING: frozenset({TaskState.QUEUED, TaskState.CANCELLED, TaskState.FAILED}),
    TaskState.COMPLETED: frozenset(),
    TaskState.FAILED: frozenset(),
    TaskState.CANCELLED: frozenset(),
}
