"""`ValueStore`: the whole `TaskStore` protocol in memory, with value semantics as a
networked store (Redis) has; the reference of what each method means.

Rows are the codec's tuples (`row_from_record`) in a dict, in insertion order
(SQLite's rowid); every read decodes a fresh record (`record_from_row`) and every
write stores a new row, so a caller's object is never kept and changing a
returned record never changes the store. Each method is one atomic step (one
checkpoint, then no await): a change and the events it logs land together, as
one Lua script writes them.

The event log numbers events 1, 2, 3... (their ids are that text), keeps each as
JSON (`events_after` decodes it anew), and hands the event itself to the
`deliver_events` callback right after its change, in id order, before the call
that logged it returns: the quickest delivery a store can have, so the runtime
must not count on a delay. Rows and log live as long as the object (closing and
opening it again keeps both); one bus at a time uses it.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.lowlevel

from taskbus import Event, Schedule, StoreError, TaskState, UnstorableValue
from taskbus._asking import answer_waiting
from taskbus._events import CancelRequested, stamp
from taskbus._input import InputAnswer
from taskbus._record import AWAITING_PARENTS, TaskRecord
from taskbus._task_keys import concurrency_key_of, key_reason
from taskbus.stores import StoreStats, TaskQuery
from taskbus.stores._codec import COLUMNS, Row, row_from_record, unstorable_row
from taskbus.stores._codec_read import record_from_row
from taskbus.stores._event_codec import event_from_text, event_text
from taskbus.stores._leases import (
    ClaimArgs,
    check_ids,
    check_now,
    check_reason,
    check_worker,
    lease_end,
    settle_expired,
)
from taskbus.stores._schedule_codec import schedule_from, spec_of
from taskbus.stores._schedules_memory import SCHEDULE_TOLERANCE, merge_schedule

__all__ = ["ValueStore"]

logger = logging.getLogger("tests.stores.fake")

_AT = {name: index for index, name in enumerate(COLUMNS)}
_FINAL = frozenset(state.value for state in TaskState if state.is_final)
_PROGRESS = ("progress", "current", "total", "message", "eta")


def _col(row: Row, name: str) -> Any:
    return row[_AT[name]]


def _with(row: Row, **values: Any) -> Row:
    """`row` with some columns replaced."""
    new = list(row)
    for name, value in values.items():
        new[_AT[name]] = value
    return tuple(new)


def _storable(record: TaskRecord) -> Row:
    """The record's row; a value that cannot be stored fails the task (as `finish`)."""
    try:
        return row_from_record(record)
    except UnstorableValue as exc:
        return unstorable_row(record, exc, time.time())


_StoredSchedule = tuple[str, bool, float | None, float | None, str | None, float]


def _schedule_row(schedule: Schedule) -> _StoredSchedule:
    return (
        spec_of(schedule),
        schedule.paused,
        schedule.next_fire,
        None if schedule.last_fire_at is None else schedule.last_fire_at.timestamp(),
        schedule.last_task_id,
        schedule.created_at.timestamp(),
    )


def _schedule_of(row: _StoredSchedule) -> Schedule:
    spec, paused, next_fire_at, last_fire_at, last_task_id, created_at = row
    return schedule_from(
        spec,
        paused=paused,
        next_fire_at=next_fire_at,
        last_fire_at=last_fire_at,
        last_task_id=last_task_id,
        created_at=created_at,
    )


class ValueStore:
    """`TaskStore` (so also `Store` and `EventBroker`) on a dict of rows and a list of
    logged events."""

    def __init__(self) -> None:
        self._rows: dict[str, Row] = {}
        self._open = False
        self._log: builtins.list[tuple[str, str]] = []  # (name, JSON); id = index + 1
        self._deliver: Callable[[Event], None] | None = None
        self._undelivered: deque[Event] = deque()
        self._delivering = False
        #: Children waiting for parents (not-before `AWAITING_PARENTS`).
        self._waiting: set[str] = set()
        #: Schedules as text: id -> (spec JSON, paused, next, last, last task, created).
        self._schedules: dict[str, _StoredSchedule] = {}

    async def _step(self) -> None:
        """Yield once, as a store that awaits I/O does; then act without yielding."""
        await anyio.lowlevel.checkpoint()
        if not self._open:
            raise StoreError(f"{self!r} is not open")

    async def open(self) -> None:
        if self._open:
            raise StoreError(f"{self!r} is already open")
        self._open = True

    async def close(self) -> None:
        self._open = False

    # -- the event log ----------------------------------------------------------------

    def _logs(self, events: Iterable[Event | None]) -> None:
        """Number and keep `events` (None: nothing to log), then deliver them; last in
        a step, so whoever hears of an event finds its change stored. Events logged
        by the callback itself are delivered after the current ones, in id order."""
        for event in events:
            if event is not None:
                self._log.append((event.name, event_text(event)))
                stamp(event, str(len(self._log)))
                self._undelivered.append(event)
        if self._delivering:
            return
        self._delivering = True
        try:
            while self._undelivered:
                event = self._undelivered.popleft()
                if self._deliver is not None:
                    self._deliver(event)
        finally:
            self._delivering = False

    def _lost(self, what: str) -> bool:
        """Whether a write nobody waits for is lost (closed store): it cannot fail its
        caller, so it is logged."""
        if not self._open:
            logger.error("%r is not open: %s is lost", self, what)
        return not self._open

    def deliver_events(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` for each event logged from now on, in id order."""
        self._deliver = callback

    def log_event(self, event: Event) -> None:
        """Log an event that changes no task (progress, a batch's), not waited for."""
        if not self._lost(event.name):
            self._logs([event])

    async def events_after(self, after: str | None, *, limit: int = 1000) -> builtins.list[Event]:
        """Up to `limit` events logged after the one with id `after` ("0" or None: from
        the first), oldest first, decoded anew; none for an id never issued."""
        await self._step()
        start = 0 if after is None else int(after) if after.isascii() and after.isdigit() else -1
        if not 0 <= start <= len(self._log):
            return []
        logged = enumerate(self._log[start : start + limit], start + 1)
        events = (event_from_text(str(number), name, text) for number, (name, text) in logged)
        return [event for event in events if event is not None]

    async def last_event_id(self) -> str | None:
        await self._step()
        return str(len(self._log)) if self._log else None

    async def flush(self) -> None:
        """Nothing to wait for: each step is committed and delivered as it returns."""
        await self._step()

    async def follow(self) -> None:
        """Nothing to poll (one process: the log delivers as it commits); until cancelled."""
        await anyio.sleep_forever()

    def request_cancel(self, task_id: str, reason: str | None) -> None:
        """Log a `CancelRequested`: the bus running the task hears it and cancels it;
        a running task's row keeps the reason, so that reaping cancels it if its
        worker dies first."""
        row = self._rows.get(task_id)
        if row is not None and _col(row, "state") == "running":
            record = record_from_row(row)
            record.cancel_reason = reason if reason is not None else "cancelled"
            self._rows[task_id] = _storable(record)
        now = datetime.now(UTC)
        self.log_event(CancelRequested(task_id=task_id, task_type="", timestamp=now, reason=reason))

    # -- dependencies -------------------------------------------------------------------

    def _settle_waiting(self, added: Row | None = None) -> None:
        """Release the waiting children none of whose parents (``metadata["after"]``)
        is unfinished (a parent gone counts as finished): part of the step that wrote
        (a parent's final state, or the child itself: `added`)."""
        if added is not None and _col(added, "not_before") == AWAITING_PARENTS:
            self._waiting.add(_col(added, "id"))
        for child_id in builtins.list(self._waiting):
            row = self._rows.get(child_id)
            if row is None or _col(row, "state") != "queued":
                self._waiting.discard(child_id)
                continue
            parents = (record_from_row(row).metadata or {}).get("after", [])
            if any(
                (parent := self._rows.get(p)) is not None and _col(parent, "state") not in _FINAL
                for p in parents
            ):
                continue
            self._waiting.discard(child_id)
            self._rows[child_id] = _with(row, not_before=None, waiting_for=None)

    # -- the runtime's transitions ------------------------------------------------------

    async def add(self, record: TaskRecord, *, event: Event | None = None) -> None:
        """Store a new task and log `event`; `UnstorableValue`: nothing is stored."""
        row = row_from_record(record)
        await self._step()
        self._rows[record.id] = row
        self._settle_waiting(row)
        self._logs([event])

    async def claim(self, record: TaskRecord, *, event: Event | None = None) -> None:
        await self._put(record, event)

    async def update(self, record: TaskRecord, *, event: Event | None = None) -> None:
        await self._put(record, event)

    async def finish(self, record: TaskRecord, *, event: Event | None = None) -> None:
        await self._put(record, event)

    async def _put(self, record: TaskRecord, event: Event | None) -> None:
        """Overwrite the row without a lease check (a single process's writes)."""
        row = _storable(record)
        await self._step()
        self._rows[record.id] = row
        self._settle_waiting()
        self._logs([event])

    # -- reads ----------------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskRecord | None:
        await self._step()
        row = self._rows.get(task_id)
        return None if row is None else record_from_row(row)

    async def find_by_key(
        self,
        key: str,
        *,
        owner: str | None,
        task_type: str,
        completed_since: float | None = None,
    ) -> TaskRecord | None:
        await self._step()
        scope = (key, owner, task_type)
        rows = [
            r
            for r in self._rows.values()
            if (_col(r, "key"), _col(r, "owner"), _col(r, "type")) == scope
        ]
        unfinished = [row for row in rows if _col(row, "state") not in _FINAL]
        if unfinished or completed_since is None:
            return record_from_row(unfinished[0]) if unfinished else None
        done = [
            r
            for r in rows
            if _col(r, "state") == "completed" and _col(r, "finished_at") >= completed_since
        ]
        return record_from_row(max(done, key=lambda r: _col(r, "finished_at"))) if done else None

    async def list(self, query: TaskQuery) -> builtins.list[TaskRecord]:
        await self._step()
        records = [record_from_row(row) for row in self._rows.values()]
        matches = sorted((r for r in records if query.matches(r)), key=lambda r: r.created_at)
        if query.newest_first:
            matches.reverse()
        return matches[query.offset : query.offset + query.limit]

    async def stats(self) -> StoreStats:
        await self._step()
        by_state: Counter[TaskState] = Counter()
        by_type: dict[str, Counter[TaskState]] = {}
        queued: dict[str, Counter[int]] = {}
        for row in self._rows.values():
            state = TaskState(_col(row, "state"))
            by_state[state] += 1
            by_type.setdefault(_col(row, "type"), Counter())[state] += 1
            if state is TaskState.QUEUED:
                queued.setdefault(_col(row, "type"), Counter())[_col(row, "priority")] += 1
        return StoreStats(
            by_state=dict(by_state),
            by_type={k: dict(v) for k, v in by_type.items()},
            queued_by_priority={k: dict(v) for k, v in queued.items()},
        )

    async def purge(self, finished_before: float | None = None, keep: int | None = None) -> int:
        await self._step()
        final = [
            row
            for row in self._rows.values()
            if _col(row, "state") in _FINAL and _col(row, "finished_at") is not None
        ]
        final.sort(key=lambda row: _col(row, "finished_at"), reverse=True)
        doomed = [
            _col(row, "id")
            for rank, row in enumerate(final)
            if (keep is not None and rank >= keep)
            or (finished_before is not None and _col(row, "finished_at") < finished_before)
        ]
        for task_id in doomed:
            del self._rows[task_id]
        return len(doomed)

    async def recover(self) -> builtins.list[TaskRecord]:
        """Queued and running tasks, most urgent first (as a store shared by processes)."""
        await self._step()
        rows = [row for row in self._rows.values() if _col(row, "state") not in _FINAL]
        rows.sort(key=lambda row: (-_col(row, "priority"), _col(row, "created_at")))
        return [record_from_row(row) for row in rows]

    async def next_due(self) -> float | None:
        """The earliest not-before time among queued tasks (epoch seconds), if any."""
        await self._step()
        rows = self._rows.values()
        due = [_col(r, "not_before") for r in rows if _col(r, "state") == "queued"]
        return min((when for when in due if when is not None), default=None)

    async def running_workers(self) -> builtins.list[str]:
        """The workers holding leases, expired or not (reaping decides)."""
        await self._step()
        rows = [row for row in self._rows.values() if _col(row, "state") == "running"]
        return sorted({_col(r, "worker") for r in rows if _col(r, "lease_until") is not None})

    # -- leases ---------------------------------------------------------------------------

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
    ) -> builtins.list[TaskRecord]:
        """Claim up to `limit` queued tasks whose not-before has come: priority 10
        first, then queued_at, then insertion (with `aging`, by ``queued_at - priority
        * aging``); a type with `limits` of it running (any worker) is skipped, not
        waited for, and so is a task whose concurrency key has `key_limits` of its type
        running. Each becomes running, attempt counted, leased to `worker_id` until
        ``now + lease``. Logs nothing: task-started comes as the handler starts."""
        pick = ClaimArgs(
            worker_id,
            limit,
            lease,
            limits=limits,
            types=types,
            aging=aging,
            now=now,
            key_limits=key_limits,
        )
        await self._step()
        running_rows = [
            record_from_row(row) for row in self._rows.values() if _col(row, "state") == "running"
        ]
        running = Counter(record.type for record in running_rows)
        per_key = Counter((record.type, concurrency_key_of(record)) for record in running_rows)
        ready = [
            (rank, record_from_row(row))
            for rank, row in enumerate(self._rows.values())
            if _col(row, "state") == "queued"
            and (_col(row, "not_before") is None or _col(row, "not_before") <= pick.now)
            and (pick.types is None or _col(row, "type") in pick.types)
        ]
        if pick.aging is None:
            ready.sort(key=lambda item: (-item[1].priority, item[1].queued_at, item[0]))
        else:
            aging = pick.aging
            ready.sort(key=lambda item: (item[1].queued_at - item[1].priority * aging, item[0]))
        picked: builtins.list[TaskRecord] = []
        for _, record in ready:
            if len(picked) == pick.limit:
                break
            most = pick.limits.get(record.type)
            if most is not None and running[record.type] >= most:
                continue
            pair = (record.type, concurrency_key_of(record))
            per_key_most = pick.key_limits.get(record.type)
            if pair[1] is not None and per_key_most is not None and per_key[pair] >= per_key_most:
                record.waiting_for = key_reason(per_key_most, pair[1])
                self._rows[record.id] = row_from_record(record)
                continue
            per_key[pair] += 1
            record.state, record.attempt, record.started_at = (
                TaskState.RUNNING,
                record.attempt + 1,
                pick.now,
            )
            record.not_before, record.worker, record.lease_until = None, pick.worker, pick.until
            record.waiting_for = None
            self._rows[record.id] = row_from_record(record)
            running[record.type] += 1
            picked.append(record)
        return picked

    async def release(
        self, worker_id: str, record: TaskRecord, *, event: Event | None = None
    ) -> bool:
        """Write a final or re-queued record, lease dropped, and log `event`, if
        `worker_id` holds the task's lease; else write and log nothing: False."""
        worker = check_worker(worker_id)
        if record.state is TaskState.RUNNING:
            raise ValueError(f"release takes a final or re-queued record, not {record!r}")
        row = _with(_storable(record), worker=None, lease_until=None)
        await self._step()
        if not self._holds(worker, record.id):
            return False
        self._rows[record.id] = row
        self._settle_waiting()
        self._logs([event])
        return True

    def release_soon(
        self,
        worker_id: str,
        record: TaskRecord,
        *,
        event: Event | None = None,
        done: Callable[[bool | None], None],
    ) -> None:
        """`release` at once, then ``done(released)``: the fastest a store can be."""
        worker = check_worker(worker_id)
        if record.state is TaskState.RUNNING:
            raise ValueError(f"release takes a final or re-queued record, not {record!r}")
        row = _with(_storable(record), worker=None, lease_until=None)
        released = self._holds(worker, record.id)
        if released:
            self._rows[record.id] = row
            self._settle_waiting()
            self._logs([event])
        done(released)

    def _holds(self, worker: str, task_id: str) -> bool:
        row = self._rows.get(task_id)
        return row is not None and _col(row, "state") == "running" and _col(row, "worker") == worker

    async def extend_leases(
        self, worker_id: str, ids: Collection[str], lease: float, *, now: float | None = None
    ) -> set[str]:
        """Move to ``now + lease`` the leases `worker_id` holds on `ids`; return the
        ids it holds none on (reaped, taken over, released, unknown)."""
        worker, wanted = check_worker(worker_id), check_ids(ids)
        until = lease_end(check_now(now), lease)
        await self._step()
        lost: set[str] = set()
        for task_id in wanted:
            if self._holds(worker, task_id):
                self._rows[task_id] = _with(self._rows[task_id], lease_until=until)
            else:
                lost.add(task_id)
        return lost

    async def reap_expired(
        self,
        *,
        now: float | None = None,
        workers: Collection[str] = (),
        fail_types: Collection[str] = (),
        alive: Collection[str] = (),
        events_for: Callable[[TaskRecord], Event | None] | None = None,
    ) -> builtins.list[TaskRecord]:
        """Settle the running tasks whose lease ended before `now`, that hold none, or
        whose worker is in `workers` (dead), unless it is in `alive`: queued again
        (progress cleared) while attempts remain and the type is not in `fail_types`,
        else failed, with `expiry_error`; cancelled if its cancel was requested. Logs
        ``events_for(record)`` with each; returns the new records."""
        moment = check_now(now)
        await self._step()
        reaped: builtins.list[TaskRecord] = []
        for row in builtins.list(self._rows.values()):
            lease_until, worker = _col(row, "lease_until"), _col(row, "worker")
            expired = lease_until is None or lease_until < moment or worker in workers
            if _col(row, "state") != "running" or not expired or worker in alive:
                continue
            record = record_from_row(row)
            settle_expired(record, moment, retry_allowed=record.type not in fail_types)
            self._rows[record.id] = row_from_record(record)
            reaped.append(record)
        self._settle_waiting()
        self._logs(events_for(record) for record in reaped if events_for is not None)
        return reaped

    async def cancel_queued(
        self,
        task_id: str,
        reason: str | None,
        *,
        now: float | None = None,
        event_for: Callable[[TaskRecord], Event | None] | None = None,
    ) -> TaskRecord | None:
        """Cancel the task if it is queued or waiting for input (nothing else is
        touched), logging ``event_for(record)`` with it: its new record, else None."""
        reason, moment = check_reason(reason), check_now(now)
        await self._step()
        row = self._rows.get(task_id)
        if row is None or _col(row, "state") not in ("queued", "waiting"):
            return None
        record = record_from_row(row)
        record.state, record.finished_at, record.cancel_reason = TaskState.CANCELLED, moment, reason
        self._rows[task_id] = _storable(record)
        self._settle_waiting()
        cancelled = record_from_row(self._rows[task_id])  # the reason as stored (escaped)
        self._logs([event_for(cancelled) if event_for is not None else None])
        return cancelled

    async def answer_input(
        self,
        task_id: str,
        key: str,
        answer: InputAnswer,
        *,
        now: float | None = None,
        event_for: Callable[[TaskRecord], Event | None] | None = None,
    ) -> TaskRecord | None:
        """Record `answer` to the pending question `key` of a waiting task and queue it
        again (`answer_waiting`), logging ``event_for(record)``: its new record, else
        None (not waiting, or for another question)."""
        moment = check_now(now)
        await self._step()
        row = self._rows.get(task_id)
        if row is None:
            return None
        record = record_from_row(row)
        if not answer_waiting(record, key, answer, moment):
            return None
        self._rows[task_id] = row_from_record(record)
        self._logs([event_for(record) if event_for is not None else None])
        return record_from_row(self._rows[task_id])

    def report_progress(self, worker_id: str, record: TaskRecord, event: Event | None) -> None:
        """Write the progress fields of `record` (`_PROGRESS`) and log `event` if
        `worker_id` holds the task's lease; else nothing. Not waited for."""
        if self._lost(f"progress of {record.id}") or not self._holds(worker_id, record.id):
            return
        stored = record_from_row(self._rows[record.id])
        for name in _PROGRESS:
            setattr(stored, name, getattr(record, name))
        self._rows[record.id] = _storable(stored)
        self._logs([event])

    # -- schedules (`ScheduleStore`) ------------------------------------------------------

    async def put_schedule(self, schedule: Schedule, *, keep_paused: bool = False) -> Schedule:
        await self._step()
        old = self._schedules.get(schedule.id)
        stored = merge_schedule(
            None if old is None else _schedule_of(old), schedule, keep_paused=keep_paused
        )
        self._schedules[schedule.id] = _schedule_row(stored)
        return _schedule_of(self._schedules[schedule.id])

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        await self._step()
        row = self._schedules.get(schedule_id)
        return None if row is None else _schedule_of(row)

    async def list_schedules(self, *, owner: str | None = None) -> builtins.list[Schedule]:
        await self._step()
        found = [_schedule_of(row) for _, row in sorted(self._schedules.items())]
        return [s for s in found if owner is None or s.owner == owner]

    async def remove_schedule(self, schedule_id: str) -> bool:
        await self._step()
        return self._schedules.pop(schedule_id, None) is not None

    async def pause_schedule(
        self, schedule_id: str, *, paused: bool, next_fire_at: float | None = None
    ) -> Schedule | None:
        await self._step()
        row = self._schedules.get(schedule_id)
        if row is None:
            return None
        spec, _, old_next, last, last_task, created = row
        new_next = old_next if next_fire_at is None else next_fire_at
        self._schedules[schedule_id] = (spec, paused, new_next, last, last_task, created)
        return _schedule_of(self._schedules[schedule_id])

    async def due_schedules(self, until: float, *, limit: int = 1000) -> builtins.list[Schedule]:
        await self._step()
        due = sorted(
            (row[2], schedule_id)
            for schedule_id, row in self._schedules.items()
            if not row[1] and row[2] is not None and row[2] <= until
        )
        return [_schedule_of(self._schedules[schedule_id]) for _, schedule_id in due[:limit]]

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
        row = None if record is None else row_from_record(record)
        await self._step()
        stored = self._schedules.get(schedule_id)
        if (
            stored is None
            or stored[1]
            or stored[2] is None
            or abs(stored[2] - due) > SCHEDULE_TOLERANCE
        ):
            return False
        spec, paused, _, last, last_task, created = stored
        if record is not None and row is not None:
            last, last_task = fired_for, record.id
            self._rows[record.id] = row
        self._schedules[schedule_id] = (spec, paused, next_fire_at, last, last_task, created)
        self._logs([event])
        return True
