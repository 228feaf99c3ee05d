"""`SqliteStore`: tasks that survive restarts and crashes, with nothing to install.

Durability: `add` returns only after the task's row is committed to the WAL
file, so a task acknowledged by `submit` survives the process being killed.
Later changes (started, progress, finished) are committed in groups by one
writer thread without being waited for; after a crash the last of them may be
missing, which recovery treats as "still running": execution is at least once.
With the default ``synchronous=NORMAL``, a commit survives a process crash but
not necessarily a power cut; pass ``pragmas={"synchronous": "FULL"}`` for that.

Only one process may open a store file at a time (a lock file beside it says
so); many processes sharing work is what the Redis store is for.
"""

from __future__ import annotations

import builtins
import fcntl
import os
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from .._errors import StoreError
from .._record import TaskRecord
from .._states import TaskState
from ._base import StoreStats, TaskQuery
from ._codec import COLUMNS, record_from_row, row_from_record
from ._sqlite_schema import apply_pragmas, connect, migrate, store_error
from ._sqlite_writer import Batch, SqliteWriter

__all__ = ["SqliteStore"]

T = TypeVar("T")

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM tasks"
_FINAL_STATES = ("completed", "failed", "cancelled")


class SqliteStore:
    """A task store in one SQLite file (WAL mode, one writer thread).

    `path` is a file path; ``TaskBus(store="sqlite:///jobs.db")`` builds one.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        pragmas: Mapping[str, str | int] | None = None,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = Path(path)
        self._pragmas: dict[str, str | int] = {"synchronous": "NORMAL", **(pragmas or {})}
        self._busy_timeout = busy_timeout
        self._live: dict[str, TaskRecord] = {}
        self._keys: dict[str, TaskRecord] = {}
        self._writer: SqliteWriter | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._created_lock = False

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    @classmethod
    def from_url(cls, url: str) -> SqliteStore:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""
        prefix = "sqlite:///"
        if not url.startswith(prefix) or len(url) == len(prefix):
            raise ValueError(f"a SQLite store URL looks like 'sqlite:///jobs.db', not {url!r}")
        return cls(url[len(prefix) :])

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        if self._writer is not None:
            raise StoreError(f"{self!r} is already open")
        await anyio.to_thread.run_sync(self._open_files)
        try:
            writer_conn = await anyio.to_thread.run_sync(self._connect, "open for writing")
        except BaseException:
            await self.close()
            raise
        self._writer = SqliteWriter(writer_conn, self.path, self._committed)

    def _open_files(self) -> None:
        self._take_lock()
        try:
            conn = self._connect("open", check_first=True)
            try:
                migrate(conn, self.path)
                apply_pragmas(conn, self._pragmas)
            except sqlite3.Error as exc:
                conn.close()
                raise store_error(self.path, exc, "prepare the schema") from None
            except BaseException:
                conn.close()
                raise
            self._reader = conn
        except BaseException:
            if self._created_lock:  # leave no trace beside a file that is not ours
                self.path.with_name(self.path.name + ".lock").unlink(missing_ok=True)
            self._release_lock()
            raise

    def _connect(self, doing: str, *, check_first: bool = False) -> sqlite3.Connection:
        # The first connection sets no pragma (WAL mode changes the file) until
        # `migrate` has checked that the file is ours.
        try:
            conn = connect(self.path, busy_timeout=self._busy_timeout)
            if not check_first:
                apply_pragmas(conn, self._pragmas)
        except sqlite3.Error as exc:
            raise store_error(self.path, exc, doing) from None
        return conn

    def _take_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        self._created_lock = not lock_path.exists()
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(
                f"SQLite store {str(self.path)!r}: cannot create its lock file: {exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"SQLite store {str(self.path)!r} is in use by another open store (in this "
                "or another process); one per file (use the Redis store to share work)"
            ) from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.stop()
            await anyio.to_thread.run_sync(writer._conn.close)
        if self._reader is not None:
            await anyio.to_thread.run_sync(self._reader.close)
            self._reader = None
        self._release_lock()
        self._live.clear()
        self._keys.clear()

    # -- writes ----------------------------------------------------------------------

    def _require_writer(self) -> SqliteWriter:
        if self._writer is None:
            raise StoreError(f"{self!r} is not open")
        return self._writer

    async def add(self, record: TaskRecord) -> None:
        """Commit the new task before returning (see the module docstring)."""
        batch = self._require_writer().put(row_from_record(record), insert=True)
        with anyio.CancelScope(shield=True):
            await batch.done.wait()
        error = batch.error_for(record.id)
        if error is not None:
            raise error
        self._live[record.id] = record
        if record.key is not None:
            self._keys[record.key] = record

    async def claim(self, record: TaskRecord) -> None:
        self._require_writer().put(row_from_record(record))

    async def update(self, record: TaskRecord) -> None:
        self._require_writer().put(row_from_record(record))

    async def finish(self, record: TaskRecord) -> None:
        self._require_writer().put(row_from_record(record))

    def _committed(self, batch: Batch) -> None:
        live = self._live
        for task_id, row in batch.rows.items():
            if task_id not in batch.errors and SqliteWriter.is_final(row):
                record = live.get(task_id)
                if record is not None and record.state.is_final:
                    del live[task_id]
                    if record.key is not None and self._keys.get(record.key) is record:
                        del self._keys[record.key]

    async def flush(self) -> None:
        """Wait until every write made so far has been committed (or has failed)."""
        batch = self._require_writer().barrier()
        if batch is not None:
            await batch.done.wait()

    async def _in_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        batch, index = self._require_writer().call(fn)
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        result: T = batch.results[index]
        return result

    # -- reads -----------------------------------------------------------------------

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        reader = self._reader
        if reader is None:
            raise StoreError(f"{self!r} is not open")

        def run() -> T:
            with self._read_lock:
                try:
                    return fn(reader)
                except sqlite3.Error as exc:
                    raise store_error(self.path, exc, "read") from None

        return await anyio.to_thread.run_sync(run)

    async def get(self, task_id: str) -> TaskRecord | None:
        record = self._live.get(task_id)
        if record is not None:
            return record
        row = await self._read(
            lambda conn: conn.execute(f"{_SELECT} WHERE id = ?", (task_id,)).fetchone()
        )
        return None if row is None else record_from_row(row)

    async def find_by_key(
        self, key: str, *, completed_since: float | None = None
    ) -> TaskRecord | None:
        record = self._keys.get(key)
        if record is not None and not record.state.is_final:
            return record
        if completed_since is None:
            return None
        await self.flush()
        row = await self._read(
            lambda conn: conn.execute(
                f"{_SELECT} WHERE key = ? AND state = 'completed' AND finished_at >= ? "
                "ORDER BY finished_at DESC LIMIT 1",
                (key, completed_since),
            ).fetchone()
        )
        return None if row is None else record_from_row(row)

    async def list(self, query: TaskQuery) -> builtins.list[TaskRecord]:
        await self.flush()
        where, params = _where(query)
        sql = f"{_SELECT}{where} ORDER BY created_at, rowid LIMIT ? OFFSET ?"
        rows = await self._read(
            lambda conn: conn.execute(sql, (*params, query.limit, query.offset)).fetchall()
        )
        live = self._live
        return [live.get(row[0]) or record_from_row(row) for row in rows]

    async def stats(self) -> StoreStats:
        await self.flush()
        rows = await self._read(
            lambda conn: conn.execute(
                "SELECT type, state, count(*) FROM tasks GROUP BY type, state"
            ).fetchall()
        )
        by_state: defaultdict[TaskState, int] = defaultdict(int)
        by_type: defaultdict[str, dict[TaskState, int]] = defaultdict(dict)
        for task_type, state, count in rows:
            by_state[TaskState(state)] += count
            by_type[task_type][TaskState(state)] = count
        return StoreStats(by_state=dict(by_state), by_type=dict(by_type))

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
        """Queued and running tasks, most urgent first, to be queued again."""
        rows = await self._read(
            lambda conn: conn.execute(
                f"{_SELECT} WHERE state IN ('queued', 'running') "
                "ORDER BY priority DESC, created_at, rowid"
            ).fetchall()
        )
        records = [record_from_row(row) for row in rows]
        for record in records:
            self._live[record.id] = record
            if record.key is not None:
                self._keys[record.key] = record
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
    if query.created_after is not None:
        clauses.append("created_at >= ?")
        params.append(query.created_after)
    if query.created_before is not None:
        clauses.append("created_at < ?")
        params.append(query.created_before)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)
