"""Taking in submitted tasks (one, under a key, or a batch): check them, build their
records, store, announce and queue them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from ._batch import BatchTracker, TaskBatch
from ._clock import Clock
from ._dependencies import (
    AWAITING_PARENTS,
    ParentWaits,
    RecentTasks,
    check_reserved,
    mark_waiting,
    parents_of,
    unknown_parent,
)
from ._errors import BusNotRunning, StoreError
from ._executor import TaskExecutor
from ._leasing import LeaseKeeper
from ._lifecycle import Lifecycle
from ._queue import TaskQueue
from ._record import TaskRecord, new_task_id
from ._schedule import Schedule
from ._submission import prepare_batch
from ._tracing import Tracing
from ._validation import check_delay, check_metadata, check_priority, check_text, delay_until
from .stores import LiveRecordStore, Store
from .stores._base import KeyInUse, ScheduleStore

if TYPE_CHECKING:
    from ._registry import TaskDefinition, TaskRegistry

__all__ = ["Intake"]

_NOT_RUNNING = "the bus is not running: submit inside `async with bus:`"


class Intake:
    """Turns submissions into stored, announced and queued tasks for one bus."""

    def __init__(
        self,
        *,
        registry: TaskRegistry,
        store: Store,
        lifecycle: Lifecycle,
        queue: TaskQueue,
        executor: TaskExecutor,
        clock: Clock,
        leases: LeaseKeeper | None,
        batches: BatchTracker,
    ) -> None:
        self._registry = registry
        self._store = store
        self._live_store = store if isinstance(store, LiveRecordStore) else None
        self._lifecycle = lifecycle
        self._queue = queue
        self._executor = executor
        self._clock = clock
        self._now = clock.now
        self._leases = leases
        self._batches = batches
        self._keys_in_flight: dict[tuple[str | None, str, str], anyio.Event] = {}
        #: Children held out of this process's queue until their parents are final.
        self.waits = ParentWaits(self._parents_done, self._watch_finals)
        #: On a store processes share: the tasks submitted here lately (`link_parents`).
        self._recent = RecentTasks()
        #: Whether submissions are taken: True between start and the beginning of shutdown.
        self.open = False
        #: Adds the submitting span's context to each task (`taskbus.otel`).
        self.tracing: Tracing | None = None

    def take(
        self,
        task_type: str,
        input: Any,
        priority: int | None,
        owner: str | None,
        metadata: dict[str, Any] | None,
        delay: float | None,
        key: str | None,
        run_at: datetime | None = None,
        after: list[str] | None = None,
    ) -> tuple[TaskRecord, TaskDefinition[Any, Any], bool]:
        """Check a submission and build its record; raises for bad input, before anything
        is stored. Without a key or parents (`after`), on a store in this process, also
        store, announce and queue it at once (the hot path: no coroutine) and say so;
        otherwise the caller goes on with `link_parents`, `add_keyed` or `enqueue`."""
        if not self.open:
            raise BusNotRunning(_NOT_RUNNING)
        definition = self._registry.find(task_type)
        if definition is None:
            definition = self._registry.get(task_type)  # raises UnknownTaskType
        value = (
            None
            if input is None and not definition.takes_input
            else definition.validate_input(input)
        )
        priority = definition.default_priority if priority is None else check_priority(priority)
        now = self._now()
        if delay is not None:
            delay = check_delay(delay) or None
        if run_at is not None:
            delay = delay_until(run_at, now, delay) or None
        not_before = now + delay if delay else None
        if metadata is not None:
            metadata = check_metadata(metadata)
            check_reserved(metadata)
        if owner is not None:
            check_text(owner, "owner")
        if key is not None:
            check_text(key, "key")
        record = self._record(
            task_type, definition, value, priority, now, owner, metadata, key, not_before
        )
        live = self._live_store
        if key is not None or live is None or after:
            return record, definition, False
        live.add_now(record)
        self._lifecycle.announce_queued(record, definition)
        self._queue.push(record, None, delay)
        if not_before is None:
            self._executor.notify()
        else:
            self._executor.schedule_delayed()
        return record, definition, True

    async def add_keyed(
        self, record: TaskRecord, definition: TaskDefinition[Any, Any], key: str
    ) -> TaskRecord:
        """The queued or running task submitted with `key`, else `record`, enqueued."""
        # Keys are scoped by (owner, type, key): another owner's task, or a task of
        # another type, never answers for this key. One submit per scope at a time
        # in this bus: a second one waits, then finds the first one's task instead
        # of storing a duplicate.
        scope = (record.owner, record.type, key)
        while (busy := self._keys_in_flight.get(scope)) is not None:
            await busy.wait()
        self._keys_in_flight[scope] = done = anyio.Event()
        try:
            ttl = definition.options.key_ttl
            existing = await self._store.find_by_key(
                key,
                owner=record.owner,
                task_type=record.type,
                completed_since=record.created_at - ttl if ttl else None,
            )
            if existing is not None:
                return existing
            try:
                await self.enqueue(record, definition)
            except KeyInUse as taken:  # another process submitted it meanwhile
                holder = await self._store.get(taken.task_id)
                if holder is None:
                    raise StoreError(f"{taken}, which is gone; submit again") from None
                return holder
            return record
        finally:
            del self._keys_in_flight[scope]
            done.set()

    async def link_parents(self, record: TaskRecord, parents: list[str], policy: str) -> None:
        """Check that the parents exist and are the child's owner's (else
        `InvalidSubmission`, nothing stored) and note them on the child, held back
        while one is unfinished.

        On a store processes share, the child is always stored held back: the step
        that adds it releases it at once if its parents are final by then (a parent
        may end in another process meanwhile), so their state is not read here, and
        a parent submitted by this bus lately is known without a read.
        """
        if self._leases is not None:
            await self._recent.check(self._store, parents, record.owner)
            mark_waiting(record, parents, policy, True)
            return
        pending = False
        for task_id in parents:
            parent = await self._store.get(task_id)
            if parent is None or parent.owner != record.owner:
                raise unknown_parent(task_id)
            pending = pending or not parent.state.is_final
        mark_waiting(record, parents, policy, pending)

    async def enqueue(self, record: TaskRecord, definition: TaskDefinition[Any, Any]) -> None:
        """Store the new record (durably, if the store is), announce it, queue it."""
        if self._leases is not None:  # the store holds the queue: any worker claims it
            # A child waiting for parents is released by the store itself, in the step
            # that makes its last parent final (see `_dependencies`).
            await self._lifecycle.queued(record, definition)
            self._recent.add(record)
            if self._lifecycle.log is None:  # else its task-queued event wakes the claims
                self._leases.wake()
            return
        if self._live_store is not None:
            self._live_store.add_now(record)
            self._lifecycle.announce_queued(record, definition)
        else:
            await self._lifecycle.queued(record, definition)
        if record.not_before == AWAITING_PARENTS:
            # Held out of the queue while a parent is unfinished (read again: one may
            # have ended since `link_parents`).
            unfinished: list[str] = []
            for parent_id in parents_of(record):
                parent = await self._store.get(parent_id)
                if parent is not None and not parent.state.is_final:
                    unfinished.append(parent_id)
            if unfinished:
                self.waits.hold(record, unfinished)
                return
            record.not_before = record.waiting_for = None
        self._push(record)

    def _push(self, record: TaskRecord) -> None:
        """Put a stored record in this process's queue and wake a worker, or the
        timer of delayed tasks."""
        not_before = record.not_before
        wait = None if not_before is None else not_before - record.created_at
        self._queue.push(record, self._clock.monotonic(), wait)
        if not_before is None:
            self._executor.notify()
        else:
            self._executor.schedule_delayed()

    def _watch_finals(self, callback: Callable[[str], None] | None) -> None:
        self._lifecycle.on_final = callback

    def _parents_done(self, record: TaskRecord) -> None:
        """The last parent of a held child is final: it runs now."""
        self._queue.push(record, self._clock.monotonic(), None)
        self._executor.notify()

    def scheduled(
        self, schedule: Schedule, fires_for: float, not_before: float | None
    ) -> tuple[TaskRecord, TaskDefinition[Any, Any]]:
        """The record of one fire of `schedule`: its input checked again (the type may
        have changed since it was stored); raises as `take` does."""
        definition = self._registry.get(schedule.task_type)
        value = (
            None
            if schedule.input is None and not definition.takes_input
            else definition.validate_input(schedule.input)
        )
        priority = definition.default_priority if schedule.priority is None else schedule.priority
        metadata = {
            **schedule.metadata,
            "schedule_id": schedule.id,
            "scheduled_for": datetime.fromtimestamp(fires_for, UTC).isoformat(),
        }
        now = self._now()
        record = self._record(
            schedule.task_type,
            definition,
            value,
            priority,
            now,
            schedule.owner,
            metadata,
            None,
            not_before,
        )
        return record, definition

    def _record(
        self,
        task_type: str,
        definition: TaskDefinition[Any, Any],
        value: Any,
        priority: int,
        now: float,
        owner: str | None,
        metadata: dict[str, Any] | None,
        key: str | None,
        not_before: float | None,
    ) -> TaskRecord:
        """A new queued record of `task_type` (values checked), its metadata with the
        task's concurrency and rate keys and, when tracing, the current trace."""
        if definition.keyed:
            metadata = {**(metadata or {}), **definition.task_keys(owner, value)} or None
        if self.tracing is not None:
            metadata = self.tracing.inject(metadata)
        return TaskRecord(
            new_task_id(),
            task_type,
            value,
            priority,
            now,
            definition.max_attempts,
            owner,
            metadata,
            key,
            not_before,
        )

    async def add_fire(
        self,
        store: ScheduleStore,
        schedule_id: str,
        *,
        due: float,
        next_fire_at: float,
        fired: tuple[TaskRecord, TaskDefinition[Any, Any]] | None,
        fires_for: float | None,
    ) -> bool:
        """Claim one fire of a schedule and add its task in one step of the store
        (`ScheduleStore.fire_schedule`); then announce and queue the task as `enqueue`
        does. False: the fire was not due any more (another process fired it)."""
        if fired is None:
            return await store.fire_schedule(
                schedule_id, due=due, next_fire_at=next_fire_at, record=None
            )
        record, definition = fired
        lifecycle = self._lifecycle
        logs = lifecycle.log is not None
        claimed = await store.fire_schedule(
            schedule_id,
            due=due,
            next_fire_at=next_fire_at,
            record=record,
            fired_for=fires_for,
            event=lifecycle.queued_event(record, definition) if logs else None,
        )
        if not claimed:
            return False
        if not logs:
            lifecycle.announce_queued(record, definition)
        if self._leases is not None:  # the store holds the queue
            if not logs:  # else its task-queued event wakes the claims
                self._leases.wake()
            return True
        self._push(record)
        return True

    async def add_batch(
        self,
        items: Iterable[tuple[str, Any]],
        *,
        priority: int | None,
        owner: str | None,
        metadata: dict[str, Any] | None,
    ) -> TaskBatch:
        """Check every item, then enqueue them all as one tracked batch."""
        if not self.open:
            raise BusNotRunning(_NOT_RUNNING)
        items = list(items)
        if self.tracing is None:
            return await self._add_batch(items, priority, owner, metadata)
        with self.tracing.submitting(None, len(items)):  # one span for the batch
            return await self._add_batch(items, priority, owner, metadata)

    async def _add_batch(
        self,
        items: list[tuple[str, Any]],
        priority: int | None,
        owner: str | None,
        metadata: dict[str, Any] | None,
    ) -> TaskBatch:
        prepared = prepare_batch(
            self._registry,
            items,
            now=self._now(),
            priority=priority,
            owner=owner,
            metadata=metadata,
        )
        records = [record for record, _ in prepared]
        if self.tracing is not None:
            for record in records:
                record.metadata = self.tracing.inject(record.metadata)
        batch = self._batches.new(records)
        self._batches.track(batch, records)  # before any task can finish
        stored = 0
        try:
            for record, definition in prepared:
                await self.enqueue(record, definition)
                stored += 1
        except BaseException:
            self._batches.leave_out(batch, records[stored:])  # they were never stored
            raise
        return batch
