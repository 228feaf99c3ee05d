"""Records to rows, as JSON through pydantic. Never pickle: a store is data.

Writing never lets a value reach SQLite that it cannot take. Field by field:

- **identity text** (id, type, owner, key, worker): text that is not valid Unicode (a
  lone surrogate such as ``"k\\ud800"``) is refused with `UnstorableValue`
  naming the task and the field: escaping it would change whose task it is.
- **JSON values** (input, metadata, result, asks): must become UTF-8 JSON; bytes that
  are not UTF-8 and strings with lone surrogates are refused (`UnstorableValue`).
  A type JSON does not know is stored as its ``repr()``, with a warning.
  `check_storable` applies the same rules to one value.
- **diagnostic text** (message, cancel_reason, waiting_for, and the error's message,
  traceback, suggested action and exception type): stored with what UTF-8
  cannot hold escaped (``"\\ud800"`` becomes the six characters ``\\ud800``);
  it is for people to read, and must never stop a task from being recorded.
- **integers**: priority, attempt and max_attempts outside SQLite's 64 bits are
  refused; progress counters (current, total) that large are stored as REAL,
  approximately.
- **batch_id**: ``metadata["batch_id"]`` when it is text, a copy that indexes a
  batch's tasks (never read back: the metadata holds the truth).
- **floats**: created_at and queued_at must be finite; a non-finite optional
  time (lease_until among them), progress or eta is stored as NULL.

`row_from_record` refuses (strict); `unstorable_row` is the last resort for a
record already running, whose change must be recorded somehow: the task as
failed with the `UnstorableValue`, every value made storable. Reading rows back
is `_codec_read`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from pydantic_core import to_json

from .._errors import ErrorType, UnstorableValue
from .._queue import MAX_PRIORITY, MIN_PRIORITY
from .._record import TaskRecord
from .._snapshot import ErrorInfo
from .._states import TaskState
from .._validation import is_unicode
from ._base import CorruptRecord, batch_of

__all__ = [
    "COLUMNS",
    "Row",
    "check_storable",
    "escape_text",
    "is_unicode",
    "row_from_record",
    "salvage_row",
    "unstorable_column",
    "unstorable_row",
]

logger = logging.getLogger("taskbus.stores")

#: Column order of a row, shared by every SQL statement of the SQLite store.
COLUMNS: tuple[str, ...] = (
    "id",
    "type",
    "state",
    "priority",
    "owner",
    "key",
    "input",
    "metadata",
    "attempt",
    "max_attempts",
    "created_at",
    "queued_at",
    "not_before",
    "started_at",
    "finished_at",
    "progress",
    "current",
    "total",
    "message",
    "eta",
    "result",
    "error",
    "cancel_reason",
    "worker",
    "lease_until",
    "batch_id",
    "waiting_for",
    "asks",
)

Row = tuple[Any, ...]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_JSON_ERRORS = (ValueError, TypeError, RecursionError)  # PydanticSerializationError is a ValueError
_UNSTORABLE_TYPE = "taskbus.UnstorableValue"  # as the public name presents itself


# -- values ---------------------------------------------------------------------------


def escape_text(text: str) -> str:
    """`text` with what UTF-8 cannot hold written as backslash escapes."""
    return text if is_unicode(text) else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _unserialisable(value: Any) -> str:
    logger.warning("storing %s as its repr(): it is not JSON-serialisable", type(value).__name__)
    return repr(value)


def _encode_json(value: Any, fallback: Callable[[Any], Any] = _unserialisable) -> str:
    return to_json(value, fallback=fallback).decode()


def check_storable(value: Any, what: str) -> None:
    """Raise `UnstorableValue` if `value` cannot become the JSON a store writes.

    The same rules as the codec (a type JSON does not know goes as its repr());
    `what` starts the message, e.g. ``"result of task 3f2a... (reports:build)"``.
    """
    if value is None:
        return
    try:
        _encode_json(value, repr)
    except _JSON_ERRORS as exc:
        raise UnstorableValue(f"{what} cannot be stored: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).removeprefix("Error serializing to JSON: ")
    return escape_text(text) or type(exc).__name__


class _Encoder:
    """Turns one record into a row; strict refuses, lenient makes values storable."""

    __slots__ = ("record", "strict")

    def __init__(self, record: TaskRecord, *, strict: bool) -> None:
        self.record = record
        self.strict = strict

    def refuse(self, field: str, why: str, cause: BaseException | None = None) -> None:
        record = self.record
        error = UnstorableValue(
            f"task {escape_text(str(record.id))} ({escape_text(str(record.type))}): its {field} "
            f"cannot be stored: {why}",
            task_id=record.id,
            field=field,
        )
        if self.strict:
            raise error from cause
        logger.error("%s; stored without it", error)

    def identity(self, field: str, value: Any) -> Any:
        if isinstance(value, str) and not is_unicode(value):
            self.refuse(field, "it is not valid Unicode (a lone surrogate)")
            return escape_text(value)
        return value

    def json(self, field: str, value: Any) -> str | None:
        if value is None:
            return None
        try:
            return _encode_json(value)
        except _JSON_ERRORS as exc:
            self.refuse(field, _reason(exc), exc)
            return None

    def integer(self, field: str, value: Any, lowest: int, highest: int) -> Any:
        if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
            self.refuse(field, f"{value} does not fit in 64 bits")
            return min(max(value, lowest), highest)
        return value

    def time(self, field: str, value: Any, *, required: bool) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            if required:
                self.refuse(field, f"{value} is not a finite time")
                return 0.0
            return None
        return value


def _counter(value: Any) -> Any:
    """A progress counter SQLite can hold (REAL beyond 64 bits: approximate)."""
    if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
        return float(value)
    return _finite(value)


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _text(value: Any) -> Any:
    return escape_text(value) if isinstance(value, str) else value


def _error_json(error: ErrorInfo | None) -> str | None:
    if error is None:
        return None
    try:
        return error.model_dump_json()
    except _JSON_ERRORS:  # text with lone surrogates: escape it, it is for people
        fields = {name: _text(value) for name, value in error.model_dump(mode="json").items()}
        return _encode_json(fields)


def _encode(record: TaskRecord, encoder: _Encoder) -> Row:
    return (
        encoder.identity("id", record.id),
        encoder.identity("type", record.type),
        record.state.value,
        encoder.integer("priority", record.priority, MIN_PRIORITY, MAX_PRIORITY),
        encoder.identity("owner", record.owner),
        encoder.identity("key", record.key),
        encoder.json("input", record.input),
        encoder.json("metadata", record.metadata),
        encoder.integer("attempt", record.attempt, 0, _INT64_MAX),
        encoder.integer("max_attempts", record.max_attempts, 1, _INT64_MAX),
        encoder.time("created_at", record.created_at, required=True),
        encoder.time("queued_at", record.queued_at, required=True),
        _finite(record.not_before),
        _finite(record.started_at),
        _finite(record.finished_at),
        _finite(record.progress),
        _counter(record.current),
        _counter(record.total),
        _text(record.message),
        _finite(record.eta),
        encoder.json("result", record.result),
        _error_json(record.error),
        _text(record.cancel_reason),
        encoder.identity("worker", record.worker),
        _finite(record.lease_until),
        _text(batch_of(record)),
        _text(record.waiting_for),
        encoder.json("asks", None if record.asks is None else record.asks.model_dump(mode="json")),
    )


def row_from_record(record: TaskRecord) -> Row:
    """The record's current values, captured now (the record keeps changing).

    Raises `UnstorableValue` naming the task and the field for a value the store
    cannot hold (see the module docstring); diagnostic text is escaped instead.
    """
    # The common case first, checked in one pass; anything odd takes the careful way.
    value = record.input  # a compact input is rebuilt on each read: once is enough
    try:
        row = (
            record.id,
            record.type,
            record.state.value,
            record.priority,
            record.owner,
            record.key,
            None if value is None else _encode_json(value),
            None if record.metadata is None else _encode_json(record.metadata),
            record.attempt,
            record.max_attempts,
            record.created_at,
            record.queued_at,
            record.not_before,
            record.started_at,
            record.finished_at,
            record.progress,
            record.current,
            record.total,
            record.message,
            record.eta,
            None if record.result is None else _encode_json(record.result),
            None if record.error is None else record.error.model_dump_json(),
            record.cancel_reason,
            record.worker,
            record.lease_until,
            batch_of(record),
            record.waiting_for,
            None if record.asks is None else record.asks.model_dump_json(),
        )
    except _JSON_ERRORS:
        return _encode(record, _Encoder(record, strict=True))
    if _odd(row):
        return _encode(record, _Encoder(record, strict=True))
    return row


def _odd(row: Row) -> bool:
    """Whether a value of `row` may need the careful encoder (non-ASCII text, an
    integer beyond 64 bits, a float that is not finite)."""
    (id_, type_, _, priority, owner, key, _, _, attempt, max_attempts, created_at, queued_at,
     not_before, started_at, finished_at, progress, current, total, message, eta, _, _,
     reason, worker, lease_until, batch_id, waiting_for, _) = row  # fmt: skip
    for text in (id_, type_, owner, key, message, reason, worker, batch_id, waiting_for):
        if text.__class__ is str and not text.isascii():
            return True
    for number in (priority, attempt, max_attempts, current, total):
        if number.__class__ is int and not _INT64_MIN <= number <= _INT64_MAX:
            return True
    stamps = (
        created_at,
        queued_at,
        not_before,
        started_at,
        finished_at,
        progress,
        eta,
        lease_until,
    )
    for stamp in stamps:
        if stamp.__class__ is float and not math.isfinite(stamp):
            return True
    return False


def unstorable_row(record: TaskRecord, error: UnstorableValue, now: float) -> Row:
    """The row of `record` failed with `error`, every value made storable.

    For a change to a task that is already stored (started, finished) whose new
    values cannot be written: the task must still end, with the reason.
    """
    row = list(_encode(record, _Encoder(record, strict=False)))
    values = dict(zip(COLUMNS, row, strict=True))
    values["state"] = TaskState.FAILED.value
    values["finished_at"] = values["finished_at"] or now
    values["error"] = _error_json(
        ErrorInfo(
            message=str(error),
            error_type=ErrorType.FATAL,
            exception_type=_UNSTORABLE_TYPE,
        )
    )
    values["result"] = None
    return tuple(values[name] for name in COLUMNS)


def unstorable_column(row: Row) -> str | None:
    """The first column of `row` SQLite cannot bind: text that is not valid Unicode,
    an integer beyond 64 bits (for an error message; None if none is)."""
    for name, value in zip(COLUMNS, row, strict=True):
        if isinstance(value, str) and not is_unicode(value):
            return name
        if isinstance(value, int) and not _INT64_MIN <= value <= _INT64_MAX:
            return name
    return None


def salvage_row(error: CorruptRecord, now: float) -> Row | None:
    """The row that settles a corrupt task as failed, or None if it has no usable id."""
    record = error.record
    if record is None or "id" in error.columns or not record.id:
        return None
    if record.finished_at is None:
        record.finished_at = now
    return _encode(record, _Encoder(record, strict=False))
