"""Schedules as a stored store keeps them: the definition as JSON, the state as
columns (a shared step for SQLite and Redis)."""

from __future__ import annotations

import json
from typing import Any

from .._schedule import STATE_FIELDS, Schedule, to_datetime

__all__ = ["schedule_from", "spec_of"]


def spec_of(schedule: Schedule) -> str:
    """The schedule's definition (everything but its state) as JSON text."""
    return schedule.model_dump_json(exclude=set(STATE_FIELDS))


def schedule_from(
    spec: str,
    *,
    paused: bool,
    next_fire_at: float | None,
    last_fire_at: float | None,
    last_task_id: str | None,
    created_at: float,
) -> Schedule:
    """The schedule stored as `spec` and these state columns."""
    fields: dict[str, Any] = json.loads(spec)
    fields.update(
        paused=paused,
        next_fire_at=to_datetime(next_fire_at),
        last_fire_at=to_datetime(last_fire_at),
        last_task_id=last_task_id,
        created_at=to_datetime(created_at),
    )
    return Schedule.model_validate(fields)
