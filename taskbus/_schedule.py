"""`Schedule`: a stored rule that fires a task type on a cron expression or an
interval, and the checks that build one from `TaskBus.schedule`'s arguments."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._dependencies import check_reserved
from ._errors import InvalidSchedule
from ._validation import MAX_DELAY, check_metadata, check_priority, check_text

__all__ = [
    "STATE_FIELDS",
    "MisfirePolicy",
    "Schedule",
    "check_seconds",
    "fire_instant",
    "new_schedule_id",
    "to_datetime",
]

#: What a schedule does with fire times missed while no process ran it:
#: ``skip`` fires only the latest, and only if it is at most `misfire_grace` old;
#: ``once`` fires one task for them all (coalescing); ``all`` fires each, the
#: latest `misfire_limit` of them.
MisfirePolicy = Literal["skip", "once", "all"]


class Schedule(BaseModel):
    """A stored schedule: which task to fire, when, and where it stands.

    Exactly one of `cron` and `every` is set. Read with `TaskBus.get_schedule`
    or `TaskBus.schedules`; change with `TaskBus.schedule` (same id: replaced).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="The schedule's id (unique per store).")
    task_type: str = Field(description="The task type each fire submits.")
    cron: str | None = Field(default=None, description="A cron expression (croniter).")
    every: float | None = Field(
        default=None, gt=0, allow_inf_nan=False, description="An interval, in seconds."
    )
    tz: str = Field(default="UTC", description="The IANA time zone a cron expression reads in.")
    input: Any = Field(default=None, description="The input of each fired task (JSON).")
    priority: int | None = Field(default=None, description="Priority of fired tasks.")
    owner: str | None = Field(default=None, description="Owner of the schedule and its tasks.")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Metadata of fired tasks (plus schedule_id)."
    )
    jitter: float | None = Field(
        default=None,
        ge=0,
        allow_inf_nan=False,
        description="Up to this many seconds of random delay per fire.",
    )
    misfire: MisfirePolicy = Field(default="once", description="What to do with missed fires.")
    misfire_limit: int = Field(
        default=100, ge=1, description="At most this many catch-up fires (misfire='all')."
    )
    misfire_grace: float = Field(
        default=60.0,
        ge=0,
        allow_inf_nan=False,
        description="A fire this many seconds late is on time; later, it was missed.",
    )
    paused: bool = Field(default=False, description="A paused schedule never fires.")
    next_fire_at: datetime | None = Field(default=None, description="The next intended fire time.")
    last_fire_at: datetime | None = Field(
        default=None, description="The intended time of the last fire."
    )
    last_task_id: str | None = Field(default=None, description="The task the last fire submitted.")
    created_at: datetime = Field(description="When the schedule was first stored.")

    @property
    def timing(self) -> str:
        """What decides the fire times: a schedule registered again with the same
        timing keeps its next fire time."""
        return f"cron={self.cron!r};every={self.every!r};tz={self.tz}"

    @property
    def next_fire(self) -> float | None:
        """`next_fire_at` as epoch seconds."""
        return None if self.next_fire_at is None else self.next_fire_at.timestamp()


#: The fields a store keeps as the schedule's definition (the rest is its state).
STATE_FIELDS = frozenset({"paused", "next_fire_at", "last_fire_at", "last_task_id", "created_at"})


def fire_instant(stamp: float) -> float:
    """`stamp` as a datetime holds it (to the microsecond), so that a stored fire
    time and one read back compare equal."""
    return datetime.fromtimestamp(stamp, UTC).timestamp()


def to_datetime(stamp: float | None) -> datetime | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC)


def check_seconds(value: Any, name: str, *, positive: bool) -> float | None:
    """A duration given as seconds or a `timedelta`, finite and within 100 years."""
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise InvalidSchedule(f"{name} must be a timedelta or seconds, not {value!r}")
    if (value <= 0 if positive else value < 0) or value > MAX_DELAY:
        bound = "> 0" if positive else ">= 0"
        raise InvalidSchedule(f"{name} must be {bound} and within 100 years, not {value!r}")
    return float(value)


def new_schedule_id(task_type: str, owner: str | None) -> str:
    """The id a schedule gets when none is given: its task type (and owner), so that
    every process registering it at start-up names the same schedule."""
    return task_type if owner is None else f"{owner}/{task_type}"


def check_options(
    *,
    schedule_id: Any,
    priority: Any,
    owner: Any,
    metadata: Any,
    misfire: Any,
    misfire_limit: Any,
) -> tuple[int | None, dict[str, Any]]:
    """Check the options that are not timing; return the priority and metadata."""
    check_text(schedule_id, "schedule id", InvalidSchedule)
    if not schedule_id or "\n" in schedule_id:
        raise InvalidSchedule(f"a schedule id must be a non-empty line, not {schedule_id!r}")
    if owner is not None:
        check_text(owner, "owner")
    if misfire not in ("skip", "once", "all"):
        raise InvalidSchedule(f"misfire must be 'skip', 'once' or 'all', not {misfire!r}")
    if type(misfire_limit) is not int or not 1 <= misfire_limit <= 10_000:
        raise InvalidSchedule(
            f"misfire_limit must be an int from 1 to 10000, not {misfire_limit!r}"
        )
    checked = {} if metadata is None else check_metadata(metadata)
    check_reserved(checked)
    return None if priority is None else check_priority(priority), checked
