"""Task rows as Redis hashes: the codec's row (`_codec`) one field per non-null
column, every value as text (floats by `repr`, so they read back exactly)."""

from __future__ import annotations

from collections.abc import Mapping

from .._record import TaskRecord
from ._base import CorruptRecord
from ._codec import COLUMNS, Row
from ._codec_read import record_from_row

__all__ = ["decode", "fields", "scope_key", "text"]

_INTS = frozenset({"priority", "attempt", "max_attempts", "current", "total"})
_FLOATS = frozenset(
    {
        "created_at",
        "queued_at",
        "not_before",
        "started_at",
        "finished_at",
        "progress",
        "eta",
        "lease_until",
    }
)


def text(value: object) -> str:
    """A column value as the hash holds it."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def fields(row: Row) -> list[str]:
    """``name, value, ...`` for every non-null column of `row`."""
    flat: list[str] = []
    for name, value in zip(COLUMNS, row, strict=True):
        if value is not None:
            flat += (name, text(value))
    return flat


def _value(name: str, raw: str | None) -> object:
    if raw is None:
        return None
    try:
        if name in _INTS:
            return int(raw)
        if name in _FLOATS:
            return float(raw)
    except ValueError:
        return raw  # not what taskbus writes: the codec reports the column
    return raw


def decode(stored: Mapping[str, str], now: float) -> TaskRecord:
    """The record a task hash holds; one that no taskbus wrote reads as its task
    failed with `CorruptRecord` (as SQLite's rows do)."""
    row = tuple(_value(name, stored.get(name)) for name in COLUMNS)
    try:
        return record_from_row(row)
    except CorruptRecord as exc:
        if exc.record is None or "id" in exc.columns:
            raise
        if exc.record.finished_at is None:
            exc.record.finished_at = now
        return exc.record


def scope_key(prefix: str, owner: str | None, task_type: str, key: str) -> str:
    """The key of an idempotency scope's id set (as the scripts' ``scope_key``)."""
    # Lengths in bytes, as Lua counts them.
    owned = "-" if owner is None else f"o{len(owner.encode())}:{owner}"
    return f"{prefix}k:{owned}|{len(task_type.encode())}:{task_type}|{key}"
