"""What every store that holds claims shares: the checks of `acquire`'s and
`reap_expired`'s arguments, and what reaping makes of a task whose worker stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import TypeGuard

from .._errors import ErrorType
from .._record import TaskRecord
from .._snapshot import ErrorInfo
from .._states import TaskState
from ._codec import escape_text, is_unicode

__all__ = [
    "ClaimArgs",
    "check_ids",
    "check_lease",
    "check_now",
    "check_reason",
    "check_worker",
    "expiry_error",
    "lease_end",
    "settle_expired",
]

_INTERRUPTED_TYPE = "taskbus.TaskInterruptedError"  # as the public name presents itself


# -- argument checks ------------------------------------------------------------------


def _finite(value: object) -> TypeGuard[float]:
    """Whether `value` is a finite int or float (not a bool)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_worker(worker_id: object) -> str:
    if not isinstance(worker_id, str) or not worker_id or not is_unicode(worker_id):
        raise ValueError(f"worker_id must be non-empty text, not {worker_id!r}")
    return worker_id


def check_lease(lease: object) -> float:
    if not (_finite(lease) and lease > 0):
        raise ValueError(f"lease must be a positive, finite number of seconds, not {lease!r}")
    return float(lease)


def check_now(now: object) -> float:
    """`now` as epoch seconds (None: the current time)."""
    if now is None:
        return time.time()
    if not _finite(now):
        raise ValueError(f"now must be a finite time in epoch seconds, not {now!r}")
    return float(now)


def check_ids(ids: Collection[str]) -> list[str]:
    if isinstance(ids, str):
        raise TypeError(f"ids must be a collection of task ids, not one string: {ids!r}")
    return list(dict.fromkeys(ids))


def check_reason(reason: object) -> str | None:
    if reason is not None and not isinstance(reason, str):
        raise ValueError(f"a cancel reason is text or None, not {reason!r}")
    return reason


def lease_end(now: float, lease: object) -> float:
    """``now + lease``, the lease checked."""
    until = now + check_lease(lease)
    if not math.isfinite(until):
        raise ValueError(f"lease {lease!r} from {now!r} does not end at a finite time")
    return until


def expiry_error(record: TaskRecord, *, retry: bool) -> ErrorInfo:
    """Why a leased task stopped: its worker did not renew the lease in time."""
    expired = "an unknown time"
    if record.lease_until is not None:
        try:
            stamp = datetime.fromtimestamp(record.lease_until, UTC)
            expired = stamp.isoformat(timespec="milliseconds")
        except (OverflowError, ValueError, OSError):  # beyond the years datetime knows
            expired = f"{record.lease_until:.3f} (epoch seconds)"
    holder = (
        "its process stopped (it held no lease)"
        if record.worker is None
        else f"worker {escape_text(record.worker)!r} stopped renewing its lease "
        f"(expired at {expired})"
    )
    message = (
        f"interrupted: {holder} during attempt {record.attempt} of {record.max_attempts}; "
        + ("queued again" if retry else "it does not run again")
    )
    return ErrorInfo(
        message=message,
        # Out of attempts, it cannot run again: fatal, as recovery does for a task
        # interrupted on its last attempt.
        error_type=ErrorType.RETRYABLE if retry else ErrorType.FATAL,
        exception_type=_INTERRUPTED_TYPE,
        suggested_action=None
        if retry
        else "Find out why the worker stopped (killed, crashed, or its event loop blocked "
        "for longer than the lease), then submit the task again.",
    )


class ClaimArgs:
    """The arguments of one `acquire`, checked.

    Order: priority (10 first), then queued_at, then insertion; with `aging`, by
    ``queued_at - priority * aging``. A type at its limit in `limits` (counted over
    every running row of that type) is skipped, not waited for; so is a task whose
    concurrency key (``metadata["concurrency_key"]``) has as many running tasks of its
    type as `key_limits` allows that type per key.
    """

    __slots__ = ("aging", "key_limits", "limit", "limits", "now", "types", "until", "worker")

    def __init__(
        self,
        worker_id: str,
        limit: int,
        lease: float,
        *,
        limits: Mapping[str, int] | None,
        types: Collection[str] | None,
        aging: float | None,
        now: float | None,
        key_limits: Mapping[str, int] | None = None,
    ) -> None:
        self.worker = check_worker(worker_id)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
            raise ValueError(f"limit must be an integer >= 0, not {limit!r}")
        self.limit = limit
        self.limits = dict(limits or {})
        self.key_limits = dict(key_limits or {})
        for task_type, most in [*self.limits.items(), *self.key_limits.items()]:
            if not isinstance(most, int) or isinstance(most, bool) or most < 0:
                raise ValueError(
                    f"the limit of {task_type!r} must be an integer >= 0, not {most!r}"
                )
        if isinstance(types, str):
            raise TypeError(f"types must be a collection of task types, not one string: {types!r}")
        self.types = None if types is None else frozenset(types)
        if aging is not None and not (_finite(aging) and aging > 0):
            raise ValueError(f"aging must be a positive number of seconds, not {aging!r}")
        self.aging = aging
        self.now = check_now(now)
        self.until = lease_end(self.now, lease)


def settle_expired(record: TaskRecord, moment: float, *, retry_allowed: bool) -> None:
    """Make `record`, whose lease ended at `moment`, what reaping makes of it: cancelled
    if its cancel was requested, queued again (progress cleared) while attempts remain
    and `retry_allowed`, else failed; its lease dropped either way."""
    retry = record.attempt < record.max_attempts and retry_allowed
    if record.cancel_reason is not None:  # its cancel was requested: it ends so
        record.state, record.finished_at = TaskState.CANCELLED, moment
    elif retry:
        record.error = expiry_error(record, retry=True)
        record.state, record.queued_at, record.started_at = TaskState.QUEUED, moment, None
        record.progress = record.current = record.total = record.eta = None
        record.message = None
    else:
        record.error = expiry_error(record, retry=False)
        record.state, record.finished_at = TaskState.FAILED, moment
    record.worker = record.lease_until = None
