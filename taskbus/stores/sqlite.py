"""`SqliteStore`: tasks that survive restarts and crashes, with nothing to install.

Durability: `add` returns only after the task's row is committed to the WAL
file, so a task acknowledged by `submit` survives the process being killed. A
claim (`acquire`) and an outcome (`release`) are committed before they return,
each with its event; progress is committed in groups that nobody waits for, so
after a crash the newest of it may be missing. Execution is at least once: a
task whose worker died runs again. With the default ``synchronous=NORMAL``, a
commit survives a process crash but not necessarily a power cut; pass
``pragmas={"synchronous": "FULL"}`` for that.

Processes share a file: the store holds the queue and the claims (leases, see
`_sqlite_claims`), and an events table that every process reads (see
`_sqlite_eventlog`), woken by the others' commits on this machine
(`_sqlite_wake`). The pieces: `_sqlite_base` (connections, waits, commits),
`_sqlite_writer` (the writer thread), `_sqlite_batch` (what one commit carries),
`_sqlite_lease` (the SQL of claims), `_sqlite_events` (the SQL of the log),
`_sqlite_schema` (migrations).

Nothing a caller sends can stop the store (see `_codec` for what is refused and
what is escaped, `_sqlite_writer` for failed writes): a value that cannot be
stored fails its own call with `UnstorableValue`; a change to a running task
that cannot be stored records the task as failed with that error. Every wait
for the writer thread is bounded by `write_timeout`; a submit that times out
raises `StoreError` (its row may still be written, and then runs). A stored row
that no taskbus writes (edited by hand, say) reads as its task failed with
`CorruptRecord`, and is written so (at open, or as a worker meets it); the
other tasks run.
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import anyio.lowlevel

from .._errors import StoreError
from .._events import Event
from .._record import TaskRecord
from .._states import TaskState
from ._base import CorruptRecord, StoreStats, TaskQuery
from ._codec import row_from_record
from ._codec_read import record_from_row
from ._sqlite_base import SELECT, change_row
from ._sqlite_claims import SqliteClaims
from ._sqlite_eventlog import SqliteEventLog
from ._sqlite_schedules import SqliteSchedules

__all__ = ["SqliteStore"]

logger = logging.getLogger("taskbus.stores.sqlite")

_FINAL_STATES = ("completed", "failed", "cancelled")
_STATES = {state.value: state for state in TaskState}
_COUNT_STATES = "SELECT type, state, count(*) FROM tasks GROUP BY type, state"
_COUNT_QUEUED = (
    "SELECT type, priority, count(*) FROM tasks WHERE state = 'queued' GROUP BY type, priority"
)


class SqliteStore(SqliteClaims, SqliteEventLog, SqliteSchedules):
    """A task store in one SQLite file (WAL mode, one writer thread).

    `path` is a file path; ``TaskBus(store="sqlite:///jobs.db")`` builds one.
    """

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""
        prefix = "sqlite:///"
        if not url.startswith(prefix) or len(url) == len(prefix):
            raise ValueError(f"a SQLite store URL looks like 'sqlite:///jobs.db', not {url!r}")
        return cls(url[len(prefix) :])

    def rate_limiter(self) -> Any:
        """A `limits` moving-window limiter whose entries live in this file, so every
        process on it shares the rates of task types (`TaskOptions.rate`)."""
        if self._rates is None:
            from limits.aio.strategies import MovingWindowRateLimiter

            from ._sqlite_rates import SqliteRateStorage

            self._rates = MovingWindowRateLimiter(SqliteRateStorage(self))
        return self._rates

    async def add(self, record: TaskRecord, *, event: Event | None = None) -> None:
        """Commit the new task, and `event` with it, before returning (see the module
        docstring).

        Raises `UnstorableValue` (nothing stored) for a value the store cannot hold,
        `StoreError` if the row cannot be written within `write_timeout`.
        """
        writer = self._require_writer()
        batch = writer.put(row_from_record(record), insert=True, event=event, wake=False)
        if writer.write_now():
            await anyio.lowlevel.checkpoint()
        else:
            writer.wake()
        try:
            # Shielded: a cancelled submit still learns whether its row is stored.
            await writer.wait(batch, self.write_timeout, "write", shield=True)
        except StoreError:
            writer.withdraw(batch, record.id)
            raise
        error = batch.error_for(record.id)
        if error is not None:
            raise error

    async def claim(self, record: TaskRecord, *, event: Event | None = None) -> None:
        self._put_change(record, event)

    async def update(self, record: TaskRecord, *, event: Event | None = None) -> None:
        self._put_change(record, event)

    async def finish(self, record: TaskRecord, *, event: Event | None = None) -> None:
        self._put_change(record, event)

    def _put_change(self, record: TaskRecord, event: Event | None = None) -> None:
        """Queue a change to a stored task; never raises once the store is open.

        A value that cannot be stored records the task as failed with the reason; a
        writer thread that has stopped loses the change (logged once): the task
        keeps its last written state and is recovered from it at the next start.
        """
        if self._writer is None:
            raise StoreError(f"{self!r} is not open")
        try:
            self._require_writer().put(change_row(record), event=event)
        except StoreError as exc:
            if "writer" not in self._reported:
                self._reported.add("writer")
                logger.error("%s; changes to tasks are not written", exc)

    def watch_final(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(task_id)`` once a final state written by `finish` is
        committed (or was given up: it cannot be written)."""
        self._on_final = callback

    async def get(self, task_id: str) -> TaskRecord | None:
        """The task, or None; a corrupt row reads as its task failed with `CorruptRecord`."""
        await self.flush()
        row = await self._read(
            lambda conn: conn.execute(f"{SELECT} WHERE id = ?", (task_id,)).fetchone()
        )
        return None if row is None else self._load(row)

    async def find_by_key(
        self,
        key: str,
        *,
        owner: str | None,
        task_type: str,
        completed_since: float | None = None,
    ) -> TaskRecord | None:
        await self.flush()
        row = await self._read(
            lambda conn: conn.execute(
                f"{SELECT} WHERE key = ? AND type = ? AND owner IS ? "
                "AND state IN ('queued', 'running', 'waiting') LIMIT 1",
                (key, task_type, owner),
            ).fetchone()
        )
        if row is not None:
            unfinished = self._load(row)
            if not unfinished.state.is_final:
                return unfinished
        if completed_since is None:
            return None
        row = await self._read(
            lambda conn: conn.execute(
                f"{SELECT} WHERE key = ? AND type = ? AND owner IS ? AND state = 'completed' "
                "AND finished_at >= ? ORDER BY finished_at DESC LIMIT 1",
                (key, task_type, owner, completed_since),
            ).fetchone()
        )
        if row is None:
            return None
        found = self._load(row)
        return found if found.state is TaskState.COMPLETED else None

    async def list(self, query: TaskQuery) -> builtins.list[TaskRecord]:
        """Matching tasks, oldest (or newest) first; a corrupt row is listed as its task
        failed."""
        await self.flush()
        where, params = _where(query)
        order = "created_at DESC, rowid DESC" if query.newest_first else "created_at, rowid"
        sql = f"{SELECT}{where} ORDER BY {order} LIMIT ? OFFSET ?"
        rows = await self._read(
            lambda conn: conn.execute(sql, (*params, query.limit, query.offset)).fetchall()
        )
        return [self._load(row) for row in rows]

    async def stats(self) -> StoreStats:
        """Counts by stored state; a row whose state no taskbus writes counts as failed.
        The queued by priority read only the queued rows (index ``tasks_state_created``)."""
        await self.flush()

        def read(conn: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            conn.execute("BEGIN")  # one snapshot for both counts
            try:
                states = conn.execute(_COUNT_STATES).fetchall()
                return states, conn.execute(_COUNT_QUEUED).fetchall()
            finally:
                conn.execute("COMMIT")

        rows, queued_rows = await self._read(read)
        by_state: defaultdict[TaskState, int] = defaultdict(int)
        by_type: defaultdict[str, defaultdict[TaskState, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        for task_type, stored_state, count in rows:
            state = _STATES.get(stored_state, TaskState.FAILED)
            by_state[state] += count
            by_type[str(task_type)][state] += count
        queued: defaultdict[str, dict[int, int]] = defaultdict(dict)
        for task_type, priority, count in queued_rows:
            if type(priority) is int:  # a corrupt row's is not: no level to count it at
                queued[str(task_type)][priority] = count
        return StoreStats(
            by_state=dict(by_state),
            by_type={k: dict(v) for k, v in by_type.items()},
            queued_by_priority=dict(queued),
        )

    async def purge(self, finished_before: float | None = None, keep: int | None = None) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            deleted = 0
            if finished_before is not None:
                deleted += conn.execute(
                    f"DELETE FROM tasks WHERE state IN {_FINAL_STATES} AND finished_at < ?",
                    (finished_before,),
                ).rowcount
            if keep is not None:
                deleted += conn.execute(
                    f"DELETE FROM tasks WHERE id IN (SELECT id FROM tasks "
                    f"WHERE state IN {_FINAL_STATES} ORDER BY finished_at DESC "
                    "LIMIT -1 OFFSET ?)",
                    (keep,),
                ).rowcount
            return deleted

        return await self._in_writer(delete)

    async def recover(self) -> builtins.list[TaskRecord]:
        """Queued and running tasks, most urgent first, to be queued again.

        A corrupt row among them is written as its task failed with `CorruptRecord`
        (naming the task and the columns) and is not returned.
        """
        rows = await self._read(
            lambda conn: conn.execute(
                f"{SELECT} WHERE state NOT IN {_FINAL_STATES} "
                "ORDER BY priority DESC, created_at, rowid"
            ).fetchall()
        )
        records: builtins.list[TaskRecord] = []
        settled = False
        for row in rows:
            try:
                records.append(record_from_row(row))
            except CorruptRecord as exc:
                settled = self._settle_corrupt(exc) or settled
        if settled:
            await self.flush()
        return records

    async def execute(
        self, sql: str, params: tuple[Any, ...] = ()
    ) -> builtins.list[tuple[Any, ...]]:
        """Run read-only SQL on the store's reader connection (for tools and tests)."""
        return await self._read(lambda conn: conn.execute(sql, params).fetchall())


def _where(query: TaskQuery) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    params: list[Any] = []
    if query.state is not None:
        clauses.append("state = ?")
        params.append(query.state.value)
    if query.owner is not None:
        clauses.append("owner = ?")
        params.append(query.owner)
    if query.type_prefix:  # a range, so the (type, created_at) index serves it
        prefix = query.type_prefix
        if ord(prefix[-1]) < 0x10FFFF:
            clauses.append("type >= ? AND type < ?")
            params.extend((prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)))
        else:
            clauses.append("substr(type, 1, ?) = ?")
            params.extend((len(prefix), prefix))
    if query.batch_id is not None:
        clauses.append("batch_id = ?")
        params.append(query.batch_id)
    if query.created_after is not None:
        clauses.append("created_at >= ?")
        params.append(query.created_after)
    if query.created_before is not None:
        clauses.append("created_at < ?")
        params.append(query.created_before)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)
