"""Events to JSON text for a store's event log, and back.

Encoding never raises: a value pydantic cannot write (a result whose type JSON
does not know, text with a lone surrogate) is written as its escaped repr, so
one odd event can never stop a commit. Reading validates the text into the
event class its ``name`` says.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from pydantic_core import to_json

from .._events import BATCH_EVENT_TYPES, EVENT_TYPES, CancelRequested, Event, stamp
from ._codec import escape_text

__all__ = ["event_from_text", "event_text"]

_CLASSES: dict[str, type[Event]] = {
    **EVENT_TYPES,
    **BATCH_EVENT_TYPES,
    "cancel-requested": CancelRequested,
}
_JSON_ERRORS = (ValueError, TypeError, RecursionError)


def _fallback(value: Any) -> str:
    return escape_text(repr(value))


def event_text(event: Event) -> str:
    """`event` as JSON text (without its id: the log's row holds that)."""
    try:
        return to_json(event, fallback=_fallback, exclude={"id"}).decode()
    except _JSON_ERRORS:
        return _field_by_field(event)


def _field_by_field(event: Event) -> str:
    fields: dict[str, Any] = {}
    for name in type(event).model_fields:
        if name == "id":
            continue
        value = getattr(event, name)
        try:
            fields[name] = json.loads(to_json(value, fallback=_fallback))
        except _JSON_ERRORS:
            fields[name] = _fallback(value)
    return json.dumps(fields, ensure_ascii=False, default=str)


def event_from_text(event_id: str, name: str, text: str) -> Event | None:
    """The logged event, numbered `event_id`; None if it no longer reads as one."""
    cls = _CLASSES.get(name)
    if cls is None:
        return None
    try:
        event = cls.model_validate_json(text)
    except ValidationError:
        return None
    stamp(event, event_id)
    return event
