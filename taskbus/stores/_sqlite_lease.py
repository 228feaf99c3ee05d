"""The SQL of leases: claims held by the store, so that several workers can share it.

Every function takes the writer's connection and runs inside its transaction
(``BEGIN IMMEDIATE``, see `SqliteStore._in_writer`): a pick and its claims, or a
check and its write, are one step for every connection to the file.

A lease is ``(worker, lease_until)`` on a running row. A running row whose
lease_until is NULL was claimed by the single-process runtime (`Store.claim`):
it never expires. The argument checks (`check_*`, `Pick`) are shared with every
store that implements leases.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Collection, Iterable
from typing import Any

from .._asking import answer_waiting
from .._input import InputAnswer
from .._record import TaskRecord
from .._states import TaskState
from .._task_keys import concurrency_key_of, key_reason
from ._base import CorruptRecord
from ._codec import COLUMNS, Row, escape_text, row_from_record, salvage_row
from ._codec_read import record_from_row
from ._leases import (
    ClaimArgs,
    expiry_error,
)
from ._sqlite_schema import CONCURRENCY_KEY_SQL, UPSERT

__all__ = [
    "Pick",
    "answer",
    "cancel_queued",
    "extend",
    "give_back",
    "mark_cancel_requested",
    "next_due",
    "progress",
    "reap",
    "release",
    "running_workers",
]

#: What a row may change once added: `release` writes only these (every index on
#: a column it leaves alone, such as type, owner or created_at, is not touched).
_SETTLED = (
    "state",
    "attempt",
    "queued_at",
    "not_before",
    "started_at",
    "finished_at",
    "progress",
    "current",
    "total",
    "message",
    "eta",
    "result",
    "error",
    "cancel_reason",
    "waiting_for",
    "asks",
)
_SETTLED_AT = tuple(COLUMNS.index(name) for name in _SETTLED)

_SELECT = f"SELECT rowid, {', '.join(COLUMNS)} FROM tasks"
# Without statistics the planner prefers (state, created_at) and sorts every queued
# (or running) row; the partial indexes give rows in order and stop at the limit.
_IN_ORDER = f"{_SELECT} INDEXED BY tasks_queue"
_BY_LEASE = f"{_SELECT} INDEXED BY tasks_leases"
_RELEASE = (
    f"UPDATE tasks SET {', '.join(f'{name} = ?' for name in _SETTLED)}, worker = NULL, "
    "lease_until = NULL WHERE id = ? AND state = 'running' AND worker = ?"
)
_CLAIM = (
    "UPDATE tasks SET state = 'running', attempt = attempt + 1, started_at = ?, "
    "not_before = NULL, waiting_for = NULL, worker = ?, lease_until = ? WHERE rowid = ?"
)
_REQUEUE = (
    "UPDATE tasks SET state = 'queued', queued_at = ?, started_at = NULL, worker = NULL, "
    "lease_until = NULL, progress = NULL, current = NULL, total = NULL, message = NULL, "
    "eta = NULL, error = ? WHERE rowid = ?"
)
_FAIL = (
    "UPDATE tasks SET state = 'failed', finished_at = ?, worker = NULL, lease_until = NULL, "
    "error = ? WHERE rowid = ?"
)
_CANCEL = (
    "UPDATE tasks SET state = 'cancelled', finished_at = ?, worker = NULL, lease_until = NULL "
    "WHERE rowid = ?"
)
_CHUNK = 500  # ids per statement, well under SQLite's limit on parameters

Picked = tuple[list[TaskRecord], list[CorruptRecord]]


# -- acquire --------------------------------------------------------------------------


class Pick(ClaimArgs):
    """The arguments of one `acquire`, checked; `run` picks and claims in one go.

    Order: priority (10 first), then queued_at, then insertion; with `aging`, by
    ``queued_at - priority * aging``. A type at its limit in `limits` (counted over
    every running row of that type) is skipped, not waited for.
    """

    __slots__ = ()

    def candidates(self, blocked: set[str]) -> frozenset[str] | None:
        """The types that may still be picked (None: any type not blocked)."""
        return None if self.types is None else self.types - blocked

    def run(self, conn: sqlite3.Connection) -> Picked:
        """Claim the picked tasks; returns (records, corrupt rows met and settled)."""
        picked: list[TaskRecord] = []
        corrupt: list[CorruptRecord] = []
        running = self._running(conn)
        blocked = {name for name, most in self.limits.items() if running.get(name, 0) >= most}
        keys = _KeyCounts(conn, self.key_limits)
        unsettled: list[int] = []  # rowids of corrupt rows without a usable id
        while len(picked) < self.limit:
            wanted = self.limit - len(picked)
            allowed = self.candidates(blocked)
            if allowed is not None and not allowed:
                break
            rows = _fetch(conn, *self._query(allowed, blocked, unsettled, wanted, keys.full))
            newly_blocked = False
            for rowid, *values in rows:
                task_type = values[1]
                if task_type in blocked:  # reached its limit earlier in this page
                    newly_blocked = True
                    break
                try:
                    record = record_from_row(tuple(values))
                except CorruptRecord as exc:
                    corrupt.append(exc)
                    if not _settle(conn, exc, self.now):
                        unsettled.append(rowid)
                    continue
                if not keys.take(record):  # its key is full: say so, and look further
                    keys.label(conn, rowid, record)
                    continue
                conn.execute(_CLAIM, (self.now, self.worker, self.until, rowid))
                record.state = TaskState.RUNNING
                record.attempt += 1
                record.started_at = self.now
                record.not_before = record.waiting_for = None
                record.worker = self.worker
                record.lease_until = self.until
                picked.append(record)
                count = running[task_type] = running.get(task_type, 0) + 1
                if task_type in self.limits and count >= self.limits[task_type]:
                    blocked.add(task_type)
            if not newly_blocked and len(rows) < wanted:
                break  # nothing more is ready
        return picked, corrupt

    def _running(self, conn: sqlite3.Connection) -> dict[str, int]:
        if not self.limits:
            return {}
        counts: dict[str, int] = {}
        names = list(self.limits)
        for start in range(0, len(names), _CHUNK):
            chunk = names[start : start + _CHUNK]
            counts.update(
                conn.execute(
                    f"SELECT type, count(*) FROM tasks WHERE state = 'running' "
                    f"AND type IN ({_marks(chunk)}) GROUP BY type",
                    chunk,
                ).fetchall()
            )
        return counts

    def _query(
        self,
        allowed: frozenset[str] | None,
        blocked: set[str],
        unsettled: list[int],
        wanted: int,
        full_keys: set[str],
    ) -> tuple[str, list[Any]]:
        clauses = ["state = 'queued'", "(not_before IS NULL OR not_before <= ?)"]
        params: list[Any] = [self.now]
        if full_keys:  # tasks of (type, key) pairs at their limit, already labelled so
            clauses.append(
                f"NOT (waiting_for IS NOT NULL AND coalesce(type || char(31) || "
                f"{CONCURRENCY_KEY_SQL}, '') IN ({_marks(full_keys)}))"
            )
            params.extend(full_keys)
        if allowed is not None:
            clauses.append(f"type IN ({_marks(allowed)})")
            params.extend(allowed)
        elif blocked:
            clauses.append(f"type NOT IN ({_marks(blocked)})")
            params.extend(blocked)
        if unsettled:
            clauses.append(f"rowid NOT IN ({_marks(unsettled)})")
            params.extend(unsettled)
        select, order = _IN_ORDER, "priority DESC, queued_at, rowid"
        if self.aging is not None:  # an order no index holds: sorted
            select, order = _SELECT, "queued_at - priority * ?, rowid"
            params.append(self.aging)
        params.append(wanted)
        return f"{select} WHERE {' AND '.join(clauses)} ORDER BY {order} LIMIT ?", params


class _KeyCounts:
    """Running tasks per (type, concurrency key) for the types `key_limits` names,
    counted in the claim's transaction (the index ``tasks_running_keys`` serves it)."""

    __slots__ = ("full", "limits", "running")

    def __init__(self, conn: sqlite3.Connection, key_limits: dict[str, int]) -> None:
        self.limits = key_limits
        self.running: dict[str, int] = {}
        #: ``type + "\x1f" + key`` of the keys at their limit, as the query excludes them.
        self.full: set[str] = set()
        names = list(key_limits)
        for start in range(0, len(names), _CHUNK):
            chunk = names[start : start + _CHUNK]
            rows = conn.execute(
                f"SELECT type, {CONCURRENCY_KEY_SQL} AS k, count(*) FROM tasks "
                f"INDEXED BY tasks_running_keys WHERE state = 'running' "
                f"AND type IN ({_marks(chunk)}) AND k IS NOT NULL GROUP BY type, k",
                chunk,
            ).fetchall()
            for task_type, key, count in rows:
                self._count(task_type, key, count)

    def _count(self, task_type: str, key: str, count: int) -> None:
        pair = f"{task_type}\x1f{key}"
        self.running[pair] = count
        if count >= self.limits[task_type]:
            self.full.add(pair)

    def label(self, conn: sqlite3.Connection, rowid: int, record: TaskRecord) -> None:
        """Note on a task held back by its full key why it waits (``waiting_for``)."""
        key = concurrency_key_of(record)
        assert key is not None
        reason = key_reason(self.limits[record.type], key)
        conn.execute("UPDATE tasks SET waiting_for = ? WHERE rowid = ?", (reason, rowid))

    def take(self, record: TaskRecord) -> bool:
        """Count `record` as running under its key; False if its key is full."""
        most = self.limits.get(record.type)
        if most is None or (key := concurrency_key_of(record)) is None:
            return True
        pair = f"{record.type}\x1f{key}"
        if pair in self.full:
            return False
        self._count(record.type, key, self.running.get(pair, 0) + 1)
        return True


# -- release, extend, reap, cancel ----------------------------------------------------


def release(conn: sqlite3.Connection, *, worker: str, row: Row) -> bool:
    """Write `row`, its lease dropped, if `worker` still holds the task's lease
    (what a task cannot change once added, its type or input say, is left as stored)."""
    values = (*(row[index] for index in _SETTLED_AT), row[0], worker)
    return bool(conn.execute(_RELEASE, values).rowcount == 1)


def give_back(conn: sqlite3.Connection, *, worker: str, ids: list[str]) -> None:
    """Put back, unstarted, tasks `worker` claimed but never received (its wait for
    the claim gave up): queued again, their attempt not counted."""
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        conn.execute(
            "UPDATE tasks SET state = 'queued', attempt = attempt - 1, started_at = NULL, "
            f"worker = NULL, lease_until = NULL WHERE state = 'running' AND worker = ? "
            f"AND id IN ({_marks(chunk)})",
            (worker, *chunk),
        )


def extend(conn: sqlite3.Connection, *, worker: str, ids: list[str], until: float) -> set[str]:
    """Move the leases of `ids` that `worker` still holds to `until`; the ids it did."""
    extended: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        where = f"WHERE state = 'running' AND worker = ? AND id IN ({_marks(chunk)})"
        held = conn.execute(f"SELECT id FROM tasks {where}", (worker, *chunk)).fetchall()
        conn.execute(f"UPDATE tasks SET lease_until = ? {where}", (until, worker, *chunk))
        extended.update(task_id for (task_id,) in held)
    return extended


def reap(
    conn: sqlite3.Connection,
    *,
    now: float,
    workers: Collection[str] = (),
    fail_types: Collection[str] = (),
    alive: Collection[str] = (),
) -> Picked:
    """Re-queue (attempts left) or fail (none left) tasks whose lease ended before `now`,
    and those held by `workers` (known to be dead), whatever their lease says; tasks of
    `fail_types` fail at once.

    Returns (the records in their new state, corrupt rows met and settled as failed).
    """
    rows = _fetch(
        conn,
        f"{_BY_LEASE} WHERE state = 'running' AND lease_until IS NOT NULL AND lease_until < ? "
        "ORDER BY lease_until, rowid",
        [now],
    )
    # Running without a lease: claimed by `Store.claim` (a process that held none, an
    # older taskbus): nobody renews it, so it is as good as expired.
    rows += _fetch(
        conn,
        f"{_SELECT} INDEXED BY tasks_running_type WHERE state = 'running' "
        "AND lease_until IS NULL ORDER BY rowid",
        [],
    )
    for start in range(0, len(workers), _CHUNK):
        chunk = list(workers)[start : start + _CHUNK]
        rows += _fetch(
            conn,
            f"{_SELECT} WHERE state = 'running' AND lease_until >= ? "
            f"AND worker IN ({_marks(chunk)})",
            [now, *chunk],
        )
    records: list[TaskRecord] = []
    corrupt: list[CorruptRecord] = []
    for rowid, *values in rows:
        try:
            record = record_from_row(tuple(values))
        except CorruptRecord as exc:
            corrupt.append(exc)
            if _settle(conn, exc, now) and exc.record is not None:
                records.append(exc.record)
            continue
        if record.worker in alive:
            continue
        retry = record.attempt < record.max_attempts and record.type not in fail_types
        if record.cancel_reason is not None:  # asked to stop (`request_cancel`): it stays so
            conn.execute(_CANCEL, (now, rowid))
            record.state = TaskState.CANCELLED
            record.finished_at = now
        elif retry:
            record.error = expiry_error(record, retry=True)
            conn.execute(_REQUEUE, (now, record.error.model_dump_json(), rowid))
            record.state = TaskState.QUEUED
            record.queued_at = now
            record.started_at = None
            record.progress = record.current = record.total = record.eta = None
            record.message = None
        else:
            record.error = expiry_error(record, retry=False)
            conn.execute(_FAIL, (now, record.error.model_dump_json(), rowid))
            record.state = TaskState.FAILED
            record.finished_at = now
        record.worker = record.lease_until = None
        records.append(record)
    return records, corrupt


def cancel_queued(
    conn: sqlite3.Connection, *, task_id: str, reason: str | None, now: float
) -> tuple[TaskRecord | None, list[CorruptRecord]]:
    """Cancel the task if it is queued or waiting for input; returns (its record or
    None, corrupt rows)."""
    rows = _fetch(conn, f"{_SELECT} WHERE id = ? AND state IN ('queued', 'waiting')", [task_id])
    if not rows:
        return None, []
    rowid, *values = rows[0]
    try:
        record = record_from_row(tuple(values))
    except CorruptRecord as exc:
        _settle(conn, exc, now)
        return None, [exc]
    record.state = TaskState.CANCELLED
    record.finished_at = now
    record.cancel_reason = None if reason is None else escape_text(reason)
    conn.execute(
        "UPDATE tasks SET state = 'cancelled', finished_at = ?, cancel_reason = ? WHERE rowid = ?",
        (now, record.cancel_reason, rowid),
    )
    return record, []


def answer(
    conn: sqlite3.Connection, *, task_id: str, key: str, answer: InputAnswer, now: float
) -> tuple[TaskRecord | None, list[CorruptRecord]]:
    """Record the answer to the question `key` of a waiting task and queue it again
    (`answer_waiting`); returns (its record, or None if it waits for no such
    question, corrupt rows)."""
    rows = _fetch(conn, f"{_SELECT} WHERE id = ? AND state = 'waiting'", [task_id])
    if not rows:
        return None, []
    rowid, *values = rows[0]
    try:
        record = record_from_row(tuple(values))
    except CorruptRecord as exc:
        _settle(conn, exc, now)
        return None, [exc]
    if not answer_waiting(record, key, answer, now):
        return None, []
    row = row_from_record(record)
    conn.execute(
        f"UPDATE tasks SET {', '.join(f'{name} = ?' for name in _SETTLED)} WHERE rowid = ?",
        (*(row[index] for index in _SETTLED_AT), rowid),
    )
    return record, []


def mark_cancel_requested(conn: sqlite3.Connection, *, task_id: str, reason: str | None) -> bool:
    """Note on a running task that it was asked to stop (its cancel reason), so that
    reaping cancels it rather than queueing it again; True if it was running."""
    text = escape_text(reason if reason is not None else "cancelled")
    cursor = conn.execute(
        "UPDATE tasks SET cancel_reason = ? WHERE id = ? AND state = 'running'", (text, task_id)
    )
    return bool(cursor.rowcount)


# -- helpers --------------------------------------------------------------------------


def _marks(values: Collection[Any]) -> str:
    return ", ".join("?" * len(values))


def _fetch(conn: sqlite3.Connection, sql: str, params: Iterable[Any]) -> list[Any]:
    params = list(params)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "decode" not in str(exc):
            raise
    # Text that is not UTF-8 (written around taskbus): read it again keeping the
    # bytes, so the codec can tell the row is corrupt.
    conn.text_factory = _lenient_text
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.text_factory = str


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _settle(conn: sqlite3.Connection, exc: CorruptRecord, now: float) -> bool:
    """Write a corrupt row as its task failed, lease dropped; False if it has no usable id."""
    if exc.record is not None:
        exc.record.worker = exc.record.lease_until = None
    row = salvage_row(exc, now)
    if row is None:
        return False
    conn.execute(UPSERT, row)
    return True


def progress(conn: sqlite3.Connection, *, worker: str, record: TaskRecord) -> bool:
    """Write a running task's progress if `worker` still holds its lease."""
    return bool(
        conn.execute(
            "UPDATE tasks SET progress = ?, current = ?, total = ?, message = ?, eta = ? "
            "WHERE id = ? AND state = 'running' AND worker = ?",
            (
                _finite_or_none(record.progress),
                record.current if record.current is None or abs(record.current) < 2**63 else None,
                record.total if record.total is None or abs(record.total) < 2**63 else None,
                None if record.message is None else escape_text(record.message),
                _finite_or_none(record.eta),
                record.id,
                worker,
            ),
        ).rowcount
        == 1
    )


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def next_due(conn: sqlite3.Connection) -> float | None:
    """The earliest not-before time of a queued task, if any waits for one."""
    row = conn.execute(
        "SELECT min(not_before) FROM tasks WHERE state = 'queued' AND not_before IS NOT NULL"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def running_workers(conn: sqlite3.Connection) -> list[str]:
    """The workers holding leases now."""
    rows = conn.execute(
        "SELECT DISTINCT worker FROM tasks INDEXED BY tasks_leases "
        "WHERE state = 'running' AND lease_until IS NOT NULL"
    ).fetchall()
    return [str(worker) for (worker,) in rows if worker is not None]
