"""Plain reports the bus hands out: its stats, and what a shutdown left behind."""

from __future__ import annotations

import builtins

from pydantic import BaseModel, ConfigDict, Field

from ._states import TaskState

__all__ = ["BusStats", "ShutdownReport"]


class ShutdownReport(BaseModel):
    """What `async with bus:` left behind when it closed."""

    model_config = ConfigDict(frozen=True)

    finished_in_grace: int = Field(description="Running tasks that finished during the grace.")
    cancelled: builtins.list[str] = Field(
        description="Ids of running tasks cancelled after the grace (memory store)."
    )
    left_queued: list[str] = Field(
        description="Ids still queued here (a shared store keeps them queued for any worker)."
    )
    handed_back: list[str] = Field(
        default_factory=list,
        description="Ids of tasks still running after the grace that a durable store "
        "keeps queued, their attempt not counted, to run again on the next start.",
    )


class BusStats(BaseModel):
    """Counts by state and by type, plus the runtime's own gauges."""

    model_config = ConfigDict(frozen=True)

    by_state: dict[TaskState, int]
    by_type: dict[str, dict[TaskState, int]]
    workers: int
    running: int
    listener_errors: int
