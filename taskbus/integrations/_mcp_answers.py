"""What the taskbus MCP tools answer: pydantic models, so clients get output schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from taskbus import InputQuestion, TaskSnapshot, TaskState

__all__ = [
    "CancelAnswer",
    "TaskErrorInfo",
    "TaskList",
    "TaskResultAnswer",
    "TaskStatusAnswer",
    "TaskTypeInfo",
    "TaskTypeList",
]


class TaskErrorInfo(BaseModel):
    """Why a task failed."""

    message: str
    error_type: str = Field(
        description="How the error was classified: retryable, fatal or user-actionable. "
        "Whether the task runs again is the status's will_retry."
    )
    suggested_action: str | None = Field(default=None, description="What a person can do.")


class TaskStatusAnswer(BaseModel):
    """A task as it is now."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    type: str
    state: TaskState = Field(
        description="queued, running, waiting (for input: see question), completed, failed "
        "or cancelled."
    )
    done: bool = Field(description="True once the state is final (completed, failed, cancelled).")
    progress: float | None = Field(default=None, description="Percent done, 0-100.")
    current: int | None = None
    total: int | None = None
    message: str | None = Field(default=None, description="The current operation.")
    eta: float | None = Field(default=None, description="Seconds remaining, estimated.")
    attempts: int = Field(description="Attempts started so far.")
    max_attempts: int
    will_retry: bool = Field(
        default=False, description="True while the task waits to run again after a failed attempt."
    )
    error: TaskErrorInfo | None = None
    cancel_reason: str | None = None
    question: InputQuestion | None = Field(
        default=None,
        description="While the task waits for input: what it asks, and the JSON schema of "
        "the answer (answer it with answer_task).",
    )
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    result: Any = Field(
        default=None,
        description="What the task returned, as JSON: only in the final result of an MCP "
        "task (tasks extension); otherwise null, ask task_result.",
    )

    @classmethod
    def of(cls, snapshot: TaskSnapshot) -> TaskStatusAnswer:
        error = snapshot.error
        return cls(
            task_id=snapshot.id,
            type=snapshot.type,
            state=snapshot.state,
            done=snapshot.is_final,
            progress=snapshot.progress,
            current=snapshot.current,
            total=snapshot.total,
            message=snapshot.message,
            eta=snapshot.eta,
            attempts=snapshot.attempts,
            max_attempts=snapshot.max_attempts,
            will_retry=snapshot.state is TaskState.QUEUED and error is not None,
            error=None
            if error is None
            else TaskErrorInfo(
                message=error.message,
                error_type=error.error_type.value,
                suggested_action=error.suggested_action,
            ),
            cancel_reason=snapshot.cancel_reason,
            question=snapshot.question,
            created_at=snapshot.created_at,
            started_at=snapshot.started_at,
            finished_at=snapshot.finished_at,
        )


class TaskResultAnswer(BaseModel):
    """A completed task's result, or word that it has not finished yet."""

    task_id: str
    state: TaskState
    done: bool = Field(description="False while the task is queued or running.")
    result: Any = Field(default=None, description="What the task returned, as JSON.")
    status: TaskStatusAnswer


class CancelAnswer(BaseModel):
    """What a cancel did."""

    task_id: str
    cancelled: bool = Field(description="False if the task had already finished.")
    state: TaskState


class TaskList(BaseModel):
    """Your tasks, oldest first."""

    tasks: list[TaskStatusAnswer]


class TaskTypeInfo(BaseModel):
    """One task type a client may submit."""

    type: str
    description: str | None = None
    input_schema: dict[str, Any] = Field(description="JSON schema of submit_task's input.")
    estimated_duration: float | None = Field(default=None, description="Seconds, typically.")
    timeout: float | None = Field(default=None, description="Seconds per attempt, at most.")
    default_priority: int


class TaskTypeList(BaseModel):
    """The task types this server runs."""

    types: list[TaskTypeInfo]
