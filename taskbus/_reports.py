"""Plain reports the bus hands out: its stats, and what a shutdown left behind."""

from __future__ import annotations

import builtins
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from ._errors import StoreError
from ._states import TaskState
from .stores._base import QUEUED_BY_PRIORITY, ReportsOutage, Store, StoreOutage, StoreStats

__all__ = ["BusStats", "ShutdownReport", "StatsReader"]


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
    """Counts by state and by type, queued tasks by type and priority, plus the
    runtime's own gauges."""

    model_config = ConfigDict(frozen=True)

    by_state: dict[TaskState, int] = Field(
        description="Tasks by state; while the store cannot be reached, the last counts read."
    )
    by_type: dict[str, dict[TaskState, int]]
    queued_by_priority: dict[str, dict[int, int]] = Field(
        default_factory=dict, description=QUEUED_BY_PRIORITY
    )
    workers: int
    running: int
    listener_errors: int
    store_outage: StoreOutage | None = Field(
        default=None, description="Set while the store cannot be reached: since when, and why."
    )


class StatsReader:
    """Reads the store's counts for `TaskBus.stats`; while the store cannot be reached
    it answers the last counts read and the outage, instead of raising."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._last = StoreStats()
        self._failing_since: datetime | None = None

    async def read(self) -> tuple[StoreStats, StoreOutage | None]:
        try:
            counts = await self._store.stats()
        except StoreError as exc:
            if self._failing_since is None:
                self._failing_since = datetime.now(UTC)
            known = self._reported()
            return self._last, known or StoreOutage(
                since=self._failing_since, error=f"stats: {exc}"
            )
        self._failing_since = None
        self._last = counts
        return counts, self._reported()

    def _reported(self) -> StoreOutage | None:
        return self._store.outage if isinstance(self._store, ReportsOutage) else None
