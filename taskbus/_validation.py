"""Checks of submit and list arguments that pydantic models do not cover cheaply."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import JsonValue, TypeAdapter, ValidationError

from ._errors import InvalidSubmission
from ._queue import MAX_PRIORITY, MIN_PRIORITY

__all__ = ["check_delay", "check_metadata", "check_priority", "to_epoch"]

_METADATA = TypeAdapter(dict[str, JsonValue])


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
    if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
        raise InvalidSubmission(f"delay must be a non-negative number of seconds, not {delay!r}")
    return float(delay)


def check_metadata(metadata: Any) -> dict[str, Any]:
    try:
        return _METADATA.validate_python(metadata)
    except ValidationError as exc:
        raise InvalidSubmission(f"metadata must be a JSON object: {exc}") from None
