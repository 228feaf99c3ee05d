"""`ValueStore`: a store with value semantics, as a networked store (Redis) has.

Rows are the codec's tuples (`row_from_record`) in a dict, in insertion order
(SQLite's rowid); every read decodes a fresh record (`record_from_row`) and
every write stores a new row, so a caller's object is never kept and changing a
returned record never changes the store. Each method is one atomic step (no
await inside it, after one checkpoint). In memory: nothing outlives the object.
"""

from __future__ import annotations

import builtins
import time
from collections import Counter
from collections.abc import Collection, Mapping
from typing import Any

import anyio.lowlevel

from taskbus import StoreError, TaskState, UnstorableValue
from taskbus._record import TaskRecord
from taskbus.stores import StoreStats, TaskQuery
from taskbus.stores._codec import COLUMNS, Row, row_from_record, unstorable_row
from taskbus.stores._codec_read import record_from_row
from taskbus.stores._sqlite_lease import (
    Pick,
    check_ids,
    check_now,
    check_reason,
    check_worker,
    expiry_error,
    lease_end,
)

__all__ = ["ValueStore"]

_AT = {name: index for index, name in enumerate(COLUMNS)}
_FINAL = frozenset(state.value for state in TaskState if state.is_final)


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


class ValueStore:
    """The whole `Store` protocol and the lease methods, on rows kept in a dict."""

    def __init__(self) -> None:
        self._rows: dict[str, Row] = {}
        self._open = False

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

    # -- the runtime's transitions ------------------------------------------------------

    async def add(self, record: TaskRecord) -> None:
        row = row_from_record(record)  # raises UnstorableValue: nothing stored
        await self._step()
        self._rows[record.id] = row

    async def claim(self, record: TaskRecord) -> None:
        await self._put(record)

    async def update(self, record: TaskRecord) -> None:
        await self._put(record)

    async def finish(self, record: TaskRecord) -> None:
        await self._put(record)

    async def _put(self, record: TaskRecord) -> None:
        row = _storable(record)
        await self._step()
        self._rows[record.id] = row

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
        scoped = [
            row
            for row in self._rows.values()
            if (_col(row, "key"), _col(row, "owner"), _col(row, "type")) == (key, owner, task_type)
        ]
        for row in scoped:
            if _col(row, "state") not in _FINAL:
                return record_from_row(row)
        if completed_since is None:
            return None
        done = [
            row
            for row in scoped
            if _col(row, "state") == "completed" and _col(row, "finished_at") >= completed_since
        ]
        return (
            record_from_row(max(done, key=lambda row: _col(row, "finished_at"))) if done else None
        )

    async def list(self, query: TaskQuery) -> builtins.list[TaskRecord]:
        await self._step()
        records = [record_from_row(row) for row in self._rows.values()]
        matches = sorted((r for r in records if query.matches(r)), key=lambda r: r.created_at)
        return matches[query.offset : query.offset + query.limit]

    async def stats(self) -> StoreStats:
        await self._step()
        by_state: Counter[TaskState] = Counter()
        by_type: dict[str, Counter[TaskState]] = {}
        for row in self._rows.values():
            state = TaskState(_col(row, "state"))
            by_state[state] += 1
            by_type.setdefault(_col(row, "type"), Counter())[state] += 1
        return StoreStats(by_state=dict(by_state), by_type={k: dict(v) for k, v in by_type.items()})

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
    ) -> builtins.list[TaskRecord]:
        pick = Pick(worker_id, limit, lease, limits=limits, types=types, aging=aging, now=now)
        await self._step()
        running = Counter(
            _col(row, "type") for row in self._rows.values() if _col(row, "state") == "running"
        )
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
            record.state = TaskState.RUNNING
            record.attempt += 1
            record.started_at = pick.now
            record.not_before = None
            record.worker = pick.worker
            record.lease_until = pick.until
            self._rows[record.id] = row_from_record(record)
            running[record.type] += 1
            picked.append(record)
        return picked

    async def release(self, worker_id: str, record: TaskRecord) -> bool:
        worker = check_worker(worker_id)
        if record.state is TaskState.RUNNING:
            raise ValueError(f"release takes a final or re-queued record, not {record!r}")
        row = _with(_storable(record), worker=None, lease_until=None)
        await self._step()
        if not self._holds(worker, record.id):
            return False
        self._rows[record.id] = row
        return True

    def _holds(self, worker: str, task_id: str) -> bool:
        row = self._rows.get(task_id)
        return row is not None and _col(row, "state") == "running" and _col(row, "worker") == worker

    async def extend_leases(
        self, worker_id: str, ids: Collection[str], lease: float, *, now: float | None = None
    ) -> set[str]:
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
    ) -> builtins.list[TaskRecord]:
        moment = check_now(now)
        await self._step()
        reaped: builtins.list[TaskRecord] = []
        for row in builtins.list(self._rows.values()):
            lease_until = _col(row, "lease_until")
            expired = lease_until is None or lease_until < moment or _col(row, "worker") in workers
            if _col(row, "state") != "running" or not expired:
                continue
            record = record_from_row(row)
            retry = record.attempt < record.max_attempts and record.type not in fail_types
            record.error = expiry_error(record, retry=retry)
            if retry:
                record.state, record.queued_at, record.started_at = TaskState.QUEUED, moment, None
                record.progress = record.current = record.total = record.eta = None
                record.message = None
            else:
                record.state, record.finished_at = TaskState.FAILED, moment
            record.worker = record.lease_until = None
            self._rows[record.id] = row_from_record(record)
            reaped.append(record)
        return reaped

    async def cancel_queued(
        self, task_id: str, reason: str | None, *, now: float | None = None
    ) -> TaskRecord | None:
        reason, moment = check_reason(reason), check_now(now)
        await self._step()
        row = self._rows.get(task_id)
        if row is None or _col(row, "state") != "queued":
            return None
        record = record_from_row(row)
        record.state, record.finished_at, record.cancel_reason = TaskState.CANCELLED, moment, reason
        self._rows[task_id] = _storable(record)
        return record_from_row(self._rows[task_id])  # the reason as stored (escaped)
