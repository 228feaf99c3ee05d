"""Records to rows and back, as JSON through pydantic. Never pickle: a store is data."""

from __future__ import annotations

import logging
from typing import Any

from pydantic_core import from_json, to_json

from .._record import TaskRecord
from .._snapshot import ErrorInfo
from .._states import TaskState

__all__ = ["COLUMNS", "Row", "record_from_row", "row_from_record"]

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
)

Row = tuple[Any, ...]


def _unserialisable(value: Any) -> str:
    logger.warning("storing %s as its repr(): it is not JSON-serialisable", type(value).__name__)
    return repr(value)


def _json(value: Any) -> str | None:
    if value is None:
        return None
    return to_json(value, fallback=_unserialisable).decode()


def _load(text: str | None) -> Any:
    return None if text is None else from_json(text)


def row_from_record(record: TaskRecord) -> Row:
    """The record's current values, captured now (the record keeps changing)."""
    error = record.error
    return (
        record.id,
        record.type,
        record.state.value,
        record.priority,
        record.owner,
        record.key,
        _json(record.input),
        _json(record.metadata),
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
        _json(record.result),
        None if error is None else error.model_dump_json(),
        record.cancel_reason,
    )


def record_from_row(row: Row) -> TaskRecord:
    """A record whose input, metadata and result are plain JSON values.

    `TaskRecord.loaded` is set so the runtime re-validates them with the task
    type's models before use.
    """
    values = dict(zip(COLUMNS, row, strict=True))
    record = TaskRecord(
        values["id"],
        values["type"],
        _load(values["input"]),
        values["priority"],
        values["created_at"],
        values["max_attempts"],
        values["owner"],
        _load(values["metadata"]),
        values["key"],
        values["not_before"],
    )
    record.state = TaskState(values["state"])
    record.attempt = values["attempt"]
    record.queued_at = values["queued_at"]
    record.started_at = values["started_at"]
    record.finished_at = values["finished_at"]
    record.progress = values["progress"]
    record.current = values["current"]
    record.total = values["total"]
    record.message = values["message"]
    record.eta = values["eta"]
    record.result = _load(values["result"])
    error = values["error"]
    record.error = None if error is None else ErrorInfo.model_validate_json(error)
    record.cancel_reason = values["cancel_reason"]
    record.loaded = True
    return record
