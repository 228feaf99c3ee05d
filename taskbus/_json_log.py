"""`JsonFormatter`: one JSON object per log line, with a record's extra fields."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

__all__ = ["JsonFormatter"]

#: Attributes every `logging.LogRecord` has; anything else came from ``extra``.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


class JsonFormatter(logging.Formatter):
    """Format a log record as one line of JSON.

    The object has ``time`` (ISO 8601, UTC), ``level``, ``logger`` and
    ``message``, then every ``extra`` field of the record (taskbus's transition
    lines carry ``task_id``, ``task_type`` and, as they apply, ``attempt``,
    ``duration``, ``delay``, ``reason``, ``error_type``, ``exception_type``,
    ``error``), then ``exception`` when the record has one. A value JSON cannot
    hold is written as its ``str()``.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and name not in data:
                data[name] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return json.dumps(data, default=str, ensure_ascii=False)
