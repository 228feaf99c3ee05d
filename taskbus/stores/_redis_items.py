"""Items of the Redis store's `WRITE` script, built from records and events."""

from __future__ import annotations

import itertools
import json
import os
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .._errors import UnstorableValue
from .._events import Event
from .._record import TaskRecord
from ._codec import COLUMNS, Row, row_from_record, unstorable_row
from ._event_codec import event_text
from ._redis_rows import fields, text

__all__ = [
    "ANY",
    "NONE",
    "hash_of",
    "item",
    "progress_fields",
    "storable",
    "token",
    "without_lease",
]

#: A condition of a write item: whatever is stored; nothing stored.
ANY = "*"
NONE = ""
_PROGRESS = ("progress", "current", "total", "message", "eta")
_AT = {name: index for index, name in enumerate(COLUMNS)}


def _logged(events: Iterable[Event | None]) -> list[str]:
    """``[name, body, ...]`` of the events to log (None: nothing)."""
    out: list[str] = []
    for event in events:
        if event is not None:
            out += (event.name, event_text(event))
    return out


def item(
    task_id: str,
    *,
    state: str = ANY,
    worker: str = ANY,
    lease: str = ANY,
    row: Row | None = None,
    set_: Mapping[str, Any] | None = None,
    events: Iterable[Event | None] = (),
    scope: str = "",
    same: tuple[str, str] | None = None,
) -> str:
    """One item of the `WRITE` script, as JSON: a whole row, or the columns in `set_`
    (None: deleted), on the conditions given (with `same`, a field must still hold
    the text the caller read)."""
    to_delete: list[str] = []
    written_by = ""
    if row is not None:
        mode, to_set, written_by = "row", fields(row), token()
    else:
        mode, to_set = "patch", []
        for name, value in (set_ or {}).items():
            if value is None:
                to_delete.append(name)
            else:
                to_set += (name, text(value))
    item = [task_id, state, worker, lease, mode, written_by, to_set, to_delete]
    item += [_logged(events), scope]
    if same is not None:
        item.append(list(same))
    return json.dumps(item, ensure_ascii=False, separators=(",", ":"))


_TOKEN_BASE = secrets.token_hex(6)
_token_numbers = itertools.count()


def token() -> str:
    """A call token, unique across processes (see `WRITE` and `ACQUIRE`)."""
    return f"{_TOKEN_BASE}.{os.getpid()}.{next(_token_numbers)}"


def storable(record: TaskRecord) -> Row:
    """The record's row; a value that cannot be stored fails the task."""
    try:
        return row_from_record(record)
    except UnstorableValue as exc:
        return unstorable_row(record, exc, time.time())


def without_lease(row: Row) -> Row:
    """`row` with its worker and lease end dropped."""
    values = list(row)
    values[_AT["worker"]] = values[_AT["lease_until"]] = None
    return tuple(values)


def hash_of(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def progress_fields(record: TaskRecord) -> dict[str, Any]:
    """The progress columns of `record`, as stored (None: cleared)."""
    row = storable(record)
    return {name: row[_AT[name]] for name in _PROGRESS}
