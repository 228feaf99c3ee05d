"""The SQLite store's single writer: one thread, group commits.

The event loop hands it rows (the full current values of a record) and
functions to run inside a transaction. The thread takes everything pending,
writes it in one transaction (only the latest row per task), commits, and then
tells the loop which batch is on disk. Submitters that must know their row is
durable wait for their batch; other writes are not waited for, so a burst of
state changes costs one commit, not one each.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel

from ._codec import Row
from ._sqlite_schema import UPSERT, store_error

__all__ = ["Batch", "SqliteWriter"]

logger = logging.getLogger("taskbus.stores.sqlite")

T = TypeVar("T")

_RETRY_INTERVAL = 1.0  # seconds between attempts to write updates that failed

_STATE = 2  # index of the state column in a row
_FINAL = frozenset({"completed", "failed", "cancelled"})


class Batch:
    """Writes that commit together. `done` is set once they did (or failed).

    If the group fails, its rows are written one by one so that one bad row (too
    large for a full disk, say) fails only itself: `errors` holds those, by task id;
    `error` is the failure of a call.
    """

    __slots__ = ("calls", "done", "error", "errors", "inserts", "results", "rows")

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        self.inserts: set[str] = set()
        self.calls: list[Callable[[sqlite3.Connection], Any]] = []
        self.results: list[Any] = []
        self.done = anyio.Event()
        self.error: BaseException | None = None
        self.errors: dict[str, BaseException] = {}

    def error_for(self, task_id: str) -> BaseException | None:
        return self.errors.get(task_id)


class SqliteWriter:
    """Owns the write connection and the thread that uses it."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        on_committed: Callable[[Batch], None],
    ) -> None:
        self._conn = conn
        self._path = path
        self._on_committed = on_committed
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending = Batch()
        self._inflight: Batch | None = None
        self._stopping = False
        self._token = anyio.lowlevel.current_token()
        self._thread = threading.Thread(target=self._run, name="taskbus-sqlite-writer", daemon=True)
        self._thread.start()

    # -- called on the event loop -----------------------------------------------

    def put(self, row: Row, *, insert: bool = False) -> Batch:
        """Queue a row (replacing an older pending one for that task)."""
        with self._lock:
            batch = self._pending
            batch.rows[row[0]] = row
            if insert:
                batch.inserts.add(row[0])
        if not self._wake.is_set():
            self._wake.set()
        return batch

    def call(self, fn: Callable[[sqlite3.Connection], Any]) -> tuple[Batch, int]:
        """Run `fn(conn)` in the next transaction; its result lands in `batch.results`."""
        with self._lock:
            batch = self._pending
            batch.calls.append(fn)
            index = len(batch.calls) - 1
        self._wake.set()
        return batch, index

    def barrier(self) -> Batch | None:
        """The batch to wait for so that every write made so far is committed."""
        with self._lock:
            if self._pending.rows or self._pending.calls:
                return self._pending
            return self._inflight

    async def stop(self) -> None:
        """Write what is pending, then end the thread."""
        self._stopping = True
        self._wake.set()
        await anyio.to_thread.run_sync(self._thread.join)

    # -- the writer thread ----------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                # Rows pending without a wake-up are failed updates: retry them
                # once a second rather than in a hot loop.
                retry_after = _RETRY_INTERVAL if self._pending.rows else None
            self._wake.wait(retry_after)
            self._wake.clear()
            with self._lock:
                batch, self._pending = self._pending, Batch()
                stopping = self._stopping
                if batch.rows or batch.calls:
                    self._inflight = batch
            if batch.rows or batch.calls:
                self._write(batch)
                anyio.from_thread.run_sync(self._finish, batch, token=self._token)
            if stopping and self._stop_now(batch):
                return

    def _stop_now(self, last: Batch) -> bool:
        with self._lock:
            left = len(self._pending.rows) + len(self._pending.calls)
        if left and not last.errors:
            self._wake.set()  # written after the stop was asked for: one more round
            return False
        if left:
            logger.error(
                "SQLite store %r closed with %d change(s) it could not write; tasks "
                "they belong to will be recovered from their last written state",
                str(self._path),
                left,
            )
        return True

    def _write(self, batch: Batch) -> None:
        try:
            self._transaction(lambda conn: conn.executemany(UPSERT, batch.rows.values()))
        except sqlite3.Error:
            for task_id, row in batch.rows.items():
                try:
                    self._transaction(partial(_upsert_one, row=row))
                except sqlite3.Error as exc:
                    batch.errors[task_id] = store_error(self._path, exc, "write")
                    logger.error("%s", batch.errors[task_id])
        if batch.calls:
            try:
                batch.results = self._transaction(lambda conn: [fn(conn) for fn in batch.calls])
            except sqlite3.Error as exc:
                batch.error = store_error(self._path, exc, "write")
                logger.error("%s", batch.error)
            except Exception as exc:
                batch.error = exc
                logger.exception("SQLite store write failed")

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (disk full)
                conn.execute("ROLLBACK")
            raise
        return result

    def _finish(self, batch: Batch) -> None:
        if batch.errors:
            self._requeue_updates(batch)
        with self._lock:
            if self._inflight is batch:
                self._inflight = None
        self._on_committed(batch)
        batch.done.set()

    def _requeue_updates(self, batch: Batch) -> None:
        # Rows of tasks whose insert failed belong to a submit that raised: the task
        # does not exist. Updates to stored tasks are tried again with the next batch
        # (a newer row for the same task, if any, wins).
        with self._lock:
            pending = self._pending
            for task_id in batch.errors:
                if task_id not in batch.inserts and task_id not in pending.rows:
                    pending.rows[task_id] = batch.rows[task_id]

    @staticmethod
    def is_final(row: Row) -> bool:
        return row[_STATE] in _FINAL


def _upsert_one(conn: sqlite3.Connection, *, row: Row) -> None:
    conn.execute(UPSERT, row)
