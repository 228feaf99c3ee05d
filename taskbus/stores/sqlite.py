"""`SqliteStore`: tasks that survive restarts and crashes, with nothing to install.

Durability: `add` returns only after the task's row is committed to the WAL
file, so a task acknowledged by `submit` survives the process being killed.
Later changes (started, progress, finished) are committed in groups by one
writer thread without being waited for; after a crash the last of them may be
missing, which recovery treats as "still running": execution is at least once.
With the default ``synchronous=NORMAL``, a commit survives a process crash but
not necessarily a power cut; pass ``pragmas={"synchronous": "FULL"}`` for that.

Only one process may open a store file at a time (locks on the file's identity
say so, see `_sqlite_lock`); many processes sharing work is what the Redis store
is for.

Nothing a caller sends can stop the store (see `_codec` for what is refused and
what is escaped, `_sqlite_writer` for failed writes): a value that cannot be
stored fails its own call with `UnstorableValue`; a change to a running task
that cannot be stored records the task as failed with that error. Every wait
for the writer thread is bounded by `write_timeout`; a submit that times out
raises `StoreError` (its row may still be written, and then runs after the next
start). A stored row that no taskbus writes (edited by hand, say) reads as its
task failed with `CorruptRecord`, and `recover` writes it so; the other tasks
run.
"""

from __future__ import annotations

import builtins
import logging
import os
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from .._errors import StoreError, UnstorableValue
from .._events import CancelRequested, Event, build_trusted
from .._record import TaskRecord
from .._states import TaskState
from . import _sqlite_lease as leases
from ._base import CorruptRecord, StoreStats, TaskQuery
from ._codec import COLUMNS, Row, row_from_record, salvage_row, unstorable_row
from ._codec_read import record_from_row
from ._sqlite_events import OrderedDelivery, last_event_id, read_events_after
from ._sqlite_schema import apply_pragmas, connect, migrate, store_error
from ._sqlite_writer import Batch, SqliteWriter

__all__ = ["SqliteStore"]

logger = logging.getLogger("taskbus.stores.sqlite")

T = TypeVar("T")

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM tasks"
_POLL_MIN = 0.005
_POLL_MAX = 0.1
_POLL_BATCH = 1000
_FINAL_STATES = ("completed", "failed", "cancelled")
_STATES = {state.value: state for state in TaskState}


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
        write_timeout: float = 30.0,
        keep_events: int = 100_000,
    ) -> None:
        if not write_timeout > 0:
            raise ValueError(
                f"write_timeout must be a positive number of seconds, not {write_timeout!r}"
            )
        self.path = Path(path)
        self._pragmas: dict[str, str | int] = {"synchronous": "NORMAL", **(pragmas or {})}
        self._busy_timeout = busy_timeout
        #: Seconds a call waits for the writer thread before it raises `StoreError`.
        self.write_timeout = write_timeout
        if type(keep_events) is not int or keep_events < 1:
            raise ValueError(f"keep_events must be an int >= 1, not {keep_events!r}")
        #: The event log keeps this many of the newest events (for replay).
        self.keep_events = keep_events
        self._delivery = OrderedDelivery()
        #: Claims whose caller stopped waiting: (batch, call index, worker).
        self._unclaimed: builtins.list[tuple[Batch, int, str]] = []
        self._poll_wake: anyio.Event | None = None
        self._on_final: Callable[[str], None] | None = None
        self._writer: SqliteWriter | None = None
        self._reader: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self._reported: set[str] = set()  # corrupt rows and lost writes, logged once

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
        self._writer = SqliteWriter(
            writer_conn, self.path, self._committed, keep_events=self.keep_events
        )
        await self._settle_unknown_states()

    async def _settle_unknown_states(self) -> None:
        """Write as failed the rows whose state no taskbus writes (edited by hand, say):
        no worker would ever claim or reap them."""
        known = tuple(state.value for state in TaskState)
        rows = await self._read(
            lambda conn: conn.execute(
                f"{_SELECT} WHERE state NOT IN ({', '.join('?' * len(known))})", known
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

    # -- writes ----------------------------------------------------------------------

    def _require_writer(self) -> SqliteWriter:
        writer = self._writer
        if writer is None:
            raise StoreError(f"{self!r} is not open")
        if writer.failure is not None:
            raise writer.stopped_error()
        return writer

    async def add(self, record: TaskRecord, *, event: Event | None = None) -> None:
        """Commit the new task, and `event` with it, before returning (see the module
        docstring).

        Raises `UnstorableValue` (nothing stored) for a value the store cannot hold,
        `StoreError` if the row cannot be written within `write_timeout`.
        """
        writer = self._require_writer()
        batch = writer.put(row_from_record(record), insert=True, event=event)
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
            row = row_from_record(record)
        except UnstorableValue as exc:
            logger.error("%s; recording the task as failed", exc)
            row = unstorable_row(record, exc, time.time())
        try:
            self._require_writer().put(row, event=event)
        except StoreError as exc:
            if "writer" not in self._reported:
                self._reported.add("writer")
                logger.error("%s; changes to tasks are not written", exc)

    # -- the event log -------------------------------------------------------------

    def deliver_events(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` on the event loop for each logged event, numbered,
        once it is committed, in id order (with those other processes log, once
        `follow` runs)."""
        self._delivery.deliver = callback

    def log_event(self, event: Event) -> None:
        """Log an event that comes with no change to a task (progress, a batch's)."""
        try:
            self._require_writer().log(event)
        except StoreError as exc:
            if "writer" not in self._reported:
                self._reported.add("writer")
                logger.error("%s; events are not logged", exc)

    async def events_after(self, after: str | None, *, limit: int = 1000) -> builtins.list[Event]:
        """Up to `limit` committed events after the one with id `after` (from the
        oldest the log keeps for None), oldest first."""
        start = _event_number(after)
        if start is None:
            return []
        return await self._read(lambda conn: read_events_after(conn, start, limit))

    async def last_event_id(self) -> str | None:
        """The id of the newest event ever committed to the log, or None."""
        last = await self._read(last_event_id)
        return str(last) if last else None

    def watch_final(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(task_id)`` once a final state written by `finish` is
        committed (or was given up: it cannot be written)."""
        self._on_final = callback

    def _committed(self, batch: Batch) -> None:
        if self._unclaimed:
            self._give_back_unclaimed(batch)
        if batch.events:
            delivery = self._delivery
            delivery.offer(batch.events)
            if delivery.gap and self._poll_wake is not None:
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

    def _give_back_unclaimed(self, batch: Batch) -> None:
        for entry in [entry for entry in self._unclaimed if entry[0] is batch]:
            self._unclaimed.remove(entry)
            _, index, worker = entry
            result = batch.results.get(index)
            if result:
                ids = [record.id for record in result[0]]
                if ids:
                    logger.warning("%r: giving back %d task(s) claimed too late", self, len(ids))
                    self._require_writer().call(partial(leases.give_back, worker=worker, ids=ids))

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
    ) -> T:
        writer = self._require_writer()
        batch, index = writer.call(fn, events=events)
        await writer.wait(batch, self.write_timeout, "write", shield=False)
        error = batch.call_errors.get(index)
        if error is not None:
            raise error
        result: T = batch.results[index]
        return result

    # -- leases: claims the store holds (the SQL is in `_sqlite_lease`) ----------------

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
        """Claim up to `limit` ready queued tasks for `worker_id`, leased for `lease`
        seconds, in pick order (see `_sqlite_lease.Pick`); committed when it returns."""
        pick = leases.Pick(
            worker_id, limit, lease, limits=limits, types=types, aging=aging, now=now
        )
        if not pick.limit:
            return []
        writer = self._require_writer()
        batch, index = writer.call(pick.run)
        try:
            # Shielded, like a submit: a caller that gives up must not leave claims
            # nobody knows of; those that land after it gave up are given back.
            await writer.wait(batch, self.write_timeout, "claim tasks", shield=True)
        except StoreError:
            self._unclaimed.append((batch, index, pick.worker))
            raise
        error = batch.call_errors.get(index)
        if error is not None:
            raise error
        records, corrupt = batch.results[index]
        return self._leased(records, corrupt)

    async def release(
        self, worker_id: str, record: TaskRecord, *, event: Event | None = None
    ) -> bool:
        """Write the record (final, or queued again), and log `event` with it, and drop
        its lease if `worker_id` still holds it; False, writing nothing, if the lease
        was lost."""
        worker = leases.check_worker(worker_id)
        if record.state is TaskState.RUNNING:
            raise ValueError(f"release takes a final or re-queued record, not {record!r}")
        try:
            row = row_from_record(record)
        except UnstorableValue as exc:
            logger.error("%s; recording the task as failed", exc)
            row = unstorable_row(record, exc, time.time())
        return await self._in_writer(
            partial(leases.release, worker=worker, row=row),
            events=lambda released: [event] if released and event is not None else [],
        )

    async def extend_leases(
        self, worker_id: str, ids: Collection[str], lease: float, *, now: float | None = None
    ) -> set[str]:
        """Renew until ``now + lease`` the leases `worker_id` holds on `ids`; returns
        the ids it holds no lease on (lost)."""
        worker = leases.check_worker(worker_id)
        wanted = leases.check_ids(ids)
        until = leases.lease_end(leases.check_now(now), lease)
        if not wanted:
            return set()
        work = partial(leases.extend, worker=worker, ids=wanted, until=until)
        return set(wanted) - await self._in_writer(work)

    async def reap_expired(
        self,
        *,
        now: float | None = None,
        workers: Collection[str] = (),
        fail_types: Collection[str] = (),
        alive: Collection[str] = (),
        events_for: Callable[[TaskRecord], Event | None] | None = None,
    ) -> builtins.list[TaskRecord]:
        """Tasks whose lease ended before `now`, or held by `workers` (known dead),
        queued again while attempts remain (never those of `fail_types`), else failed
        (see `_sqlite_lease.expiry_error`): their new records. ``events_for(record)``
        is logged with each change."""
        work = partial(
            leases.reap,
            now=leases.check_now(now),
            workers=workers,
            fail_types=fail_types,
            alive=alive,
        )
        return self._leased(*await self._in_writer(work, events=_events_of(events_for)))

    async def cancel_queued(
        self,
        task_id: str,
        reason: str | None,
        *,
        now: float | None = None,
        event_for: Callable[[TaskRecord], Event | None] | None = None,
    ) -> TaskRecord | None:
        """Cancel the task if it is queued, in one step (logging ``event_for(record)``
        with it): its new record, else None."""
        reason = leases.check_reason(reason)
        work = partial(
            leases.cancel_queued, task_id=task_id, reason=reason, now=leases.check_now(now)
        )

        def events(result: tuple[TaskRecord | None, Any]) -> builtins.list[Event]:
            cancelled = result[0]
            event = None if cancelled is None or event_for is None else event_for(cancelled)
            return [] if event is None else [event]

        record, corrupt = await self._in_writer(work, events=events)
        self._leased([] if record is None else [record], corrupt)
        return record

    def report_progress(self, worker_id: str, record: TaskRecord, event: Event | None) -> None:
        """Write a running task's progress, and log `event` with it, if `worker_id`
        still holds its lease (without waiting for the commit)."""
        work = partial(leases.progress, worker=worker_id, record=record)
        try:
            self._require_writer().call(
                work, events=lambda written: [event] if written and event is not None else []
            )
        except StoreError as exc:
            if "writer" not in self._reported:
                self._reported.add("writer")
                logger.error("%s; progress is not written", exc)

    def request_cancel(self, task_id: str, reason: str | None) -> None:
        """Ask whichever process runs the task to cancel it (through the event log)."""
        self.log_event(
            build_trusted(
                CancelRequested,
                {
                    "task_id": task_id,
                    "task_type": "",
                    "owner": None,
                    "timestamp": time.time(),
                    "reason": reason,
                },
            )
        )

    async def next_due(self) -> float | None:
        """The earliest not-before time of a queued task (epoch seconds), if any."""
        return await self._read(leases.next_due)

    async def running_workers(self) -> builtins.list[str]:
        """The ids of the workers that hold leases now."""
        return await self._read(leases.running_workers)

    async def follow(self) -> None:
        """Deliver the events other processes log, in id order, until cancelled.

        SQLite has no notifications: the log is read every 5 ms while events keep
        coming, backing off to every 100 ms when idle (one indexed read each), and at
        once when a commit of this process leaves a gap.
        """
        interval = _POLL_MIN
        failing = False
        while True:
            self._poll_wake = wake = anyio.Event()
            with anyio.move_on_after(interval):
                await wake.wait()
            try:
                found = await self._poll_once()
            except StoreError as exc:
                if not failing:
                    logger.error("%r: reading the event log failed: %s", self, exc)
                failing = True
                interval = 1.0
                continue
            failing = False
            interval = _POLL_MIN if found else min(interval * 2, _POLL_MAX)

    async def _poll_once(self) -> int:
        delivery = self._delivery
        start = delivery.next_id - 1
        gap_before = delivery.gap  # a gap this read can fill (not one opened after it began)
        events = await self._read(lambda conn: read_events_after(conn, start, _POLL_BATCH))
        delivery.offer(events)
        if gap_before and delivery.gap and len(events) < _POLL_BATCH:
            # The read saw every event committed before the gap appeared: what is
            # still missing was trimmed from the log before anyone read it.
            delivery.skip_missing()
        return len(events)

    def _leased(
        self, records: builtins.list[TaskRecord], corrupt: builtins.list[CorruptRecord]
    ) -> builtins.list[TaskRecord]:
        for exc in corrupt:
            self._report_corrupt(exc)
        return records

    # -- reads -----------------------------------------------------------------------

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

    async def get(self, task_id: str) -> TaskRecord | None:
        """The task, or None; a corrupt row reads as its task failed with `CorruptRecord`."""
        await self.flush()
        row = await self._read(
            lambda conn: conn.execute(f"{_SELECT} WHERE id = ?", (task_id,)).fetchone()
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
                f"{_SELECT} WHERE key = ? AND type = ? AND owner IS ? "
                "AND state IN ('queued', 'running') LIMIT 1",
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
                f"{_SELECT} WHERE key = ? AND type = ? AND owner IS ? AND state = 'completed' "
                "AND finished_at >= ? ORDER BY finished_at DESC LIMIT 1",
                (key, task_type, owner, completed_since),
            ).fetchone()
        )
        if row is None:
            return None
        found = self._load(row)
        return found if found.state is TaskState.COMPLETED else None

    async def list(self, query: TaskQuery) -> builtins.list[TaskRecord]:
        """Matching tasks, oldest first; a corrupt row is listed as its task failed."""
        await self.flush()
        where, params = _where(query)
        sql = f"{_SELECT}{where} ORDER BY created_at, rowid LIMIT ? OFFSET ?"
        rows = await self._read(
            lambda conn: conn.execute(sql, (*params, query.limit, query.offset)).fetchall()
        )
        return [self._load(row) for row in rows]

    async def stats(self) -> StoreStats:
        """Counts by stored state; a row whose state no taskbus writes counts as failed."""
        await self.flush()
        rows = await self._read(
            lambda conn: conn.execute(
                "SELECT type, state, count(*) FROM tasks GROUP BY type, state"
            ).fetchall()
        )
        by_state: defaultdict[TaskState, int] = defaultdict(int)
        by_type: defaultdict[str, defaultdict[TaskState, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        for task_type, stored_state, count in rows:
            state = _STATES.get(stored_state, TaskState.FAILED)
            by_state[state] += count
            by_type[str(task_type)][state] += count
        return StoreStats(by_state=dict(by_state), by_type={k: dict(v) for k, v in by_type.items()})

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
                f"{_SELECT} WHERE state NOT IN {_FINAL_STATES} "
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

    def _settle_corrupt(self, exc: CorruptRecord) -> bool:
        self._report_corrupt(exc)
        row = salvage_row(exc, time.time())
        if row is None:
            logger.error("%r: a row without a usable id is left as it is", self)
            return False
        self._require_writer().put(row)
        logger.error("%r: task %s failed: its stored row is corrupt", self, exc.task_id)
        return True

    async def execute(
        self, sql: str, params: tuple[Any, ...] = ()
    ) -> builtins.list[tuple[Any, ...]]:
        """Run read-only SQL on the store's reader connection (for tools and tests)."""
        return await self._read(lambda conn: conn.execute(sql, params).fetchall())


def _events_of(
    event_for: Callable[[TaskRecord], Event | None] | None,
) -> Callable[[tuple[builtins.list[TaskRecord], Any]], builtins.list[Event]] | None:
    """The events to log with the records a lease step changed."""
    if event_for is None:
        return None

    def events(result: tuple[builtins.list[TaskRecord], Any]) -> builtins.list[Event]:
        found = (event_for(record) for record in result[0])
        return [event for event in found if event is not None]

    return events


def _event_number(event_id: str | None) -> int | None:
    """The log position after `event_id` (0 for None); None for an id this store
    never issues."""
    if event_id is None:
        return 0
    if not (event_id.isascii() and event_id.isdigit()) or len(event_id) > 19:
        return None
    return int(event_id)


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


def _lenient_text(data: bytes) -> str:
    """Text as SQLite holds it; bytes that are not UTF-8 become lone surrogates."""
    return data.decode("utf-8", "surrogateescape")


def _close_quietly(conn: sqlite3.Connection) -> None:
    """Close what a writer thread that ended late leaves behind (on that thread)."""
    try:
        conn.close()
    except sqlite3.Error:
        logger.exception("closing the SQLite writer connection failed")
