"""Checks of the arguments callers pass, at the call that brings them.

Everything a caller hands the runtime (submit, cancel, list, progress) is
checked here for type and range, so a bad value raises at once with a message
naming the argument, and nothing reaches a store that it could not encode: text
must be valid Unicode without lone surrogates, integers must fit in 64 bits,
durations must be finite.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from pydantic import JsonValue, TypeAdapter, ValidationError

from ._errors import InvalidSubmission
from ._events import event_order
from ._queue import MAX_PRIORITY, MIN_PRIORITY

__all__ = [
    "MAX_DELAY",
    "MAX_INT",
    "MAX_TEXT",
    "check_count",
    "check_delay",
    "check_metadata",
    "check_priority",
    "check_text",
    "delay_until",
    "is_unicode",
    "to_epoch",
]

_METADATA = TypeAdapter(dict[str, JsonValue])

#: The longest delay a submit accepts: 100 years, in seconds.
MAX_DELAY = 100 * 365.25 * 86_400
#: The largest integer a store keeps (SQLite and Redis hold signed 64-bit integers).
MAX_INT = 2**63 - 1
#: The longest owner, key, cancel reason or progress message, in characters.
MAX_TEXT = 4096


def to_epoch(moment: datetime | float | None) -> float | None:
    return moment.timestamp() if isinstance(moment, datetime) else moment


def check_priority(priority: Any) -> int:
    if type(priority) is not int or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidSubmission(
            f"priority must be an int from {MIN_PRIORITY} to {MAX_PRIORITY} "
            f"(10 most urgent), not {priority!r}"
        )
    return priority


def check_delay(delay: Any) -> float:
    if (
        not isinstance(delay, int | float)
        or isinstance(delay, bool)
        or not math.isfinite(delay)
        or not 0 <= delay <= MAX_DELAY
    ):
        raise InvalidSubmission(
            f"delay must be a finite number of seconds from 0 to {MAX_DELAY:.0f} "
            f"(100 years), not {delay!r}"
        )
    return float(delay)


def delay_until(run_at: Any, now: float, delay: float | None) -> float:
    """The delay, in seconds from `now`, until `run_at`, a timezone-aware datetime
    (0 for a time already past); raises `InvalidSubmission` for anything else, or
    beside a `delay`."""
    if delay is not None:
        raise InvalidSubmission("give delay or run_at, not both")
    if not isinstance(run_at, datetime):
        raise InvalidSubmission(f"run_at must be a datetime, not {run_at!r}")
    if run_at.tzinfo is None or run_at.utcoffset() is None:
        raise InvalidSubmission(
            f"run_at must be timezone-aware (datetime(..., tzinfo=...) or "
            f"datetime.now(UTC) + ...), not the naive {run_at.isoformat()}"
        )
    wait = max(0.0, run_at.timestamp() - now)
    if wait > MAX_DELAY:
        raise InvalidSubmission(f"run_at must be within 100 years, not {run_at.isoformat()}")
    return wait


def is_unicode(text: str) -> bool:
    """Whether `text` encodes to UTF-8 (holds no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: Any, name: str, error: type[ValueError] = InvalidSubmission) -> str:
    """`value` as a storable string: a str, at most `MAX_TEXT` characters, valid UTF-8."""
    if not isinstance(value, str):
        raise error(f"{name} must be a string, not {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise error(f"{name} must be at most {MAX_TEXT} characters, not {len(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise error(
            f"{name} must be valid Unicode text: it holds a lone surrogate "
            f"({value[exc.start : exc.end]!r} at {exc.start})"
        ) from None
    return value


def check_count(value: Any, name: str) -> int:
    """A progress count: an int from 0 to `MAX_INT`."""
    if type(value) is not int or not 0 <= value <= MAX_INT:
        raise ValueError(f"{name} must be an int from 0 to 2**63-1, not {value!r}")
    return value


def check_metadata(metadata: Any) -> dict[str, Any]:
    try:
        checked = _METADATA.validate_python(metadata)
        # JSON has no NaN or infinities, and UTF-8 no lone surrogates.
        json.dumps(checked, allow_nan=False, ensure_ascii=False).encode()
    except ValidationError as exc:
        raise InvalidSubmission(f"metadata must be a JSON object: {exc}") from None
    except ValueError as exc:  # UnicodeEncodeError is one
        raise InvalidSubmission(f"metadata cannot be stored as JSON: {exc}") from None
    return checked


def check_event_id(event_id: object) -> str:
    """An `Event.id` as given to ``subscribe(after=)``; raises `InvalidSubmission`."""
    if not isinstance(event_id, str) or len(event_id) > 64:
        raise InvalidSubmission(f"after must be an event id (text), not {event_id!r:.80}")
    try:
        event_order(event_id)
    except ValueError:
        raise InvalidSubmission(f"after is not an event id: {event_id!r:.80}") from None
    return event_id
