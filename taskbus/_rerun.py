"""What `TaskBus.retry` submits again: a failed or cancelled task's type, input,
owner, priority and metadata, linked to it by ``metadata["retry_of"]``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter
from pydantic_core import PydanticSerializationError

from ._dependencies import AFTER_KEY, POLICY_KEY
from ._errors import InvalidTaskInput, TaskNotRetryable
from ._snapshot import RETRY_OF, TaskSnapshot
from ._states import TaskState
from ._tracing import TRACE_KEYS

if TYPE_CHECKING:
    from ._registry import TaskDefinition

__all__ = ["RETRYABLE_STATES", "check_retryable", "rerun_input", "rerun_metadata"]

#: The states a task can be re-run from.
RETRYABLE_STATES = frozenset({TaskState.FAILED, TaskState.CANCELLED})

_JSON = TypeAdapter(Any)


def check_retryable(snapshot: TaskSnapshot) -> None:
    """Raise `TaskNotRetryable` unless the task is failed or cancelled."""
    if snapshot.state not in RETRYABLE_STATES:
        raise TaskNotRetryable(snapshot.id, snapshot.state.value)


def rerun_input(definition: TaskDefinition[Any, Any], snapshot: TaskSnapshot) -> Any:
    """The old task's input, validated against the type's current input model;
    raises `InvalidTaskInput` if it no longer fits.

    A store hands back JSON; the memory store, the validated value itself, which is
    tried as it is, then as JSON (as a store's would be: the model changed since).
    """
    value = snapshot.input
    try:
        return definition.validate_input(value)
    except InvalidTaskInput as exc:
        try:
            data = _JSON.dump_python(value, mode="json")
        except PydanticSerializationError:
            raise exc from None
        if data == value:
            raise
    return definition.validate_input(data)


#: Metadata a re-run does not inherit: a batch's tasks are fixed when it is
#: submitted, a re-run of a child runs on its own (its parents have ended), and
#: a re-run belongs to the trace of the call that asked for it.
_NOT_INHERITED = frozenset({"batch_id", AFTER_KEY, POLICY_KEY, *TRACE_KEYS})


def rerun_metadata(snapshot: TaskSnapshot) -> dict[str, Any]:
    """The old task's metadata, naming it under ``retry_of``; without its batch
    and its parents (see `_NOT_INHERITED`)."""
    metadata = {
        name: value for name, value in snapshot.metadata.items() if name not in _NOT_INHERITED
    }
    metadata[RETRY_OF] = snapshot.id
    return metadata
