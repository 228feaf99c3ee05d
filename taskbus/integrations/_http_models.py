"""The HTTP API's answers as pydantic models: the routes build their JSON from
these, and `_openapi` documents them, so the document and the wire cannot drift.

The request body (`SubmitBody`) lives with the parsing in `_http_input`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .. import StoreOutage, TaskSnapshot, TaskState

__all__ = [
    "CallerAnswer",
    "CancelAnswer",
    "ErrorAnswer",
    "ErrorDetail",
    "Health",
    "HistoryPoint",
    "StatsAnswer",
    "StatsHistoryAnswer",
    "SubmitAnswer",
    "TaskPage",
    "TypeInfo",
]


class _Answer(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", json_schema_serialization_defaults_required=True
    )


class ErrorDetail(_Answer):
    """What went wrong."""

    code: str = Field(description="A stable, machine-readable code, e.g. `not_found`.")
    message: str = Field(description="For people.")
    details: Any = Field(description="More about it (pydantic's errors for a 422), or null.")


class ErrorAnswer(_Answer):
    """The body of every non-2xx answer."""

    error: ErrorDetail


class SubmitAnswer(_Answer):
    """``POST /tasks``: the task was accepted (its id is also in ``Location``)."""

    id: str
    type: str
    state: Literal["queued"] = "queued"
    url: str = Field(description="The task's url, relative to the app's mount.")


class CancelAnswer(_Answer):
    """``DELETE /tasks/{id}``: whether this call cancelled it, and its state now."""

    id: str
    cancelled: bool = Field(description="False when it had finished already.")
    state: TaskState


class TaskPage(_Answer):
    """``GET /tasks``: one page of snapshots, oldest first unless ``order=newest``."""

    items: list[TaskSnapshot]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")


class StatsAnswer(_Answer):
    """``GET /stats``: counts by state and by type (with auth, the caller's own tasks,
    or every task for an administrator)."""

    by_state: dict[TaskState, int]
    by_type: dict[str, dict[TaskState, int]]
    queued_by_priority: dict[str, dict[int, int]] = Field(
        default_factory=dict,
        description="Queued tasks by type, then by priority (10 most urgent ... 1), "
        "non-zero counts only; queued includes tasks delayed, retrying later, waiting for "
        "their parents or a rate window. With auth, the caller's own tasks.",
    )
    store_outage: StoreOutage | None = Field(
        default=None,
        description="Set while the store cannot be reached (the counts are then the last "
        "ones read); always null with auth.",
    )


class HistoryPoint(_Answer):
    """One point of ``GET /stats/history``: the finals since the previous point, and
    the queue at this one. Finals are counted in every process that shares the store."""

    timestamp: datetime = Field(description="When the point was taken (UTC).")
    completed: int = Field(description="Tasks that completed since the previous point.")
    failed: int = Field(description="Tasks that failed since the previous point.")
    cancelled: int = Field(description="Tasks cancelled since the previous point.")
    queued: int | None = Field(
        description="Tasks queued (the queue depth) at this point; null: not read (a gap)."
    )
    running: int | None = Field(description="Tasks running at this point; null: not read.")
    store_outage: bool = Field(
        description="The store could not be reached: queued and running are the last counts read."
    )


class StatsHistoryAnswer(_Answer):
    """``GET /stats/history``: the last minutes of figures, one point per interval, oldest
    first (with auth, an administrator only)."""

    interval: float = Field(description="Seconds between two points.")
    window: float = Field(description="Seconds of history kept.")
    sampling: bool = Field(
        description="Whether points are being taken: false while the app's lifespan does "
        "not run (a mounted app whose host does not enter it)."
    )
    points: list[HistoryPoint]


class TypeInfo(_Answer):
    """``GET /types``: one registered task type."""

    name: str
    description: str | None
    input_schema: dict[str, Any] = Field(description="JSON schema of the type's input.")
    timeout: float | None
    priority: int
    concurrency: int | None


class CallerAnswer(_Answer):
    """``GET /me``: who the caller is (the dashboard shows owners to an administrator)."""

    owner: str | None = Field(description="The caller's owner; null when the API is single-user.")
    admin: bool = Field(description="Sees every owner's tasks (true when single-user).")


class Health(_Answer):
    """``GET /healthz`` while the bus runs (503 and the error shape while it does not)."""

    status: Literal["ok"] = "ok"
    bus_running: Literal[True] = True
