"""One log line per task transition, on the ``taskbus.lifecycle`` logger.

Queued and started go out at DEBUG; retrying, completed, failed, cancelled and
handed back at INFO. Every line carries ``task_id`` and ``task_type`` as
``extra`` fields, plus what its transition says (``attempt``, ``delay``,
``duration``, ``error_type``, ``exception_type``, ``error``, ``reason``...), so a
structured formatter (`taskbus.JsonFormatter`) writes them as fields.
"""

from __future__ import annotations

import logging
from typing import Any

from ._record import TaskRecord
from ._snapshot import ErrorInfo
from ._states import TaskState

__all__ = [
    "log_final",
    "log_handed_back",
    "log_queued",
    "log_retrying",
    "log_started",
    "log_waiting",
    "logger",
]

logger = logging.getLogger("taskbus.lifecycle")


def _fields(record: TaskRecord, **more: Any) -> dict[str, Any]:
    return {"task_id": record.id, "task_type": record.type, **more}


def log_queued(record: TaskRecord) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "queued %s %s priority=%d owner=%s",
            record.id,
            record.type,
            record.priority,
            record.owner,
            extra=_fields(record, priority=record.priority, owner=record.owner),
        )


def log_started(record: TaskRecord) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        worker = record.worker or "-"
        logger.debug(
            "started %s %s attempt=%d worker=%s",
            record.id,
            record.type,
            record.attempt,
            worker,
            extra=_fields(record, attempt=record.attempt, worker=worker),
        )


def log_retrying(record: TaskRecord, delay: float, info: ErrorInfo) -> None:
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "retrying %s %s after attempt %d in %.3fs: %s",
            record.id,
            record.type,
            record.attempt,
            delay,
            info.message,
            extra=_fields(
                record,
                attempt=record.attempt,
                delay=delay,
                reason=info.message,
                error_type=info.error_type.value,
                exception_type=info.exception_type,
            ),
        )


def log_handed_back(record: TaskRecord, reason: str) -> None:
    logger.info(
        "handed back %s %s to the queue (%s): it runs again on the next start",
        record.id,
        record.type,
        reason,
        extra=_fields(record, reason=reason),
    )


def log_waiting(record: TaskRecord, key: str) -> None:
    logger.info(
        "waiting %s %s for input (%s), its worker free",
        record.id,
        record.type,
        key,
        extra=_fields(record),
    )


def log_final(record: TaskRecord) -> None:
    """Completed with its duration, failed with its error, cancelled with its reason."""
    if not logger.isEnabledFor(logging.INFO):
        return
    finished = record.finished_at or 0.0
    duration = finished - (record.started_at or finished)
    common = _fields(record, attempt=record.attempt, duration=duration)
    state = record.state
    head = f"{state.value} {record.id} {record.type} attempt={record.attempt} in {duration:.3f}s"
    if state is TaskState.FAILED and record.error is not None:
        error = record.error
        kind = f"{error.error_type.value}, {error.exception_type.rpartition('.')[2]}"
        logger.info(
            "%s (%s): %s",
            head,
            kind,
            error.message,
            extra={
                **common,
                "error_type": error.error_type.value,
                "exception_type": error.exception_type,
                "error": error.message,
            },
        )
    elif state is TaskState.CANCELLED:
        reason = record.cancel_reason or "no reason given"
        logger.info("%s: %s", head, reason, extra={**common, "reason": record.cancel_reason})
    else:
        logger.info("%s", head, extra=common)
