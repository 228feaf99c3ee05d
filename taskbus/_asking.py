"""The record side of input required: a task starts waiting, and an answer (or the
deadline) queues it again. Shared by the runtime and every store, so each store
changes a waiting record the same way."""

from __future__ import annotations

from datetime import UTC, datetime

from ._events import TaskInputReceived, TaskInputRequired, build_trusted
from ._input import InputAnswer, InputExchange, InputQuestion
from ._record import TaskRecord
from ._states import TaskState

__all__ = ["answer_waiting", "input_received_event", "input_required_event", "start_waiting"]


def start_waiting(record: TaskRecord, question: InputQuestion) -> None:
    """Move a running record to waiting, its question pending (progress kept)."""
    record.move(TaskState.WAITING)
    exchange = record.asks if record.asks is not None else InputExchange()
    record.asks = exchange.asking(question)
    record.waiting_for = question.prompt


def answer_waiting(record: TaskRecord, key: str, answer: InputAnswer, now: float) -> bool:
    """Record `answer` to the pending question `key` and queue the task again (the
    attempt is not counted again: the handler's run goes on from the top); False,
    changing nothing, if the record waits for no such question.

    What a store's `TaskStore.answer_input` does to the stored record, in one step.
    """
    asks = record.asks
    if (
        record.state is not TaskState.WAITING
        or asks is None
        or asks.pending is None
        or asks.pending.key != key
    ):
        return False
    record.move(TaskState.QUEUED)
    record.asks = asks.answered(key, answer)
    record.queued_at = now
    record.not_before = record.waiting_for = None
    record.attempt = max(record.attempt - 1, 0)
    return True


def input_required_event(record: TaskRecord, question: InputQuestion) -> TaskInputRequired:
    """The event of a task that started waiting for input."""
    return build_trusted(
        TaskInputRequired,
        {
            "task_id": record.id,
            "task_type": record.type,
            "owner": record.owner,
            "timestamp": question.asked_at,
            "key": question.key,
            "prompt": question.prompt,
            "json_schema": question.json_schema,
            "deadline": None
            if question.deadline is None
            else datetime.fromtimestamp(question.deadline, UTC),
        },
    )


def input_received_event(record: TaskRecord, key: str, *, timed_out: bool) -> TaskInputReceived:
    """The event of a waiting task answered (or out of time) and queued again."""
    return build_trusted(
        TaskInputReceived,
        {
            "task_id": record.id,
            "task_type": record.type,
            "owner": record.owner,
            "timestamp": record.queued_at,
            "key": key,
            "timed_out": timed_out,
        },
    )
