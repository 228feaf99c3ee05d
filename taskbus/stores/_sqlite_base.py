"""`SqliteBase`: what every part of the SQLite store shares.

The files and connections (one reader, one writer thread), their bounded
waits, reading rows back, and what happens after each commit (deliveries in
order, given-back claims, durable final states). `SqliteStore` is this plus
its task rows (`sqlite`), its claims (`_sqlite_claims`) and its event log
(`_sqlite_eventlog`).
"""

from __future__ import annotations

import builtins
import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from .._errors import StoreError, UnstorableValue
from .._events import Event
from .._record import TaskRecord
from .._states import TaskState
from ._base import CorruptRecord
from ._codec import COLUMNS, Row, row_from_record, salvage_row, unstorable_row
from ._codec_read import record_from_row
from ._sqlite_batch import Batch, report_calls
from ._sqlite_events import OrderedDelivery, last_event_id
from ._sqlite_schema import apply_pragmas, connect, migrate, store_error
from ._sqlite_wake import WakeChannel
from ._sqlite_writer import SqliteWriter

__all__ = ["SELECT", "ClaimDelivery", "SqliteBase", "change_row"]

logger = logging.getLogger("taskbus.stores.sqlite")

T = TypeVar("T")

SELECT = f"SELECT {', '.join(COLUMNS)} FROM tasks"

#: Where a standing claim's records go: ``deliver(records or None, ids added)``,
#: False to give them back (see `ClaimsOnAdd`).
ClaimDelivery = Callable[[list[TaskRecord] | None, frozenset[str]], bool]


class SqliteBase:
    """The connections of a SQLite store and the waits on them."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        pragmas: Mapping[str, str | int] | None = None,
        busy_timeout: float = 5.0,
        write_timeout: float = 30.0,
        keep_events: int = 100_000,
    ) -> None:
        if not write_timeout > 0:
            raise ValueError(
                f"write_timeout must be a positive number of seconds, not {write_timeout!r}"
            )
        self.path = Path(path)
        # The writer checkpoints while idle; a commit does only past 10,000 pages
        # (~40 MiB of WAL, under constant load), not every 1,000 (SQLite's default).
        self._pragmas: dict[str, str | int] = {
            "synchronous": "NORMAL",
            "wal_autocheckpoint": 10_000,
            **(pragmas or {}),
        }
        self._busy_timeout = busy_timeout
        #: Seconds a call waits for the writer thread before it raises `StoreError`.
        self.write_timeout = write_timeout
        if type(keep_events) is not int or keep_events < 1:
            raise ValueError(f"keep_events must be an int >= 1, not {keep_events!r}")
        #: The event log keeps this many of the newest events (for replay).
        self.keep_events = keep_events
        self._delivery = OrderedDelivery()
        self._poll_wake: anyio.Event | None = None
        self._wake_channel = WakeChannel(self.path)
        self._on_final: Callable[[str], None] | None = None
        self._writer: SqliteWriter | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._reported: set[str] = set()  # corrupt rows and lost writes, logged once
        #: Standing claims not yet delivered, by token: their worker and where their
        #: outcome goes (`SqliteClaims.claim_on_add`).
        self._standing_claims: dict[int, tuple[str, ClaimDelivery]] = {}
        self._standing_tokens = itertools.count(1)
        #: The rate limiter on this file (`SqliteStore.rate_limiter`), made on first use.
        self._rates: Any = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    async def open(self) -> None:
        if self._writer is not None:
            raise StoreError(f"{self!r} is already open")
        await anyio.to_thread.run_sync(self._open_files)
        try:
            writer_conn = await anyio.to_thread.run_sync(self._connect, "open for writing")
        except BaseException:
            await self.close()
            raise
        self._writer = SqliteWriter(
            writer_conn,
            self.path,
            self._committed,
            keep_events=self.keep_events,
            busy_timeout=self._busy_timeout,
        )
        await self._settle_unknown_states()

    async def _settle_unknown_states(self) -> None:
        """Write as failed the rows whose state no taskbus writes (edited by hand, say):
        no worker would ever claim or reap them."""
        known = tuple(state.value for state in TaskState)
        rows = await self._read(
            lambda conn: conn.execute(
                f"{SELECT} WHERE state NOT IN ({', '.join('?' * len(known))})", known
            ).fetchall()
        )
        settled = False
        for row in rows:
            try:
                record_from_row(row)
            except CorruptRecord as exc:
                settled = self._settle_corrupt(exc) or settled
        if settled:
            await self.flush()

    def _open_files(self) -> None:
        conn = self._connect("open", check_first=True)
        try:
            migrate(conn, self.path)
            apply_pragmas(conn, self._pragmas)
            self._delivery.next_id = last_event_id(conn) + 1
        except sqlite3.Error as exc:
            conn.close()
            raise store_error(self.path, exc, "prepare the schema") from None
        except BaseException:
            conn.close()
            raise
        self._reader = conn

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

    async def close(self) -> None:
        """Write what is pending and close; bounded by `write_timeout` (then a stuck
        writer thread is left to end on its own)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            if await writer.stop(self.write_timeout):
                await anyio.to_thread.run_sync(writer._conn.close)
            else:
                logger.error(
                    "%r: the writer thread did not stop within %gs; it closes its "
                    "connection when it does",
                    self,
                    self.write_timeout,
                )
                writer.when_ended(lambda: _close_quietly(writer._conn))
        if self._reader is not None:
            await anyio.to_thread.run_sync(self._reader.close)
            self._reader = None
        self._wake_channel.close()

    def _require_writer(self) -> SqliteWriter:
        writer = self._writer
        if writer is None:
            raise StoreError(f"{self!r} is not open")
        if writer.failure is not None:
            raise writer.stopped_error()
        return writer

    def _committed(self, batch: Batch) -> None:
        if batch.events:
            self._wake_channel.notify()  # the other processes on this file read it now
            delivery = self._delivery
            delivery.offer(batch.events)
            if delivery.gap_end is not None and self._poll_wake is not None:
                self._poll_wake.set()  # another process logged in between: read it now
        writer = self._writer
        durable: list[str] = []
        for task_id, row in batch.rows.items():
            if not SqliteWriter.is_final(row):
                continue
            if task_id in batch.errors:
                if not (writer and writer.is_pending(task_id)):
                    durable.append(task_id)  # given up: it will never be durable
                continue
            durable.append(task_id)
        if self._on_final is not None:
            for task_id in durable:
                self._on_final(task_id)
        report_calls(batch)

    async def flush(self) -> None:
        """Wait until every write made so far has been committed (or has failed);
        raises `StoreError` after `write_timeout`."""
        writer = self._require_writer()
        batch = writer.barrier()
        if batch is not None:
            await writer.wait(batch, self.write_timeout, "write", shield=False)

    async def _in_writer(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        events: Callable[[T], builtins.list[Event]] | None = None,
        done: Callable[[T | None], None] | None = None,
        shield: bool = False,
        doing: str = "write",
    ) -> T:
        """Run `fn` in the writer's next transaction and return its result (see
        `SqliteWriter.call` for `events` and `done`)."""
        writer = self._require_writer()
        batch, index = writer.call(fn, events=events, done=done)
        await writer.wait(batch, self.write_timeout, doing, shield=shield)
        error = batch.call_errors.get(index)
        if error is not None:
            raise error
        result: T = batch.results[index]
        return result

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        reader = self._reader
        if reader is None:
            raise StoreError(f"{self!r} is not open")

        def run() -> T:
            with self._read_lock:
                try:
                    try:
                        return fn(reader)
                    except sqlite3.OperationalError as exc:
                        if "decode" not in str(exc):
                            raise
                    # Text that is not UTF-8 (written around taskbus): read it again,
                    # keeping the bytes, so the codec can tell the row is corrupt.
                    reader.text_factory = _lenient_text
                    try:
                        return fn(reader)
                    finally:
                        reader.text_factory = str
                except sqlite3.Error as exc:
                    raise store_error(self.path, exc, "read") from None

        return await anyio.to_thread.run_sync(run)

    def _load(self, row: Row) -> TaskRecord:
        """The record of a row; a corrupt row reads as its task failed (logged once)."""
        try:
            return record_from_row(row)
        except CorruptRecord as exc:
            assert exc.record is not None
            self._report_corrupt(exc)
            return exc.record

    def _report_corrupt(self, exc: CorruptRecord) -> None:
        if exc.task_id not in self._reported:
            self._reported.add(exc.task_id)
            logger.error("%r: %s", self, exc)

    def _settle_corrupt(self, exc: CorruptRecord) -> bool:
        self._report_corrupt(exc)
        row = salvage_row(exc, time.time())
        if row is None:
            logger.error("%r: a row without a usable id is left as it is", self)
            return False
        self._require_writer().put(row)
        logger.error("%r: task %s failed: its stored row is corrupt", self, exc.task_id)
        return True


def _lenient_text(data: bytes) -> str:
    """Text as SQLite holds it; bytes that are not UTF-8 become lone surrogates."""
    return data.decode("utf-8", "surrogateescape")


def _close_quietly(conn: sqlite3.Connection) -> None:
    """Close what a writer thread that ended late leaves behind (on that thread)."""
    try:
        conn.close()
    except sqlite3.Error:
        logger.exception("closing the SQLite writer connection failed")


def change_row(record: TaskRecord) -> Row:
    """The row of a change to a stored task; a value that cannot be stored records
    the task as failed with the reason (logged), so the change is never lost."""
    try:
        return row_from_record(record)
    except UnstorableValue as exc:
        logger.error("%s; recording the task as failed", exc)
        return unstorable_row(record, exc, time.time())
