"""The `Store` protocol every task store implements."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .._errors import StoreError
from .._events import Event
from .._input import InputAnswer
from .._record import TaskRecord
from .._schedule import Schedule
from .._states import TaskState

__all__ = [
    "QUEUED_BY_PRIORITY",
    "CorruptRecord",
    "EventBroker",
    "FinalStateWatcher",
    "KeyInUse",
    "KeyScope",
    "LiveRecordStore",
    "ReportsOutage",
    "ScheduleStore",
    "Store",
    "StoreOutage",
    "StoreStats",
    "TaskQuery",
    "TaskStore",
    "batch_of",
    "key_scope",
]


class CorruptRecord(StoreError):
    """Raised when a stored task row cannot be read back (a column holds a value no
    taskbus writes: an unknown state, JSON that does not parse, a priority that is
    not an integer).

    `task_id` and `columns` (name: what is wrong) say where; `record` is what could
    be salvaged: the task, failed, with this error.
    """

    def __init__(
        self, task_id: str, columns: dict[str, str], record: TaskRecord | None = None
    ) -> None:
        self.task_id = task_id
        self.columns = columns
        self.record = record
        details = "; ".join(f"{name}: {problem}" for name, problem in columns.items())
        super().__init__(f"stored task {task_id!r} is corrupt ({details})")


class KeyInUse(StoreError):
    """Raised by a store's `add` when a queued or running task already holds the
    record's idempotency key scope (owner, type, key), so that two processes that
    submit with one key at once make one task. Nothing is stored; `task_id` is the
    task that holds the key. Optional: a store that does not check leaves it to
    the runtime's `find_by_key`, which is atomic within one process only.
    """

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(f"idempotency key in use by task {task_id!r}")


#: What an idempotency key is unique within: (owner, task type, key).
KeyScope = tuple[str | None, str, str]


def key_scope(record: TaskRecord) -> KeyScope:
    """The scope of a keyed record's idempotency key."""
    assert record.key is not None
    return (record.owner, record.type, record.key)


class TaskQuery(BaseModel):
    """Filters and paging for `Store.list` (all filters combine with AND)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state: TaskState | None = None
    owner: str | None = None
    type_prefix: str | None = None
    batch_id: str | None = Field(
        default=None, description='Tasks of one batch (``metadata["batch_id"]``).'
    )
    created_after: float | None = Field(
        default=None, allow_inf_nan=False, description="Epoch seconds, inclusive."
    )
    created_before: float | None = Field(
        default=None, allow_inf_nan=False, description="Epoch seconds, exclusive."
    )
    limit: int = Field(default=100, ge=1, le=10_000)
    offset: int = Field(default=0, ge=0, le=2**63 - 1)
    newest_first: bool = Field(
        default=False, description="Order by creation, newest first (else oldest first)."
    )
    dead_letter: bool = Field(
        default=False,
        strict=True,
        description="Only dead letters: failed tasks (see `DeadLetterReason`). Sets "
        "`state` to failed, so a store serves it from its per-state index.",
    )

    @model_validator(mode="before")
    @classmethod
    def _dead_letters_are_failed(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("dead_letter") is True:
            state = data.get("state")
            if state is None:
                return {**data, "state": TaskState.FAILED}
            if state != TaskState.FAILED:
                raise ValueError(f"dead letters are failed tasks, not {state!s}")
        return data

    def matches(self, record: TaskRecord) -> bool:
        """Whether `record` passes every filter (for stores that filter in Python)."""
        return (
            (self.state is None or record.state is self.state)
            and (not self.dead_letter or record.state is TaskState.FAILED)
            and (self.owner is None or record.owner == self.owner)
            and (self.type_prefix is None or record.type.startswith(self.type_prefix))
            and (self.batch_id is None or batch_of(record) == self.batch_id)
            and (self.created_after is None or record.created_at >= self.created_after)
            and (self.created_before is None or record.created_at < self.created_before)
        )


def batch_of(record: TaskRecord) -> str | None:
    """The id of the batch `record` belongs to, if any."""
    batch_id = (record.metadata or {}).get("batch_id")
    return batch_id if isinstance(batch_id, str) else None


#: `StoreStats.queued_by_priority` and `BusStats.queued_by_priority`, described once.
QUEUED_BY_PRIORITY = (
    "Queued tasks by type, then by priority (10 most urgent ... 1): type -> priority -> "
    "count, non-zero counts only. Queued is the state: tasks delayed, retrying later, "
    "waiting for their parents or for a rate window are counted; running, waiting for "
    "input and final tasks are not."
)


class StoreStats(BaseModel):
    """Task counts by state and by type, and the queued ones by type and priority."""

    model_config = ConfigDict(frozen=True)

    by_state: dict[TaskState, int] = Field(default_factory=dict)
    by_type: dict[str, dict[TaskState, int]] = Field(default_factory=dict)
    queued_by_priority: dict[str, dict[int, int]] = Field(
        default_factory=dict, description=QUEUED_BY_PRIORITY
    )

    @property
    def total(self) -> int:
        return sum(self.by_state.values())


class StoreOutage(BaseModel):
    """The store cannot be reached (a server down, a connection cut): since when, and
    the last error. Writes are retried meanwhile; reads raise `StoreError`."""

    model_config = ConfigDict(frozen=True)

    since: datetime = Field(description="When the store was first found unreachable.")
    error: str = Field(description="The last error, e.g. 'write: ConnectionError: ...'.")


@runtime_checkable
class ReportsOutage(Protocol):
    """A store that knows when its server cannot be reached (optional)."""

    @property
    def outage(self) -> StoreOutage | None:
        """The current outage; None while the store is reached."""
        ...


@runtime_checkable
class Store(Protocol):
    """Keeps task records. The runtime mutates a record, then tells the store.

    A store must make `add` durable before it returns (for stores that are
    durable at all); the other writes may be grouped.
    """

    async def open(self) -> None:
        """Prepare for use (connect, migrate)."""
        ...

    async def close(self) -> None:
        """Release resources; the store may be opened again."""
        ...

    async def add(self, record: TaskRecord) -> None:
        """Keep a new, queued record."""
        ...

    async def claim(self, record: TaskRecord) -> None:
        """The record has just moved to running (attempt and start time set)."""
        ...

    async def update(self, record: TaskRecord) -> None:
        """Non-final fields changed (re-queued for a retry, say)."""
        ...

    async def finish(self, record: TaskRecord) -> None:
        """The record reached a final state, with its result or error."""
        ...

    async def get(self, task_id: str) -> TaskRecord | None: ...

    async def find_by_key(
        self,
        key: str,
        *,
        owner: str | None,
        task_type: str,
        completed_since: float | None = None,
    ) -> TaskRecord | None:
        """The record of type `task_type` that `owner` submitted with idempotency
        `key` and that is queued or running, or completed at or after
        `completed_since` (epoch seconds), if there is one.

        Keys are scoped: another owner's task, or a task of another type, with the
        same key is never returned.
        """
        ...

    async def list(self, query: TaskQuery) -> builtins.list[TaskRecord]:
        """Matching records, oldest first."""
        ...

    async def stats(self) -> StoreStats: ...

    async def purge(self, finished_before: float | None = None, keep: int | None = None) -> int:
        """Delete final records finished before that epoch time and/or all but the
        `keep` most recently finished; return how many were deleted."""
        ...

    async def recover(self) -> builtins.list[TaskRecord]:
        """Records a previous run left unfinished, to be queued again at start."""
        ...


@runtime_checkable
class LiveRecordStore(Store, Protocol):
    """An in-process store that keeps the very record objects it is given.

    The runtime mutates those records in place, so it never calls `claim`,
    `update` or `finish` on such a store: it adds with `add_now` and says when a
    record became final with `finish_now`.
    """

    def add_now(self, record: TaskRecord) -> None:
        """`add`, without awaiting."""
        ...

    def finish_now(self, record: TaskRecord) -> None:
        """The record has just reached a final state (called once, at once)."""
        ...


@runtime_checkable
class FinalStateWatcher(Protocol):
    """A store whose `finish` returns before the final state is durable.

    The runtime announces a final state (its event, its waiters) only once the
    store calls back: a caller who saw ``task-completed`` never sees the task run
    again, whatever crashes after.
    """

    def watch_final(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(task_id)`` on the event loop once a final state written by
        `finish` is durable (or can never be written: it was given up)."""
        ...

    async def flush(self) -> None:
        """Wait until every write made so far is durable (or has failed)."""
        ...


@runtime_checkable
class EventBroker(Protocol):
    """A store that keeps a log of events, numbered as they commit.

    Its `add`, `claim`, `update` and `finish` take the event of the change
    (``event=``) and commit both together, so whoever hears of a change can find
    it stored; `log_event` logs an event that comes with no change (progress, a
    batch's). The runtime hears of every event from `deliver_events`, numbered
    (`Event.id`, increasing per store and never reused), once it is committed.
    """

    async def add(self, record: TaskRecord, *, event: Event | None = None) -> None: ...
    async def claim(self, record: TaskRecord, *, event: Event | None = None) -> None: ...
    async def update(self, record: TaskRecord, *, event: Event | None = None) -> None: ...
    async def finish(self, record: TaskRecord, *, event: Event | None = None) -> None: ...

    def deliver_events(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` on the event loop for each event once committed."""
        ...

    def log_event(self, event: Event) -> None:
        """Log an event that changes no task (without waiting for the commit)."""
        ...

    async def events_after(self, after: str | None, *, limit: int = 1000) -> list[Event]:
        """Up to `limit` committed events after the one with id `after` (from the
        oldest kept for None), oldest first; none for an id this log never issued."""
        ...

    async def last_event_id(self) -> str | None:
        """The id of the newest event ever committed, or None."""
        ...

    async def flush(self) -> None:
        """Wait until everything logged so far is committed and delivered."""
        ...


@runtime_checkable
class ClaimsOnAdd(Protocol):
    """A `TaskStore` that can claim for an idle worker in the very step that adds
    tasks, so that a task submitted to an idle worker costs one write, not two.

    Optional: the runtime uses it when a store offers it, and claims with
    `TaskStore.acquire` alone otherwise.
    """

    def claim_on_add(
        self,
        worker_id: str,
        limit: int,
        lease: float,
        *,
        limits: Mapping[str, int] | None,
        aging: float | None,
        now: Callable[[], float],
        deliver: Callable[[list[TaskRecord] | None, frozenset[str]], bool],
        at_once: bool = False,
        key_limits: Mapping[str, int] | None = None,
    ) -> None:
        """Stand by: the next step that adds tasks also runs ``acquire(worker_id,
        limit, lease, limits=, key_limits=, aging=, now=now())`` (it may pick any ready task, not
        only the new ones), once; with `at_once`, the next step, which is taken at
        once (a claim that adds arriving meanwhile join). Replaces a standing claim
        of `worker_id` that no step has taken.

        ``deliver(records, added)`` runs on the event loop once that step is durable
        and before its events are delivered: the claimed records, or None if the
        claim failed; `added` are the ids that step added. Returning False gives the
        records back to the queue (the worker stopped meanwhile).
        """
        ...

    def withdraw_claim_on_add(self, worker_id: str) -> bool:
        """Withdraw a standing claim; False if it already went into a step whose
        `deliver` is still to come."""
        ...


@runtime_checkable
class TaskStore(EventBroker, Protocol):
    """A store that holds claims: any number of workers, in any number of processes,
    share its tasks (see DESIGN.md, "Stores and brokers").

    Reads return copies (value semantics). `acquire` picks and claims tasks in one
    step, each under a lease its worker renews (`extend_leases`); `release` writes
    the outcome only while the lease holds; `reap_expired` re-queues (or fails) the
    tasks of workers that stopped renewing. Every change that has an event logs it
    in the same step, so a final state and its final event are durable together.

    Dependencies: a task added queued with the not-before time
    ``taskbus._record.AWAITING_PARENTS`` waits for the tasks listed in its
    ``metadata["after"]``. The step that adds it, or that makes (by any write) the
    last of those final that was not, clears its not-before time and its
    ``waiting_for``, so it becomes claimable; a parent no longer stored counts as
    final. Nothing else of the store changes (`tests/stores/test_parent_release.py`).
    """

    async def acquire(
        self,
        worker_id: str,
        limit: int,
        lease: float,
        *,
        limits: Mapping[str, int] | None = None,
        types: Collection[str] | None = None,
        aging: float | None = None,
        now: float | None = None,
        key_limits: Mapping[str, int] | None = None,
    ) -> list[TaskRecord]:
        """Claim up to `limit` ready queued tasks (priority, then FIFO; with `aging`,
        waiting raises priority), never more running per type than `limits` allows,
        nor more per concurrency key (``metadata["concurrency_key"]``) of a type than
        `key_limits` allows, across every worker; only of `types` when given. A task
        held back by a limit is skipped, not waited for: later tasks still run."""
        ...

    async def release(
        self, worker_id: str, record: TaskRecord, *, event: Event | None = None
    ) -> bool:
        """Write a final or re-queued record (and `event`) and drop the lease; False,
        writing nothing, if `worker_id` no longer holds it."""
        ...

    def release_soon(
        self,
        worker_id: str,
        record: TaskRecord,
        *,
        event: Event | None = None,
        done: Callable[[bool | None], None],
    ) -> None:
        """`release` without waiting: ``done(released)`` once it is durable (after
        its event is delivered), ``done(None)`` if it failed."""
        ...

    async def extend_leases(
        self, worker_id: str, ids: Collection[str], lease: float, *, now: float | None = None
    ) -> set[str]:
        """Renew the leases `worker_id` holds on `ids`; return the ids it lost."""
        ...

    async def reap_expired(
        self,
        *,
        now: float | None = None,
        workers: Collection[str] = (),
        fail_types: Collection[str] = (),
        alive: Collection[str] = (),
        events_for: Callable[[TaskRecord], Event | None] | None = None,
    ) -> list[TaskRecord]:
        """Re-queue (attempts left) or fail the tasks whose lease expired, or that
        `workers` (known dead) hold, and cancel those whose cancel was requested
        (`request_cancel`); return their new records."""
        ...

    async def cancel_queued(
        self,
        task_id: str,
        reason: str | None,
        *,
        now: float | None = None,
        event_for: Callable[[TaskRecord], Event | None] | None = None,
    ) -> TaskRecord | None:
        """Cancel the task if it is still queued or waiting for input, in one step; its
        record, else None."""
        ...

    async def answer_input(
        self,
        task_id: str,
        key: str,
        answer: InputAnswer,
        *,
        now: float | None = None,
        event_for: Callable[[TaskRecord], Event | None] | None = None,
    ) -> TaskRecord | None:
        """If the task waits for input on the question `key`, record `answer` and queue
        it again (as `taskbus.abc.answer_waiting` changes a record), logging
        ``event_for(record)``, in one step: its new record; else None, changing
        nothing."""
        ...

    def report_progress(self, worker_id: str, record: TaskRecord, event: Event | None) -> None:
        """Write a running task's progress (and `event`) while the lease holds."""
        ...

    def request_cancel(self, task_id: str, reason: str | None) -> None:
        """Ask whichever worker runs the task to cancel it (a `CancelRequested` in the
        log), and note it on the running task, so that reaping cancels the task if
        its worker dies before it stops."""
        ...

    async def next_due(self) -> float | None:
        """The earliest not-before time among queued tasks (epoch seconds)."""
        ...

    async def running_workers(self) -> list[str]:
        """The workers holding leases now."""
        ...

    async def follow(self) -> None:
        """Deliver the events other processes log, until cancelled."""
        ...


@runtime_checkable
class ScheduleStore(Protocol):
    """A store that keeps schedules (`taskbus.Schedule`), shared by every process on it.

    Reads return copies. `fire_schedule` is the one step that makes a fire happen
    once across processes: it moves a due schedule's next fire time on and adds
    the fire's task (and its task-queued event) together, or does nothing.
    """

    async def put_schedule(self, schedule: Schedule, *, keep_paused: bool = False) -> Schedule:
        """Add or replace a schedule, in one step, and return what is stored.

        If one with that id and the same `Schedule.timing` is stored, its
        `next_fire_at`, `last_fire_at`, `last_task_id` and `created_at` are kept (and
        its `paused`, with `keep_paused`): registering a schedule again at start-up
        neither moves nor repeats a fire.
        """
        ...

    async def get_schedule(self, schedule_id: str) -> Schedule | None: ...

    async def list_schedules(self, *, owner: str | None = None) -> builtins.list[Schedule]:
        """Every schedule (of `owner`, if given), by id."""
        ...

    async def remove_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule; False if there was none. Its fired tasks stay."""
        ...

    async def pause_schedule(
        self, schedule_id: str, *, paused: bool, next_fire_at: float | None = None
    ) -> Schedule | None:
        """Set `paused` (and, if given, the next fire time, epoch seconds); None if
        there is no such schedule."""
        ...

    async def due_schedules(self, until: float, *, limit: int = 1000) -> builtins.list[Schedule]:
        """Schedules not paused whose next fire time is at or before `until`,
        earliest first."""
        ...

    async def fire_schedule(
        self,
        schedule_id: str,
        *,
        due: float,
        next_fire_at: float,
        record: TaskRecord | None,
        fired_for: float | None = None,
        event: Event | None = None,
    ) -> bool:
        """If the schedule is stored, not paused, and its next fire time is `due`
        (to the microsecond), move it to `next_fire_at` and add `record` (queued,
        with `event`; its `last_task_id`, and `fired_for` its `last_fire_at`), in one
        atomic step, and return True; otherwise write nothing and return False.

        With no record, the fire time only moves on (fires skipped).
        """
        ...
