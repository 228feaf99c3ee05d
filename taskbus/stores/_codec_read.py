"""Rows back to records, checking every column (writing them is `_codec`).

`record_from_row` reads a row as taskbus writes it at full speed; a row no
taskbus writes (an
unknown state, JSON that does not parse, a priority that is not an integer
from 1 to 10, a time that is not a number) raises `CorruptRecord` naming the
task and the columns; its `record` is the salvaged task, failed, with that
error, which is what the store shows for it. Diagnostic columns (message,
cancel_reason, progress, eta, current, total) are repaired quietly instead.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json

from .._errors import ErrorType
from .._input import InputExchange
from .._queue import MAX_PRIORITY, MIN_PRIORITY
from .._record import TaskRecord
from .._snapshot import ErrorInfo
from .._states import TaskState
from ._base import CorruptRecord
from ._codec import COLUMNS, Row, escape_text, is_unicode

__all__ = ["record_from_row"]

_INT64_MAX = 2**63 - 1
_CORRUPT_TYPE = "taskbus.CorruptRecord"  # as the public name presents itself
_STATES = {state.value: state for state in TaskState}


def _as_text(value: Any) -> str:
    """Readable text for a column value (bytes that are not UTF-8 as ``\\xff``)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if not isinstance(value, str):
        return str(value)
    if is_unicode(value):
        return value
    try:  # read with surrogateescape: the bytes SQLite held
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return escape_text(value)


class _Decoder:
    """Reads the columns of one row, noting every one that no taskbus writes."""

    __slots__ = ("problems", "values")

    def __init__(self, row: Row) -> None:
        self.values = dict(zip(COLUMNS, row, strict=True))
        self.problems: dict[str, str] = {}

    def bad(self, column: str, problem: str) -> None:
        self.problems[column] = problem

    def text(self, column: str, *, optional: bool) -> Any:
        value = self.values[column]
        if value is None and optional:
            return None
        if isinstance(value, str) and is_unicode(value):
            return value
        self.bad(column, "not valid UTF-8 text" if isinstance(value, str) else _kind(value))
        return None if value is None else _as_text(value)

    def integer(self, column: str, lowest: int, highest: int, default: int) -> int:
        value = self.values[column]
        if type(value) is int and lowest <= value <= highest:
            return value
        self.bad(column, f"{value!r} is not an integer from {lowest} to {highest}")
        return default

    def time(self, column: str, *, optional: bool) -> float | None:
        value = self.values[column]
        if value is None and optional:
            return None
        if type(value) in (float, int) and math.isfinite(value):
            return float(value)
        self.bad(column, f"{value!r} is not a time")
        return None

    def json(self, column: str) -> Any:
        value = self.values[column]
        if value is None:
            return None
        if isinstance(value, str | bytes):
            try:
                return from_json(value)
            except ValueError as exc:
                self.bad(column, f"not JSON ({exc})")
                return None
        self.bad(column, _kind(value))
        return None

    def state(self) -> TaskState:
        value = self.values["state"]
        try:
            return TaskState(value)
        except ValueError:
            self.bad("state", f"{value!r} is not a task state")
            return TaskState.FAILED

    def asks(self) -> InputExchange | None:
        value = self.values["asks"]
        if value is None:
            return None
        try:
            return InputExchange.model_validate_json(value)
        except (ValidationError, ValueError, TypeError):
            self.bad("asks", "not a stored question and answers")
            return None

    def error(self) -> ErrorInfo | None:
        value = self.values["error"]
        if value is None:
            return None
        try:
            return ErrorInfo.model_validate_json(value)
        except (ValidationError, ValueError, TypeError):
            self.bad("error", "not a stored error")
            return None


def _kind(value: Any) -> str:
    return f"{type(value).__name__} where text belongs"


def _number(value: Any) -> Any:
    """A diagnostic number as the record keeps it, or None."""
    if type(value) in (float, int) and math.isfinite(value):
        return value
    return None


def _count(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _decode_plain(row: Row) -> TaskRecord | None:
    """The record of a row as taskbus writes it, or None if anything looks odd
    (then `_decode` reads it column by column)."""
    (task_id, task_type, state, priority, owner, key, input_, metadata, attempt,
     max_attempts, created_at, queued_at, not_before, started_at, finished_at, progress,
     current, total, message, eta, result, error, reason, worker, lease_until, _,
     waiting_for, asks) = row  # fmt: skip
    task_state = _STATES.get(state)
    if (
        task_state is None
        or _odd_texts(task_id, task_type, owner, key, message, reason, worker, waiting_for)
        or priority.__class__ is not int
        or not MIN_PRIORITY <= priority <= MAX_PRIORITY
        or attempt.__class__ is not int
        or attempt < 0
        or max_attempts.__class__ is not int
        or max_attempts < 1
        or _odd_times(created_at, queued_at, not_before, started_at, finished_at, lease_until)
        or _odd_numbers(progress, current, total, eta)
    ):
        return None
    try:
        values = None if input_ is None else from_json(input_)
        meta = None if metadata is None else from_json(metadata)
        outcome = None if result is None else from_json(result)
        info = None if error is None else ErrorInfo.model_validate_json(error)
        exchange = None if asks is None else InputExchange.model_validate_json(asks)
    except (ValueError, TypeError):  # ValidationError is a ValueError
        return None
    if meta is not None and meta.__class__ is not dict:
        return None
    record = TaskRecord(
        task_id, task_type, values, priority, created_at, max_attempts, owner, meta, key, not_before
    )
    record.state = task_state
    record.attempt = attempt
    record.queued_at = queued_at
    record.started_at = started_at
    record.finished_at = finished_at
    record.progress = progress
    record.current = current
    record.total = total
    record.message = message
    record.eta = eta
    record.result = outcome
    record.error = info
    record.cancel_reason = reason
    record.waiting_for = waiting_for
    record.asks = exchange
    record.worker = worker
    record.lease_until = lease_until
    record.loaded = True
    return record


def _odd_texts(task_id: Any, task_type: Any, *optional: Any) -> bool:
    if task_id.__class__ is not str or task_type.__class__ is not str:
        return True
    if not (task_id.isascii() and task_type.isascii()) and not (
        is_unicode(task_id) and is_unicode(task_type)
    ):
        return True
    for text in optional:
        if text is not None and (text.__class__ is not str or not is_unicode(text)):
            return True
    return False


def _odd_times(created_at: Any, queued_at: Any, *optional: Any) -> bool:
    if created_at.__class__ is not float or queued_at.__class__ is not float:
        return True
    if not (math.isfinite(created_at) and math.isfinite(queued_at)):
        return True
    for stamp in optional:
        if stamp is not None and (stamp.__class__ is not float or not math.isfinite(stamp)):
            return True
    return False


def _odd_numbers(progress: Any, current: Any, total: Any, eta: Any) -> bool:
    for number in (progress, eta):
        if number is not None and (number.__class__ is not float or not math.isfinite(number)):
            return True
    return any(count is not None and count.__class__ is not int for count in (current, total))


def _decode(row: Row) -> tuple[TaskRecord, dict[str, str]]:
    read = _Decoder(row)
    values = read.values
    task_id = read.text("id", optional=False)
    metadata = read.json("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        read.bad("metadata", "not a JSON object")
        metadata = None
    record = TaskRecord(
        "" if task_id is None else task_id,
        read.text("type", optional=False) or "",
        read.json("input"),
        read.integer("priority", MIN_PRIORITY, MAX_PRIORITY, 5),
        read.time("created_at", optional=False) or 0.0,
        read.integer("max_attempts", 1, _INT64_MAX, 1),
        read.text("owner", optional=True),
        metadata,
        read.text("key", optional=True),
        read.time("not_before", optional=True),
    )
    record.state = read.state()
    record.attempt = read.integer("attempt", 0, _INT64_MAX, 0)
    queued_at = read.time("queued_at", optional=False)
    record.queued_at = record.created_at if queued_at is None else queued_at
    record.started_at = read.time("started_at", optional=True)
    record.finished_at = read.time("finished_at", optional=True)
    record.progress = _number(values["progress"])
    record.current = _count(values["current"])
    record.total = _count(values["total"])
    record.message = None if values["message"] is None else _as_text(values["message"])
    record.eta = _number(values["eta"])
    record.result = read.json("result")
    record.error = read.error()
    reason = values["cancel_reason"]
    record.cancel_reason = None if reason is None else _as_text(reason)
    waiting_for = values["waiting_for"]
    record.waiting_for = None if waiting_for is None else _as_text(waiting_for)
    record.asks = read.asks()
    record.worker = read.text("worker", optional=True)
    record.lease_until = read.time("lease_until", optional=True)
    record.loaded = True
    return record, read.problems


def record_from_row(row: Row) -> TaskRecord:
    """A record whose input, metadata and result are plain JSON values.

    `TaskRecord.loaded` is set so the runtime re-validates them with the task
    type's models before use. Raises `CorruptRecord` (its `record` salvaged,
    failed) for a row no taskbus writes.
    """
    record = _decode_plain(row)
    if record is not None:
        return record
    record, problems = _decode(row)
    if problems:
        error = CorruptRecord(record.id, problems)
        error.record = _failed(record, error)
        raise error
    return record


def _failed(record: TaskRecord, error: CorruptRecord) -> TaskRecord:
    record.state = TaskState.FAILED
    record.result = None
    record.error = ErrorInfo(
        message=escape_text(str(error)),
        error_type=ErrorType.FATAL,
        exception_type=_CORRUPT_TYPE,
        suggested_action="The row was changed outside taskbus; submit the task again.",
    )
    return record
