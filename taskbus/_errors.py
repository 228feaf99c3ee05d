"""Every exception taskbus raises, under one root.

::

    TaskbusError
    ├── TaskNotFound (LookupError)          no task has that id
    ├── TaskNotRetryable                    retry() of a task not failed or cancelled
    ├── UnknownTaskType (LookupError)       no task type has that name
    ├── ScheduleNotFound (LookupError)      no schedule has that id
    ├── InvalidTaskInput (pydantic ValidationError, so also ValueError)
    ├── InvalidSubmission (ValueError)      priority, delay or metadata out of range
    │   └── InvalidSchedule                 a cron text, time zone or interval that cannot work
    ├── InvalidTaskDefinition (ValueError)  a handler or option that cannot work
    ├── DuplicateTaskType (ValueError)      a name registered twice
    ├── InvalidTransition (RuntimeError)    a state change the table forbids
    ├── BusNotRunning (RuntimeError)        the bus is not started, or is closing
    ├── SubscriptionOverflow                a subscriber fell too far behind
    ├── StoreError                          a store cannot open, read or write
    │   ├── UnstorableValue (ValueError)    a value the store cannot encode
    │   └── CorruptRecord                   a stored row that cannot be read back
    │                                       (defined beside the stores: taskbus.stores._base)
    ├── TaskNotWaiting (RuntimeError)       respond() to a task that asks nothing now
    ├── InvalidAnswer (ValueError)          respond() with an answer that does not fit
    ├── TaskFailedError                     awaited task ended failed
    ├── TaskCancelledError                  awaited task ended cancelled
    └── TaskError                           raised *by handlers* to classify a failure
        ├── RetryableError                  worth another attempt
        ├── FatalError                      never worth another attempt
        ├── UserActionableError             a person must act (suggested_action)
        ├── TaskTimeoutError (TimeoutError) the handler overran its timeout
        ├── InputTimeout (TimeoutError)     no answer to ctx.ask() before its timeout
        └── TaskInterruptedError            its process stopped while it ran

    TaskCancellation (BaseException)        raised *inside* a handler by
                                            ctx.raise_if_cancelled(); not an Exception,
                                            so ``except Exception`` cannot swallow it
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from ._error_type import ErrorType

if TYPE_CHECKING:
    from ._snapshot import TaskSnapshot

__all__ = [
    "BusNotRunning",
    "DuplicateTaskType",
    "ErrorType",
    "FatalError",
    "InputTimeout",
    "InvalidAnswer",
    "InvalidSchedule",
    "InvalidSubmission",
    "InvalidTaskDefinition",
    "InvalidTaskInput",
    "InvalidTransition",
    "RetryableError",
    "ScheduleNotFound",
    "StoreError",
    "SubscriptionOverflow",
    "TaskCancellation",
    "TaskCancelledError",
    "TaskError",
    "TaskFailedError",
    "TaskInterruptedError",
    "TaskNotFound",
    "TaskNotRetryable",
    "TaskNotWaiting",
    "TaskTimeoutError",
    "TaskbusError",
    "UnknownTaskType",
    "UnstorableValue",
    "UserActionableError",
]


class TaskbusError(Exception):
    """The root of every exception taskbus raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses build their message in __init__; rebuild from the message and
        # the attributes, not by calling __init__ with the message (pickling, say
        # across a worker process, would otherwise garble them).
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    BaseException.__init__(error, *args)
    error.__dict__.update(state)
    return error


class TaskNotFound(TaskbusError, LookupError):
    """Raised when no task has the given id."""

    def __init__(self, task_id: object) -> None:
        self.task_id = task_id
        super().__init__(f"no task with id {task_id!r}")


class TaskNotRetryable(TaskbusError):
    """Raised when `TaskBus.retry` is asked to re-run a task that is not failed or
    cancelled (still queued or running, or completed); `state` is its state."""

    def __init__(self, task_id: str, state: str) -> None:
        self.task_id = task_id
        self.state = state
        super().__init__(
            f"task {task_id!r} is {state}: only a failed or cancelled task can be retried"
        )


class UnknownTaskType(TaskbusError, LookupError):
    """Raised when no task type is registered under the given name."""

    def __init__(self, name: object, known: list[str] | None = None) -> None:
        self.name = name
        hint = f"; registered types: {', '.join(sorted(known))}" if known else ""
        super().__init__(f"no task type named {name!r}{hint}")


class InvalidTaskInput(TaskbusError, ValidationError):
    """Raised when a payload does not validate against its task type's input model.

    It is a pydantic `ValidationError` (and so a `ValueError`): `errors()` gives
    pydantic's details, and the title names the task type.
    """

    @classmethod
    def from_validation_error(cls, task_type: str, error: ValidationError) -> InvalidTaskInput:
        """Re-title pydantic's error with the task type it was raised for."""
        details: list[Any] = [
            {
                "type": PydanticCustomError(item["type"], item["msg"]),
                "loc": item["loc"],
                "input": item["input"],
            }
            for item in error.errors(include_url=False)
        ]
        return cls.from_exception_data(f"input of task type {task_type!r}", details)


class InvalidSubmission(TaskbusError, ValueError):
    """Raised when a submit option (priority, delay, metadata, owner) is out of range."""


class InvalidSchedule(InvalidSubmission):
    """Raised when a schedule cannot work: bad cron text, an unknown time zone, an
    interval of zero or less, both or neither of cron and every, or cron without
    croniter installed."""


class ScheduleNotFound(TaskbusError, LookupError):
    """Raised when no schedule has the given id."""

    def __init__(self, schedule_id: object) -> None:
        self.schedule_id = schedule_id
        super().__init__(f"no schedule with id {schedule_id!r}")


class InvalidTaskDefinition(TaskbusError, ValueError):
    """Raised when a handler or a task option cannot work (bad signature, bad name)."""


class DuplicateTaskType(TaskbusError, ValueError):
    """Raised when a task type name is registered a second time."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"task type {name!r} is already registered")


class InvalidTransition(TaskbusError, RuntimeError):
    """Raised when a task would move between states the transition table forbids."""

    def __init__(self, task_id: str, old: str, new: str) -> None:
        super().__init__(f"task {task_id!r} cannot go from {old} to {new}")


class BusNotRunning(TaskbusError, RuntimeError):
    """Raised when work is submitted to a bus that is not started or is shutting down."""


class SubscriptionOverflow(TaskbusError):
    """Raised when a subscriber falls so far behind that lifecycle events would be lost."""


class StoreError(TaskbusError):
    """Raised when a store cannot open, read or write: a corrupt or foreign file, a
    database locked by another process, a read-only location, a full disk."""


class TaskNotWaiting(TaskbusError, RuntimeError):
    """Raised when `respond` answers a task that is not waiting for input (it never
    asked, was answered already, or has finished); nothing is stored."""

    def __init__(self, task_id: str, state: str) -> None:
        self.task_id = task_id
        self.state = state
        super().__init__(f"task {task_id!r} is not waiting for input (it is {state})")


class InvalidAnswer(TaskbusError, ValueError):
    """Raised when `respond` gets an answer that does not match the question's model or
    JSON schema; nothing is stored. `errors` lists what is wrong (pydantic's form)."""

    def __init__(self, task_id: str, errors: list[dict[str, Any]]) -> None:
        self.task_id = task_id
        self.errors = errors
        details = "; ".join(
            f"{'.'.join(str(part) for part in error.get('loc', ())) or 'answer'}: "
            f"{error.get('msg', '')}"
            for error in errors
        )
        super().__init__(f"the answer does not fit the question of task {task_id!r}: {details}")


class TaskFailedError(TaskbusError):
    """Raised when awaiting the result of a task that ended failed."""

    def __init__(self, snapshot: TaskSnapshot) -> None:
        self.snapshot = snapshot
        error = snapshot.error
        self.error_type = error.error_type if error else ErrorType.FATAL
        self.suggested_action = error.suggested_action if error else None
        message = error.message if error else "unknown error"
        super().__init__(f"task {snapshot.id} ({snapshot.type}) failed: {message}")


class TaskCancelledError(TaskbusError):
    """Raised when awaiting the result of a task that was cancelled.

    `TaskContext.raise_if_cancelled()` raises it inside a handler, too.
    """

    def __init__(self, task_id: str, reason: str | None = None) -> None:
        self.task_id = task_id
        self.reason = reason
        suffix = f": {reason}" if reason else ""
        super().__init__(f"task {task_id} was cancelled{suffix}")


class TaskCancellation(BaseException):
    """Raised inside a handler by `TaskContext.raise_if_cancelled()` once its attempt
    was cancelled or timed out.

    A `BaseException`, as trio's ``Cancelled`` and anyio's cancellation are, so a
    handler's own ``except Exception:`` cannot swallow it by accident. Callers of
    ``result()`` get `TaskCancelledError` instead.
    """

    def __init__(self, task_id: str, reason: str) -> None:
        self.task_id = task_id
        self.reason = reason
        super().__init__(f"task {task_id} must stop: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.task_id, self.reason))


class TaskError(TaskbusError):
    """Raised by a handler to say how its failure should be treated."""

    error_type: ErrorType = ErrorType.FATAL

    def __init__(self, message: str = "", *, suggested_action: str | None = None) -> None:
        self.message = message
        self.suggested_action = suggested_action
        super().__init__(message)


class RetryableError(TaskError):
    """Raised by a handler when another attempt may succeed.

    `retry_after` (seconds) overrides the policy's back-off for the next attempt.
    """

    error_type = ErrorType.RETRYABLE

    def __init__(
        self,
        message: str = "",
        *,
        retry_after: float | None = None,
        suggested_action: str | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, suggested_action=suggested_action)


class FatalError(TaskError):
    """Raised by a handler when no further attempt can succeed."""

    error_type = ErrorType.FATAL


class UserActionableError(TaskError):
    """Raised by a handler when a person must act first; it is not retried."""

    error_type = ErrorType.USER_ACTIONABLE


class TaskTimeoutError(TaskError, TimeoutError):
    """Raised (recorded) when a handler runs past its task type's timeout."""

    error_type = ErrorType.RETRYABLE


class InputTimeout(TaskError, TimeoutError):
    """Raised by ``ctx.ask`` when no answer came within its timeout. Fatal unless the
    task type lists it in ``retry_on`` (a retry asks again)."""

    error_type = ErrorType.FATAL


class TaskInterruptedError(TaskError):
    """Recorded on a task that was running when its process stopped (found at recovery)."""

    error_type = ErrorType.RETRYABLE


class UnstorableValue(StoreError, ValueError):
    """Raised when a value (a task's input, result, metadata or text) cannot be encoded
    for the store: bytes that are not UTF-8, a lone surrogate, an integer too large.

    The message names the task and the field; `task_id` and `field` hold them.
    """

    def __init__(
        self, message: str, *, task_id: str | None = None, field: str | None = None
    ) -> None:
        self.task_id = task_id
        self.field = field
        super().__init__(message)
