"""What a caller sees of a task: `TaskSnapshot`, its `ErrorInfo` and, for a failed
task, its `DeadLetterReason`."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from ._error_type import ErrorType
from ._input import InputQuestion
from ._states import TaskState

__all__ = ["RETRY_OF", "DeadLetterReason", "ErrorInfo", "TaskSnapshot"]

#: The metadata key that names the task a re-run (`TaskBus.retry`) was made from.
RETRY_OF = "retry_of"


class DeadLetterReason(StrEnum):
    """Why a failed task is a dead letter (every failed task is one)."""

    #: It failed on a retryable error with no attempt left (`max_attempts` used up).
    EXHAUSTED = "attempts-exhausted"
    #: Any other failure: an error not worth another attempt (fatal, user-actionable),
    #: or a failure outside its handler (its type removed, say).
    NOT_RETRYABLE = "not-retryable"


class ErrorInfo(BaseModel):
    """Why a task (or its last attempt) failed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message: str
    error_type: ErrorType
    exception_type: str = Field(description="Qualified class name of the exception.")
    suggested_action: str | None = None
    traceback: str | None = Field(default=None, description="Bounded to the last 8 KiB.")

    @property
    def retryable(self) -> bool:
        return self.error_type is ErrorType.RETRYABLE


class TaskSnapshot(BaseModel):
    """A point-in-time copy of one task, safe to keep and to serialise."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    type: str
    state: TaskState
    priority: int
    owner: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    input: Any = None
    progress: float | None = Field(default=None, description="Percent done, 0-100.")
    current: int | None = None
    total: int | None = None
    message: str | None = Field(default=None, description="The current operation.")
    eta: float | None = Field(default=None, description="Seconds remaining, estimated.")
    result: Any = None
    error: ErrorInfo | None = None
    cancel_reason: str | None = None
    attempts: int = Field(default=0, description="Attempts started so far.")
    max_attempts: int = 1
    created_at: datetime = Field(description="When it was submitted.")
    queued_at: datetime = Field(description="When it last entered the queue.")
    started_at: datetime | None = Field(default=None, description="Start of the last attempt.")
    finished_at: datetime | None = None
    not_before: datetime | None = Field(default=None, description="Earliest next start.")
    worker: str | None = Field(
        default=None,
        description="While it runs on a store processes share: the worker running it "
        "(host:pid:token).",
    )
    waiting_for: str | None = Field(
        default=None,
        description="Why a queued task is not running yet (e.g. 'parents' or "
        "'rate limit 10/minute (key alice)'), or the prompt of a task waiting for "
        "input; None when nothing holds it back.",
    )
    question: InputQuestion | None = Field(
        default=None,
        description="While it waits for input: the question (answer it with respond).",
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def wait_time(self) -> float | None:
        """Seconds between entering the queue and starting the last attempt."""
        if self.started_at is None:
            return None
        return max((self.started_at - self.queued_at).total_seconds(), 0.0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def run_time(self) -> float | None:
        """Seconds the last attempt ran (so far, if it still runs: None)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return max((self.finished_at - self.started_at).total_seconds(), 0.0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def dead_letter(self) -> DeadLetterReason | None:
        """For a failed task (a dead letter), why; None for any other state."""
        if self.state is not TaskState.FAILED:
            return None
        error = self.error
        if (error is None or error.retryable) and self.attempts >= self.max_attempts:
            return DeadLetterReason.EXHAUSTED
        return DeadLetterReason.NOT_RETRYABLE

    @property
    def retry_of(self) -> str | None:
        """For a re-run made by `TaskBus.retry`, the id of the task it re-ran."""
        value = self.metadata.get(RETRY_OF)
        return value if isinstance(value, str) else None

    @property
    def is_final(self) -> bool:
        return self.state.is_final
