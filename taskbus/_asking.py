"""The record side of input required: a task starts waiting, and an answer (or the
deadline) queues it again. Shared by the runtime and every store, so each store
changes a waiting record the same way."""

from __future__ import annotations

from ._input import InputAnswer, InputExchange, InputQuestion
from ._record import TaskRecord
from ._states import TaskState

__all__ = ["answer_waiting", "start_waiting"]


def start_waiting(record: TaskRecord, question: InputQuestion) -> None:
    """Move a running record to waiting, its question pending (progress kept)."""
    record.move(TaskState.WAITING)
    exchange = record.asks if record.asks is not None else InputExchange()
    record.asks = exchange.asking(question)
    record.waiting_for = question.prompt


def answer_waiting(record: TaskRecord, key: str, answer: InputAnswer, now: float) -> bool:
    """Record `answer` to the pending question `key` and queue the task again (the
    attempt is not counted again: the handler's run goes on from the top); False,
    changing nothing, if the record waits for no such question."""
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
