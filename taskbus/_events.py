"""The typed events a task publishes over its life.

Events are frozen pydantic models. `EVENT_ADAPTER` (over the `AnyTaskEvent`
union, discriminated by `name`) turns them into JSON for stores, HTTP and UIs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from ._errors import ErrorType

__all__ = [
    "BATCH_EVENT_TYPES",
    "EVENT_ADAPTER",
    "EVENT_TYPES",
    "FINAL_EVENT_NAMES",
    "AnyTaskEvent",
    "BatchEvent",
    "BatchFinished",
    "BatchProgress",
    "CancelRequested",
    "Event",
    "EventName",
    "TaskCancelled",
    "TaskCompleted",
    "TaskEvent",
    "TaskFailed",
    "TaskInputReceived",
    "TaskInputRequired",
    "TaskProgress",
    "TaskQueued",
    "TaskRetrying",
    "TaskStarted",
]

EventName = Literal[
    "task-queued",
    "task-started",
    "task-progress",
    "task-retrying",
    "task-completed",
    "task-failed",
    "task-cancelled",
    "task-input-required",
    "task-input-received",
]


E = TypeVar("E", bound="Event")


class Event(BaseModel):
    """Fields every event has: task events and batch events."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    timestamp: datetime = Field(description="When it happened (UTC).")
    id: str | None = Field(
        default=None,
        description=(
            "The event's id in the bus's event log, set as it is published: increasing "
            "per store, durable on a durable store (resume with `subscribe(after=id)` "
            "or SSE `Last-Event-ID`). None on an event rebuilt for replay."
        ),
    )

    final: ClassVar[bool] = False
    #: The `name` literal of the class, for code that has the class at hand.
    event_name: ClassVar[str] = ""

    @classmethod
    def trusted(cls, **values: Any) -> Self:
        """Build from values the runtime already trusts, skipping validation.

        Every field but `name` must be given; `timestamp` may be epoch seconds.
        For the hot path only: what pydantic's `model_construct` does, minus
        its per-field default handling.
        """
        return build_trusted(cls, values)


class TaskEvent(Event):
    """Fields every task event has."""

    task_id: str = Field(description="Id of the task the event is about.")
    task_type: str = Field(description="Registered type name of the task.")
    owner: str | None = Field(default=None, description="Owner given at submit, if any.")


class BatchEvent(Event):
    """Fields every batch event has (see `TaskBus.submit_batch`)."""

    batch_id: str = Field(description="Id of the batch.")
    total: int = Field(description="Tasks in the batch.")
    completed: int
    failed: int
    cancelled: int
    running: int
    queued: int


def build_trusted(cls: type[E], values: dict[str, Any]) -> E:
    """`Event.trusted` taking the (consumed) values dict itself."""
    name, fields = _TRUSTED[cls]
    values["name"] = name
    values["id"] = None
    stamp = values["timestamp"]
    if stamp.__class__ is not datetime:
        values["timestamp"] = _fromtimestamp(stamp, UTC)
    event = _new(cls)
    _setattr(event, "__dict__", values)
    _setattr(event, "__pydantic_fields_set__", fields)
    _setattr(event, "__pydantic_extra__", None)
    _setattr(event, "__pydantic_private__", None)
    return event


def event_order(event_id: str) -> tuple[int, int]:
    """A sort key for event ids ("41", or a Redis stream's "1700000000000-3");
    raises ValueError for text that is neither."""
    head, dash, tail = event_id.partition("-")
    if _is_count(head) and (not dash or _is_count(tail)):
        return int(head), int(tail or 0)
    raise ValueError(f"not an event id: {event_id!r:.80}")


def _is_count(text: str) -> bool:
    """Decimal digits of an unsigned 64-bit number."""
    return 0 < len(text) <= 20 and text.isascii() and text.isdigit() and int(text) < 2**64


def stamp(event: Event, event_id: str) -> None:
    """Give a not yet published event its log id (events are frozen to everyone else)."""
    event.__dict__["id"] = event_id


_new = object.__new__
_setattr = object.__setattr__
_fromtimestamp = datetime.fromtimestamp


class TaskQueued(TaskEvent):
    """A task was accepted and waits in the queue."""

    name: Literal["task-queued"] = "task-queued"
    priority: int = Field(ge=1, le=10, description="10 is the most urgent.")
    estimated_duration: float | None = Field(description="Seconds, from the definition.")
    metadata: dict[str, Any] = Field(description="Free-form metadata given at submit.")


class TaskStarted(TaskEvent):
    """An attempt of a task began running."""

    name: Literal["task-started"] = "task-started"
    attempt: int = Field(ge=1, description="1 for the first attempt.")
    worker: str | None = Field(
        default=None,
        description="The worker running it (host:pid:token) on a store processes share.",
    )


class TaskProgress(TaskEvent):
    """A (debounced) progress report from a running handler."""

    name: Literal["task-progress"] = "task-progress"
    progress: float = Field(ge=0, le=100, description="Percent done.")
    current: int | None = Field(description="Items done, when counted.")
    total: int | None = Field(description="Items in all, when counted.")
    message: str | None = Field(description="The current operation.")
    estimated_time_remaining: float | None = Field(description="Seconds, once progress moves.")


class TaskRetrying(TaskEvent):
    """An attempt failed with a retryable error; another follows after `delay`."""

    name: Literal["task-retrying"] = "task-retrying"
    attempt: int = Field(description="The attempt that failed.")
    delay: float = Field(ge=0, description="Seconds until the next attempt may start.")
    error: str = Field(description="What went wrong.")
    error_type: ErrorType


class TaskCompleted(TaskEvent):
    """The task finished and returned a result."""

    final: ClassVar[bool] = True
    name: Literal["task-completed"] = "task-completed"
    result: Any = Field(description="What the handler returned.")
    duration: float = Field(description="Seconds the last attempt ran.")


class TaskFailed(TaskEvent):
    """The task ended in failure; no attempt follows."""

    final: ClassVar[bool] = True
    name: Literal["task-failed"] = "task-failed"
    error: str = Field(description="What went wrong.")
    error_type: ErrorType
    suggested_action: str | None = Field(description="What a person can do about it.")
    retryable: bool = Field(description="Whether the error was of a retryable kind.")
    attempt_count: int = Field(description="Attempts made.")

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        *,
        task_id: str,
        task_type: str,
        error_type: ErrorType,
        attempt_count: int,
        owner: str | None = None,
        timestamp: datetime | None = None,
    ) -> TaskFailed:
        """Describe a handler's exception as a validated event."""
        return cls(
            task_id=task_id,
            task_type=task_type,
            owner=owner,
            timestamp=timestamp or datetime.now(UTC),
            error=str(exc) or type(exc).__name__,
            error_type=error_type,
            suggested_action=getattr(exc, "suggested_action", None),
            retryable=error_type is ErrorType.RETRYABLE,
            attempt_count=attempt_count,
        )


class TaskCancelled(TaskEvent):
    """The task was cancelled, queued or running."""

    final: ClassVar[bool] = True
    name: Literal["task-cancelled"] = "task-cancelled"
    reason: str | None = Field(description="Why, as given to cancel().")


class TaskInputRequired(TaskEvent):
    """A handler asked its caller for input (``ctx.ask``): the task waits, holding no
    worker, until `respond` answers or the deadline passes."""

    name: Literal["task-input-required"] = "task-input-required"
    key: str = Field(description="Names the question within the task.")
    prompt: str = Field(description="The question, for a person.")
    json_schema: dict[str, Any] = Field(description="JSON schema an answer must match.")
    deadline: datetime | None = Field(description="When the handler stops waiting.")


class TaskInputReceived(TaskEvent):
    """The question was answered (or its deadline passed): the task is queued again and
    its handler runs from the top, where ``ctx.ask`` returns the answer."""

    name: Literal["task-input-received"] = "task-input-received"
    key: str = Field(description="The question answered.")
    timed_out: bool = Field(default=False, description="No answer came before the deadline.")


class CancelRequested(TaskEvent):
    """A request, through the store's event log, that whichever process runs the
    task cancel it (internal: never delivered to listeners)."""

    name: Literal["cancel-requested"] = "cancel-requested"
    reason: str | None = None


class BatchProgress(BatchEvent):
    """A batch moved (debounced like task progress)."""

    name: Literal["batch-progress"] = "batch-progress"
    progress: float = Field(ge=0, le=100, description="Percent of the batch done.")
    message: str | None = Field(description="The current operation of a running task.")
    estimated_time_remaining: float | None = Field(
        description="Seconds, from the average time of its finished tasks."
    )


class BatchFinished(BatchEvent):
    """Every task of the batch reached a final state."""

    final: ClassVar[bool] = True
    name: Literal["batch-finished"] = "batch-finished"


AnyTaskEvent = Annotated[
    TaskQueued
    | TaskStarted
    | TaskProgress
    | TaskRetrying
    | TaskCompleted
    | TaskFailed
    | TaskCancelled
    | TaskInputRequired
    | TaskInputReceived,
    Field(discriminator="name"),
]

#: Serialise and validate any event: `EVENT_ADAPTER.dump_json(event)`.
EVENT_ADAPTER: TypeAdapter[AnyTaskEvent] = TypeAdapter(AnyTaskEvent)

EVENT_TYPES: dict[str, type[TaskEvent]] = {
    cls.model_fields["name"].default: cls
    for cls in (
        TaskQueued,
        TaskStarted,
        TaskProgress,
        TaskRetrying,
        TaskCompleted,
        TaskFailed,
        TaskCancelled,
        TaskInputRequired,
        TaskInputReceived,
    )
}

# Class attribute reads on pydantic models are slow; the hot path reads this.
# Events are frozen, so pydantic never adds to their fields-set in place (copies
# get their own), and every trusted event of a class can share one.
_TRUSTED: dict[type[Event], tuple[str, set[str]]] = {}
for _name, _cls in EVENT_TYPES.items():
    _cls.event_name = _name
    _TRUSTED[_cls] = (_name, set(_cls.model_fields))

#: Batch events by name; the bus accepts these names too.
BATCH_EVENT_TYPES: dict[str, type[BatchEvent]] = {
    "batch-progress": BatchProgress,
    "batch-finished": BatchFinished,
}
_TRUSTED[CancelRequested] = ("cancel-requested", set(CancelRequested.model_fields))
for _name, _batch_cls in BATCH_EVENT_TYPES.items():
    _batch_cls.event_name = _name
    _TRUSTED[_batch_cls] = (_name, set(_batch_cls.model_fields))

FINAL_EVENT_NAMES: frozenset[str] = frozenset(
    name for name, cls in EVENT_TYPES.items() if cls.final
)
