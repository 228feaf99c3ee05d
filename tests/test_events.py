from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from taskbus import (
    EVENT_ADAPTER,
    ErrorType,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskProgress,
    TaskQueued,
    TaskRetrying,
    TaskStarted,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
BASE = {"task_id": "abc", "task_type": "t:x", "owner": "alice", "timestamp": NOW}
SAMPLES = [
    (TaskQueued, {"priority": 5, "estimated_duration": 2.0, "metadata": {"k": 1}}),
    (TaskStarted, {"attempt": 1, "worker": "host:42:abc"}),
    (
        TaskProgress,
        {
            "progress": 40.0,
            "current": 4,
            "total": 10,
            "message": "m",
            "estimated_time_remaining": 3.0,
        },
    ),
    (TaskRetrying, {"attempt": 1, "delay": 0.5, "error": "e", "error_type": ErrorType.RETRYABLE}),
    (TaskCompleted, {"result": {"rows": 3}, "duration": 1.5}),
    (
        TaskFailed,
        {
            "error": "boom",
            "error_type": ErrorType.FATAL,
            "suggested_action": None,
            "retryable": False,
            "attempt_count": 2,
        },
    ),
    (TaskCancelled, {"reason": "user pressed stop"}),
]


@pytest.mark.parametrize(("cls", "fields"), SAMPLES, ids=lambda v: getattr(v, "__name__", ""))
def test_trusted_build_equals_validated_build(cls: Any, fields: dict[str, Any]) -> None:
    validated = cls(**BASE, **fields)
    trusted = cls.trusted(**BASE, **fields)
    assert trusted == validated
    assert trusted.model_dump() == validated.model_dump()


@pytest.mark.parametrize(("cls", "fields"), SAMPLES, ids=lambda v: getattr(v, "__name__", ""))
def test_json_round_trip_through_the_union(cls: Any, fields: dict[str, Any]) -> None:
    event = cls(**BASE, **fields)
    again = EVENT_ADAPTER.validate_json(EVENT_ADAPTER.dump_json(event))
    assert type(again) is cls
    assert again == event


def test_trusted_accepts_epoch_seconds() -> None:
    event = TaskStarted.trusted(
        task_id="a", task_type="t", owner=None, timestamp=NOW.timestamp(), attempt=1
    )
    assert event.timestamp == NOW


def test_events_are_frozen_and_strict() -> None:
    event = TaskStarted(**BASE, attempt=1)
    with pytest.raises(ValidationError):
        event.attempt = 2  # type: ignore[misc]
    with pytest.raises(ValidationError):
        TaskStarted(**BASE, attempt=1, surprise=True)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        TaskProgress(
            **BASE,
            progress=120,
            current=None,
            total=None,
            message=None,
            estimated_time_remaining=None,
        )


def test_final_flags() -> None:
    assert {c.__name__ for c in (TaskCompleted, TaskFailed, TaskCancelled) if c.final} == {
        "TaskCompleted",
        "TaskFailed",
        "TaskCancelled",
    }
    assert not TaskProgress.final and not TaskRetrying.final


def test_failed_from_exception() -> None:
    from taskbus import UserActionableError

    exc = UserActionableError("token expired", suggested_action="log in again")
    event = TaskFailed.from_exception(
        exc, task_id="a", task_type="t", error_type=ErrorType.USER_ACTIONABLE, attempt_count=1
    )
    assert event.suggested_action == "log in again"
    assert event.error == "token expired"
    assert event.retryable is False


def test_copies_of_trusted_events_do_not_share_state() -> None:
    first = TaskStarted.trusted(**BASE, attempt=1)
    second = TaskStarted.trusted(**BASE, attempt=2)
    copy = first.model_copy(update={"attempt": 3})
    assert (first.attempt, second.attempt, copy.attempt) == (1, 2, 3)
    assert first.model_fields_set == set(TaskStarted.model_fields)


def test_task_ids_differ_in_forked_children() -> None:
    import os

    from taskbus._record import new_task_id

    new_task_id()  # the parent holds a pool of pre-drawn ids
    children: list[tuple[int, int]] = []
    for _ in range(3):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            os.close(read)
            os.write(write, "".join(new_task_id() for _ in range(4)).encode())
            os._exit(0)
        os.close(write)
        children.append((pid, read))
    drawn = [new_task_id() for _ in range(4)]
    for pid, read in children:
        with os.fdopen(read) as pipe:
            text = pipe.read()
        os.waitpid(pid, 0)
        drawn.extend(text[i : i + 32] for i in range(0, len(text), 32))
    assert len(drawn) == 16 and len(set(drawn)) == 16
