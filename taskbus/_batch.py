"""Batches: many tasks submitted together, followed and cancelled as one.

A batch is its tasks: each carries ``metadata["batch_id"]``, which every store
indexes (`TaskQuery.batch_id`), so any process reads a batch back from a shared
store. The bus that submitted it also follows it in memory, for its events:
while it runs, the tracker holds the runtime's records of its *unfinished* tasks
only (the queue and the workers hold those anyway); a task's final event folds
it into per-state counters and drops its record. batch-progress events are
debounced like task progress, and batch-finished is published once, when the
last task is final. Then the batch is released: its final `BatchSummary` is
kept for as long as retention keeps finished tasks (``RetentionPolicy.max_age``)
and for the last `BatchTracker.keep_finished` batches at most; after that
`bus.batch(id)` reads it back from the store, and raises `BatchNotFound` once
retention has purged its tasks."""

from __future__ import annotations

import statistics
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any, Protocol

import anyio
from pydantic import BaseModel, ConfigDict, Field

from ._bus import ALL_EVENTS, EventBus
from ._clock import Clock
from ._errors import TaskbusError
from ._events import BatchFinished, BatchProgress, Event, build_trusted
from ._lifecycle import Lifecycle
from ._progress import ProgressDebouncer
from ._record import TaskRecord, new_task_id
from ._states import TaskState
from ._timers import Timers
from .stores._base import Store, TaskQuery

__all__ = [
    "BatchHost",
    "BatchNotFound",
    "BatchSummary",
    "BatchTracker",
    "TaskBatch",
    "stored_summary",
    "summarize",
]

#: The most a batch reports while any of its tasks is not final (a running task
#: at 100 % has not finished; 100 is kept for "every task is final").
UNFINISHED_CEILING = 99.0
#: Records read per query when a batch is read back from the store.
_PAGE = 10_000


class BatchNotFound(TaskbusError, LookupError):
    """Raised when no batch has the given id: the store holds none of its tasks
    (the id was never a batch's, or retention purged its tasks)."""

    def __init__(self, batch_id: object) -> None:
        self.batch_id = batch_id
        super().__init__(
            f"no batch with id {batch_id!r}: the store holds none of its tasks "
            "(never a batch's id, or retention purged them)"
        )


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
    waiting: int = Field(default=0, description="Tasks waiting for input (ctx.ask).")
    progress: float = Field(
        description="Percent done: finished tasks count 100; below 100 until every task is final."
    )
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
    """The tasks of one batch (what `submit_batch` returns).

    It holds ids, not records; once the batch is finished it keeps its final
    summary, so `summary()` and `wait()` answer for as long as you hold it.
    """

    def __init__(self, tracker: BatchTracker, task_ids: list[str]) -> None:
        self.id = new_task_id()
        self.task_ids = task_ids
        self.finished = anyio.Event()
        self.final: BatchSummary | None = None
        self._tracker = tracker

    def __repr__(self) -> str:
        return f"<TaskBatch {self.id} tasks={len(self.task_ids)}>"

    async def summary(self) -> BatchSummary:
        return self.final if self.final is not None else self._tracker.summary(self.id)

    async def wait(self, timeout: float | None = None) -> BatchSummary:
        """Wait until every task is final; `TimeoutError` after `timeout` seconds."""
        with anyio.fail_after(timeout):
            await self.finished.wait()
        assert self.final is not None
        return self.final

    async def cancel(self, reason: str | None = None) -> int:
        return await self._tracker.bus.cancel_batch(self.id, reason=reason)


class BatchHost(Protocol):
    """What a tracker follows batches through (a `TaskBus`)."""

    store: Store
    clock: Clock
    timers: Timers
    events: EventBus
    lifecycle: Lifecycle

    async def cancel_batch(self, batch_id: str, *, reason: str | None = None) -> int: ...


class _Running:
    """What the tracker holds for one unfinished batch."""

    __slots__ = ("batch", "cancelled", "completed", "durations", "failed", "live")

    def __init__(self, batch: TaskBatch, records: Iterable[TaskRecord]) -> None:
        self.batch = batch
        #: The runtime's records of the tasks that are not folded in yet.
        self.live: dict[str, TaskRecord] = {record.id: record for record in records}
        self.completed = self.failed = self.cancelled = 0
        #: Run times of completed tasks, for the ETA.
        self.durations: list[float] = []

    @property
    def id(self) -> str:
        return self.batch.id

    def fold(self, record: TaskRecord) -> None:
        """Count the final `record` and let go of it."""
        del self.live[record.id]
        if record.state is TaskState.COMPLETED:
            self.completed += 1
            if record.finished_at is not None and record.started_at:
                self.durations.append(record.finished_at - record.started_at)
        elif record.state is TaskState.FAILED:
            self.failed += 1
        else:
            self.cancelled += 1

    def summary(self) -> BatchSummary:
        return summarize(
            self.id,
            self.batch.task_ids,
            self.live.values(),
            (self.completed, self.failed, self.cancelled),
            self.durations,
        )


def summarize(
    batch_id: str,
    task_ids: list[str],
    live: Iterable[TaskRecord],
    folded: tuple[int, int, int],
    durations: list[float],
) -> BatchSummary:
    """The summary of a batch whose `live` records are counted as they stand, after
    `folded` tasks (completed, failed, cancelled) whose run times were `durations`."""
    live = list(live)
    by_state = dict.fromkeys(TaskState, 0)
    for record in live:
        by_state[record.state] += 1
    completed, failed, cancelled = folded
    counts = {
        "total": len(task_ids),
        "completed": completed + by_state[TaskState.COMPLETED],
        "failed": failed + by_state[TaskState.FAILED],
        "cancelled": cancelled + by_state[TaskState.CANCELLED],
        "running": by_state[TaskState.RUNNING],
        "queued": by_state[TaskState.QUEUED],
        "waiting": by_state[TaskState.WAITING],
    }
    total = counts["total"]
    done = counts["completed"] + counts["failed"] + counts["cancelled"]
    running = [r for r in live if r.state is TaskState.RUNNING]
    points = 100.0 * done + sum(r.progress or 0.0 for r in live if not r.state.is_final)
    progress = points / total if total else 100.0
    if done < total:
        progress = min(progress, UNFINISHED_CEILING)
    return BatchSummary(
        id=batch_id,
        **counts,
        progress=progress,
        message=next((r.message for r in running if r.message), None),
        eta=_eta(durations, counts["queued"], running),
        task_ids=task_ids,
    )


def stored_summary(batch_id: str, records: list[TaskRecord]) -> BatchSummary:
    """The summary of a batch read back from the store: all its `records`."""
    durations = [
        r.finished_at - r.started_at
        for r in records
        if r.state is TaskState.COMPLETED and r.finished_at is not None and r.started_at
    ]
    return summarize(batch_id, [r.id for r in records], records, (0, 0, 0), durations)


def _eta(durations: list[float], queued: int, running: list[TaskRecord]) -> float | None:
    if not durations:
        return None
    left_running = sum(1.0 - min(r.progress or 0.0, 100.0) / 100.0 for r in running)
    return statistics.fmean(durations) * (queued + left_running) / max(1, len(running))


class BatchTracker:
    """Follows the batches of one bus through the task events of their tasks."""

    #: Finished batches whose summary is kept at most (oldest released first).
    keep_finished = 1000

    def __init__(self, bus: BatchHost, *, interval: float, keep_for: float | None = None) -> None:
        self.bus = bus
        #: Seconds a finished batch's summary is kept (None: only `keep_finished` bounds it).
        self.keep_for = keep_for
        self._running: dict[str, _Running] = {}
        self._by_task: dict[str, _Running] = {}
        self._finished: OrderedDict[str, tuple[float, BatchSummary]] = OrderedDict()
        self._listening = False
        #: On a shared store the tracker's records are copies made at submit: the
        #: task's events bring them up to date (on memory they are the runtime's own).
        self._mirror = bus.lifecycle.leases is not None
        self._debouncer: ProgressDebouncer[_Running] = ProgressDebouncer(
            bus.clock, bus.timers, self._publish, interval
        )

    def __len__(self) -> int:
        """Batches still running (the only ones whose task records are held)."""
        return len(self._running)

    @property
    def records_held(self) -> int:
        """Task records held for running batches (the runtime's own, not copies)."""
        return sum(len(running.live) for running in self._running.values())

    def new(self, records: list[TaskRecord]) -> TaskBatch:
        batch = TaskBatch(self, [record.id for record in records])
        for record in records:
            record.metadata = {**(record.metadata or {}), "batch_id": batch.id}
        return batch

    def track(self, batch: TaskBatch, records: list[TaskRecord]) -> None:
        """Start following `batch`, whose `records` are queued (some may be final already)."""
        running = _Running(batch, records)
        self._running[batch.id] = running
        for record in records:
            if record.state.is_final:
                running.fold(record)
            else:
                self._by_task[record.id] = running
        if not self._listening:
            self.bus.events.on(ALL_EVENTS, self._on_event)
            self._listening = True
        self._check_finished(running)

    def leave_out(self, batch: TaskBatch, records: list[TaskRecord]) -> None:
        """Tasks of `batch` that were never stored (a submit failed midway): the batch
        is the tasks before them."""
        running = self._running.get(batch.id)
        for record in records:
            batch.task_ids.remove(record.id)
            self._by_task.pop(record.id, None)
            if running is not None:
                running.live.pop(record.id, None)
        if running is not None:
            self._check_finished(running)

    def unfinished(self, batch_id: str) -> list[TaskRecord]:
        """The records of the batch's tasks not final yet; [] for a finished batch."""
        running = self._running.get(batch_id) if isinstance(batch_id, str) else None
        if running is not None:
            return [r for r in running.live.values() if not r.state.is_final]
        self._finished_summary(batch_id)  # raises BatchNotFound when unknown
        return []

    def summary(self, batch_id: str) -> BatchSummary:
        running = self._running.get(batch_id) if isinstance(batch_id, str) else None
        if running is not None:
            return running.summary()
        return self._finished_summary(batch_id)

    async def find(self, batch_id: str) -> BatchSummary:
        """Where a batch stands: followed here, or read back from the store (a batch
        another process submitted, or one this bus released)."""
        try:
            return self.summary(batch_id)
        except BatchNotFound:
            return stored_summary(batch_id, await self.stored(batch_id))

    async def find_unfinished(self, batch_id: str) -> list[TaskRecord]:
        """`unfinished`, or the store's records of the batch's tasks not final yet."""
        try:
            return self.unfinished(batch_id)
        except BatchNotFound:
            return [r for r in await self.stored(batch_id) if not r.state.is_final]

    async def stored(self, batch_id: str) -> list[TaskRecord]:
        """Every task of the batch as the store holds it, oldest first; `BatchNotFound`
        if it holds none."""
        records: list[TaskRecord] = []
        if isinstance(batch_id, str):
            while True:
                query = TaskQuery(batch_id=batch_id, limit=_PAGE, offset=len(records))
                page = await self.bus.store.list(query)
                records += page
                if len(page) < _PAGE:
                    break
        if not records:
            raise BatchNotFound(batch_id)
        return records

    def _finished_summary(self, batch_id: object) -> BatchSummary:
        self._expire()
        kept = self._finished.get(batch_id) if isinstance(batch_id, str) else None
        if kept is None:
            raise BatchNotFound(batch_id)
        return kept[1]

    def _expire(self) -> None:
        while len(self._finished) > self.keep_finished:
            self._finished.popitem(last=False)
        if self.keep_for is None:
            return
        cutoff = self.bus.clock.now() - self.keep_for
        while self._finished:
            finished_at = next(iter(self._finished.values()))[0]
            if finished_at > cutoff:
                break
            self._finished.popitem(last=False)

    def _on_event(self, event: Event) -> None:
        running = self._by_task.get(getattr(event, "task_id", ""))
        if running is None:
            return
        if self._mirror:
            _mirror(running.live.get(event.task_id), event)  # type: ignore[attr-defined]
        if event.final:
            task_id: str = event.task_id  # type: ignore[attr-defined]
            del self._by_task[task_id]
            record = running.live.get(task_id)
            if record is not None:
                running.fold(record)
        self._debouncer.update(running)
        self._check_finished(running)

    def _check_finished(self, running: _Running) -> None:
        if running.live or running.id not in self._running:
            return
        self._debouncer.finish(running.id)
        summary = running.summary()
        del self._running[running.id]
        self._finished[running.id] = (self.bus.clock.now(), summary)
        self._expire()
        batch = running.batch
        batch.final = summary
        batch.finished.set()
        if self.bus.lifecycle.wants("batch-finished"):
            self.bus.lifecycle.emit(
                build_trusted(BatchFinished, {**self._counts(summary), "timestamp": self._now()})
            )
        if not self._by_task and self._listening:
            self.bus.events.off(ALL_EVENTS, self._on_event)
            self._listening = False

    def _now(self) -> float:
        return self.bus.clock.now()

    def _publish(self, running: _Running) -> None:
        if not self.bus.lifecycle.wants("batch-progress") or running.id not in self._running:
            return
        summary = running.summary()
        values = {
            **self._counts(summary),
            "timestamp": self._now(),
            "progress": summary.progress,
            "message": summary.message,
            "estimated_time_remaining": summary.eta,
        }
        self.bus.lifecycle.emit(build_trusted(BatchProgress, values))

    @staticmethod
    def _counts(summary: BatchSummary) -> dict[str, Any]:
        return {
            "batch_id": summary.id,
            "total": summary.total,
            "completed": summary.completed,
            "failed": summary.failed,
            "cancelled": summary.cancelled,
            "running": summary.running,
            "queued": summary.queued,
        }


_FINAL_STATES = {
    "task-completed": TaskState.COMPLETED,
    "task-failed": TaskState.FAILED,
    "task-cancelled": TaskState.CANCELLED,
}


def _mirror(record: TaskRecord | None, event: Event) -> None:
    """Bring a copy of a task's record up to date with one of its events."""
    if record is None:
        return
    name = event.name
    stamp = event.timestamp.timestamp()
    if name == "task-started":
        record.state, record.started_at, record.progress = TaskState.RUNNING, stamp, None
    elif name == "task-progress":
        record.progress = getattr(event, "progress", None)
        record.message = getattr(event, "message", None)
    elif name in ("task-retrying", "task-input-received"):
        record.state, record.progress = TaskState.QUEUED, None
    elif name == "task-input-required":
        record.state = TaskState.WAITING
    elif name in _FINAL_STATES:
        record.state, record.finished_at = _FINAL_STATES[name], stamp
