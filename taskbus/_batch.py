"""Batches: many tasks submitted together, followed and cancelled as one.

A batch lives in the memory of the bus that submitted it (its tasks carry
``metadata["batch_id"]`` in any store). Its aggregate is computed from the live
records of its tasks; batch-progress events are debounced like task progress,
and batch-finished is published once, when the last task is final.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from ._bus import ALL_EVENTS
from ._errors import TaskbusError
from ._events import BatchFinished, BatchProgress, Event, build_trusted
from ._progress import ProgressDebouncer
from ._record import TaskRecord, new_task_id
from ._states import TaskState

if TYPE_CHECKING:
    from ._taskbus import TaskBus

__all__ = ["BatchNotFound", "BatchSummary", "BatchTracker", "TaskBatch"]


class BatchNotFound(TaskbusError, LookupError):
    """Raised when no batch of this bus has the given id."""

    def __init__(self, batch_id: object) -> None:
        self.batch_id = batch_id
        super().__init__(f"no batch with id {batch_id!r}")


class BatchSummary(BaseModel):
    """Where a batch stands: counts, progress, current operation, ETA."""

    model_config = ConfigDict(frozen=True)

    id: str
    total: int
    completed: int = Field(description="Tasks that completed.")
    failed: int
    cancelled: int
    running: int
    queued: int
    progress: float = Field(description="Percent done: finished tasks count 100.")
    message: str | None = Field(description="The current operation of a running task.")
    eta: float | None = Field(description="Seconds left, from the average task time.")
    task_ids: list[str]

    @property
    def done(self) -> int:
        """Tasks that reached a final state, whatever it was."""
        return self.completed + self.failed + self.cancelled

    @property
    def finished(self) -> bool:
        return self.done == self.total


class TaskBatch:
    """The tasks of one batch (what `submit_batch` returns)."""

    def __init__(self, tracker: BatchTracker, records: list[TaskRecord]) -> None:
        self.id = new_task_id()
        self.records = records
        self.task_ids = [record.id for record in records]
        self.finished = anyio.Event()
        self._tracker = tracker

    def __repr__(self) -> str:
        return f"<TaskBatch {self.id} tasks={len(self.records)}>"

    async def summary(self) -> BatchSummary:
        return self._tracker.summary(self.id)

    async def wait(self, timeout: float | None = None) -> BatchSummary:
        """Wait until every task is final; `TimeoutError` after `timeout` seconds."""
        with anyio.fail_after(timeout):
            await self.finished.wait()
        return self._tracker.summary(self.id)

    async def cancel(self, reason: str | None = None) -> int:
        return await self._tracker.bus.cancel_batch(self.id, reason=reason)


class BatchTracker:
    """Follows the batches of one bus through the task events of their tasks."""

    def __init__(self, bus: TaskBus, *, interval: float) -> None:
        self.bus = bus
        self._batches: dict[str, TaskBatch] = {}
        self._by_task: dict[str, TaskBatch] = {}
        self._listening = False
        self._debouncer: ProgressDebouncer[TaskBatch] = ProgressDebouncer(
            bus.clock, bus.timers, self._publish, interval
        )

    def new(self, records: list[TaskRecord]) -> TaskBatch:
        batch = TaskBatch(self, records)
        for record in records:
            record.metadata = {**(record.metadata or {}), "batch_id": batch.id}
        return batch

    def track(self, batch: TaskBatch) -> None:
        """Start following `batch` (its tasks are queued)."""
        self._batches[batch.id] = batch
        for record in batch.records:
            if not record.state.is_final:
                self._by_task[record.id] = batch
        if not self._listening:
            self.bus.events.on(ALL_EVENTS, self._on_event)
            self._listening = True
        self._check_finished(batch)

    def get(self, batch_id: str) -> TaskBatch:
        try:
            return self._batches[batch_id]
        except (KeyError, TypeError):
            raise BatchNotFound(batch_id) from None

    def _on_event(self, event: Event) -> None:
        batch = self._by_task.get(getattr(event, "task_id", ""))
        if batch is None:
            return
        if event.final:
            del self._by_task[event.task_id]  # type: ignore[attr-defined]
        self._debouncer.update(batch)
        self._check_finished(batch)

    def _check_finished(self, batch: TaskBatch) -> None:
        if batch.finished.is_set() or not all(r.state.is_final for r in batch.records):
            return
        self._debouncer.finish(batch.id)
        batch.finished.set()
        if self.bus.events.wants("batch-finished"):
            self.bus.events.publish(
                build_trusted(BatchFinished, {**self._counts(batch), "timestamp": self._now()})
            )
        if not self._by_task and self._listening:
            self.bus.events.off(ALL_EVENTS, self._on_event)
            self._listening = False

    def _now(self) -> float:
        return self.bus.clock.now()

    def _publish(self, batch: TaskBatch) -> None:
        if not self.bus.events.wants("batch-progress") or batch.finished.is_set():
            return
        summary = self.summary(batch.id)
        values = {
            **self._counts(batch),
            "timestamp": self._now(),
            "progress": summary.progress,
            "message": summary.message,
            "estimated_time_remaining": summary.eta,
        }
        self.bus.events.publish(build_trusted(BatchProgress, values))

    def _counts(self, batch: TaskBatch) -> dict[str, Any]:
        counts = dict.fromkeys(TaskState, 0)
        for record in batch.records:
            counts[record.state] += 1
        return {
            "batch_id": batch.id,
            "total": len(batch.records),
            "completed": counts[TaskState.COMPLETED],
            "failed": counts[TaskState.FAILED],
            "cancelled": counts[TaskState.CANCELLED],
            "running": counts[TaskState.RUNNING],
            "queued": counts[TaskState.QUEUED],
        }

    def summary(self, batch_id: str) -> BatchSummary:
        batch = self.get(batch_id)
        records = batch.records
        running = [r for r in records if r.state is TaskState.RUNNING]
        progress = sum(100.0 if r.state.is_final else (r.progress or 0.0) for r in records)
        return BatchSummary(
            id=batch.id,
            **{k: v for k, v in self._counts(batch).items() if k != "batch_id"},
            progress=progress / len(records) if records else 100.0,
            message=next((r.message for r in running if r.message), None),
            eta=_eta(records, running),
            task_ids=batch.task_ids,
        )


def _eta(records: list[TaskRecord], running: list[TaskRecord]) -> float | None:
    times = [
        r.finished_at - r.started_at
        for r in records
        if r.state is TaskState.COMPLETED and r.finished_at is not None and r.started_at
    ]
    if not times:
        return None
    left = sum(1 for r in records if r.state is TaskState.QUEUED)
    left_running = sum(1.0 - (r.progress or 0.0) / 100.0 for r in running)
    return statistics.fmean(times) * (left + left_running) / max(1, len(running))
