"""The SQLite store's single writer: one thread, group commits.

The event loop hands it rows (the full current values of a record) and
functions to run inside a transaction. The thread takes everything pending,
writes it in one transaction (only the latest row per task, and every event in
one statement), commits, and queues the batch for the loop, which tells its
waiters while the thread writes the next one. Submitters that must know their
row is durable wait for their batch; other writes are not waited for, so a
burst of state changes costs one commit, not one each.

A lone submit on an idle store skips the thread (`write_now`): it is committed
on the event loop at once, saving the two thread switches that were most of its
latency, at the cost of blocking the loop for one small commit. Only one such
commit is made per pass of the loop, so submits that arrive together still go
to the thread and share a commit; and it never waits for a lock another
connection holds. Writes nobody waits for (a release, a started event) wake the
thread only at the next pass of the loop, and not while a submitter commits on
the loop pass after pass: its next commit carries them; when the thread is idle
they are committed on the loop too (a lone task: no thread switch at all).
Claims may stand by (`stand_by`): they run in the next transaction that inserts
tasks, so a task is stored and claimed in one commit. The thread checkpoints
the WAL while idle, on a connection of its own.

Failures stay with what caused them. A group that fails is written row by row,
so one bad row fails only itself (its submitter gets a `StoreError` naming the
task). A change to a stored task that failed for a reason that may pass (the
database busy or locked, the disk full) is tried again with a later group, at
most once a second; any other failure (a value SQLite refuses, a constraint) is
logged once and given up: the task keeps its last written state. A call that
fails fails only its caller. The thread outlives any exception raised for one
row or call; if it ends anyway, every waiter, and every later write, gets a
`StoreError` that says why at once. Waits are bounded (`wait`), so a stuck
thread costs a caller at most its timeout.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio import RunFinishedError
from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_exponential

from .._errors import StoreError, UnstorableValue
from .._events import Event
from ._codec import Row, escape_text, unstorable_column
from ._sqlite_batch import Batch, LoggingCall, number_events, report_calls, run_all, task_of
from ._sqlite_events import EventLogWriter
from ._sqlite_schema import UPSERT, connect, store_error

__all__ = ["SqliteWriter", "is_transient"]

logger = logging.getLogger("taskbus.stores.sqlite")

T = TypeVar("T")

_RETRY_INTERVAL = 1.0  # seconds between attempts to write updates that failed
#: Commits after which an idle writer checkpoints the WAL (commits do it only past
#: ``wal_autocheckpoint`` pages, see `_sqlite_schema.apply_pragmas`).
_CHECKPOINT_AFTER = 200
#: Pending writes (rows, calls, events) that `write_now` commits on the event loop.
_INLINE_MOST = 8

_STATE = 2  # index of the state column in a row
_FINAL = frozenset({"completed", "failed", "cancelled"})

#: Primary result codes of failures that may pass: busy, locked, out of memory,
#: read-only (permissions can change), interrupted, I/O error, full, cannot open,
#: locking protocol.
_TRANSIENT = frozenset({5, 6, 7, 8, 9, 10, 13, 14, 15})
#: Those of them that say nothing about the rows: every row of the group fails alike.
_WHOLE_GROUP = _TRANSIENT - {13}


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_transient(exc: BaseException) -> bool:
    """Whether writing again later may succeed where `exc` failed."""
    return isinstance(exc, sqlite3.OperationalError) and _code(exc) in _TRANSIENT


class SqliteWriter:
    """Owns the write connection and the thread that uses it."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        on_committed: Callable[[Batch], None],
        *,
        keep_events: int = 100_000,
        busy_timeout: float = 5.0,
    ) -> None:
        # The connection never waits for another's lock by itself: `_begin` waits on
        # the thread, and `write_now` on the event loop does not wait at all.
        conn.execute("PRAGMA busy_timeout = 0")
        self._conn = conn
        self._event_log = EventLogWriter(keep_events)
        self._path = path
        self._on_committed = on_committed
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pending = Batch()
        self._inflight: Batch | None = None
        self._stopping = False
        self._retrying: set[str] = set()  # tasks whose transient failure was logged
        self._on_exit: Callable[[], None] | None = None
        self._commits = 0  # since the last checkpoint
        self._checkpointer: sqlite3.Connection | None = None  # the thread's, for checkpoints
        self._exited = False
        #: Why the thread stopped serving, once it has (None while it serves).
        self.failure: StoreError | None = None
        self._token = anyio.lowlevel.current_token()
        native = self._token.native_token  # asyncio's is its loop; trio has no cheaper way
        self._loop = native if isinstance(native, asyncio.AbstractEventLoop) else None
        #: Batches committed (or failed) whose waiters the event loop has not told yet,
        #: in commit order; the thread goes on writing meanwhile.
        self._committed: deque[Batch] = deque()
        self._drain_scheduled = False
        #: Held by whoever runs a transaction: the thread, or `write_now` on the loop.
        self._conn_lock = threading.Lock()
        self._begun = False  # `write_now` began the transaction `_transaction` runs
        self._inline_this_pass = False
        self._wake_scheduled = False  # `_wake_soon` asked for a wake at the next pass
        self._inlined = False  # `write_now` committed since the last `_wake_if_pending`
        #: Calls that run in the next transaction that inserts rows, by worker.
        self._standing: dict[str, tuple[int, Callable[[sqlite3.Connection], Any]]] = {}
        self._standing_now = False  # a standing call waits for the next transaction
        self._busy_timeout = busy_timeout
        self._thread = threading.Thread(target=self._run, name="taskbus-sqlite-writer", daemon=True)
        self._thread.start()

    # -- called on the event loop -----------------------------------------------

    def put(
        self, row: Row, *, insert: bool = False, event: Event | None = None, wake: bool = True
    ) -> Batch:
        """Queue a row (replacing an older pending one for that task), and the event
        that says what changed, to commit together. With ``wake=False`` the thread is
        not woken: the caller tries `write_now` first, then calls `wake`.

        Raises the writer's `failure` if its thread has stopped.
        """
        with self._lock:
            if self.failure is not None:
                raise self.stopped_error()
            batch = self._pending
            batch.rows[row[0]] = row
            if insert:
                batch.inserts.add(row[0])
            if event is not None:
                batch.events.append(event)
        if wake and not self._wake.is_set():
            self._wake.set()
        return batch

    def wake(self) -> None:
        """Have the thread write what is pending."""
        if not self._wake.is_set():
            self._wake.set()

    def _wake_soon(self) -> None:
        """Have the thread write what is pending at the next pass of the event loop,
        unless a commit on the loop (`write_now`) carries it first."""
        # Writes nobody waits for (a release, a started event) wait one pass of the
        # loop: a sequential submitter's next submit then commits them with its own
        # row on the loop, one commit where there would be two with thread switches.
        if self._wake_scheduled or self._wake.is_set():
            return
        self._wake_scheduled = True
        try:
            self._on_loop_soon(self._wake_if_pending)
        except (RunFinishedError, RuntimeError):  # no loop to wait for: wake now
            self._wake_scheduled = False
            self._wake.set()

    def _on_loop_soon(self, fn: Callable[[], None]) -> None:
        """Call `fn` at the next pass of the event loop (call it on the loop)."""
        if self._loop is not None:  # no self-pipe write, unlike the thread-safe way
            self._loop.call_soon(fn)
        else:
            token = self._token
            token.backend_class.run_sync_soon(fn, (), token.native_token)

    def _wake_if_pending(self) -> None:
        self._wake_scheduled = False
        pending = self._pending
        if not (pending.rows or pending.calls or pending.events or self._standing_now):
            return
        if self._inlined:
            # A submitter commits on the loop pass after pass: its next commit
            # carries these (and if it stopped, the next pass wakes the thread).
            self._inlined = False
            self._wake_soon()
            return
        try:
            committed = self.write_now()  # the thread is idle: spare it two switches
        except Exception:  # noqa: BLE001 - a bug: the writer has ended and said why (`_died`)
            return
        if not committed:
            self.wake()

    def log(self, event: Event, *, soon: bool = False) -> None:
        """Queue an event that comes with no row (progress, a batch's); with `soon`,
        the thread wakes at the next pass of the event loop (`_wake_soon`)."""
        with self._lock:
            if self.failure is not None:
                raise self.stopped_error()
            self._pending.events.append(event)
        if soon:
            self._wake_soon()
        elif not self._wake.is_set():
            self._wake.set()

    def call(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        *,
        events: Callable[[Any], list[Event]] | None = None,
        done: Callable[[Any], None] | None = None,
        soon: bool = False,
    ) -> tuple[Batch, int]:
        """Run `fn(conn)` in the next transaction; its result lands in `batch.results`.

        With `events`, ``events(result)`` are logged in that same transaction. With
        `done`, ``done(result)`` is called on the event loop once it is committed
        (``done(None)`` if it failed), after the batch's events are delivered. With
        `soon`, the thread wakes at the next pass of the event loop (`_wake_soon`).
        """
        with self._lock:
            if self.failure is not None:
                raise self.stopped_error()
            batch = self._pending
            if events is None and done is None:
                batch.calls.append(fn)
            else:
                batch.calls.append(LoggingCall(fn, events, done))
            index = len(batch.calls) - 1
        if soon:
            self._wake_soon()
        else:
            self._wake.set()
        return batch, index

    def stand_by(
        self,
        worker: str,
        token: int,
        fn: Callable[[sqlite3.Connection], Any],
        *,
        at_once: bool = False,
    ) -> None:
        """Run `fn(conn)` in the next transaction that inserts rows (once), for
        `worker`, or (`at_once`) in the next transaction, which it wakes the thread
        for; it replaces a standing call of that worker that no batch took. The batch
        records its index by `token` (`Batch.standing`)."""
        with self._lock:
            if self.failure is not None:
                raise self.stopped_error()
            self._standing[worker] = (token, fn)
            if at_once:
                self._standing_now = True
        if at_once:
            self._wake_soon()

    def withdraw_standing(self, worker: str) -> int | None:
        """Take back `worker`'s standing call: its token, None if it has none that no
        batch took."""
        with self._lock:
            withdrawn = self._standing.pop(worker, None)
            if not self._standing:
                self._standing_now = False
        return None if withdrawn is None else withdrawn[0]

    def _take_pending(self) -> Batch:
        """Swap in a new pending batch and return the old one, with the standing
        calls if it inserts rows (call with the lock held)."""
        batch, self._pending = self._pending, Batch()
        if self._standing and (batch.inserts or self._standing_now):
            for token, fn in self._standing.values():
                batch.standing[token] = len(batch.calls)
                batch.calls.append(fn)
            self._standing = {}
            self._standing_now = False
        return batch

    def stopped_error(self) -> StoreError:
        """A new `StoreError` saying why the thread stopped (call once it has)."""
        failure = self.failure
        assert failure is not None
        error = StoreError(str(failure))
        error.__cause__ = failure.__cause__
        return error

    def withdraw(self, batch: Batch, task_id: str) -> bool:
        """Take back a row not yet handed to the thread; False if it is too late."""
        with self._lock:
            if batch is self._pending and task_id in batch.rows:
                del batch.rows[task_id]
                batch.inserts.discard(task_id)
                batch.events = [e for e in batch.events if task_of(e) != task_id]
                return True
        return False

    def is_pending(self, task_id: str) -> bool:
        """Whether a row of `task_id` waits for the next transaction (retried, say)."""
        with self._lock:
            return task_id in self._pending.rows

    def barrier(self) -> Batch | None:
        """The batch to wait for so that every write made so far is committed."""
        with self._lock:
            if self._pending.rows or self._pending.calls or self._pending.events:
                return self._pending
            return self._inflight

    async def wait(self, batch: Batch, timeout: float, doing: str, *, shield: bool) -> None:
        """Wait for `batch`, at most `timeout` seconds; then raise a `StoreError`."""
        with anyio.move_on_after(timeout, shield=shield):
            await batch.done.wait()
        if batch.done.is_set():
            return
        if self.failure is not None:
            raise self.stopped_error()
        state = "is stuck" if self._thread.is_alive() else "has stopped"
        raise StoreError(
            f"SQLite store {str(self._path)!r}: cannot {doing}: its writer thread {state} "
            f"(no answer within {timeout:g}s)"
        )

    async def stop(self, timeout: float) -> bool:
        """Write what is pending, then end the thread; False if it did not end in time."""
        self._stopping = True
        self._wake.set()
        await anyio.to_thread.run_sync(self._thread.join, timeout)
        if self._thread.is_alive():
            self._conn.interrupt()  # a statement that would run for ever
            await anyio.to_thread.run_sync(self._thread.join, min(timeout, 1.0))
        self.drain()  # what the thread wrote last is told now, not after the close
        return not self._thread.is_alive()

    def when_ended(self, cleanup: Callable[[], None]) -> None:
        """Run `cleanup` once the thread has ended: at once if it has, else on it."""
        with self._lock:
            if not self._exited:
                self._on_exit = cleanup
                return
        cleanup()

    # -- the writer thread ----------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # noqa: BLE001 - reported to every waiter, then the thread ends
            self._died(exc)
        finally:
            if self._checkpointer is not None:
                self._checkpointer.close()
            with self._lock:
                self._exited = True
                cleanup, self._on_exit = self._on_exit, None
            if cleanup is not None:
                cleanup()

    def _serve(self) -> None:
        while True:
            with self._lock:
                # Rows pending without a wake-up are failed updates: retry them
                # once a second rather than in a hot loop.
                retry_after = _RETRY_INTERVAL if self._pending.rows else None
                idle = not self._wake.is_set()
            if idle and self._commits >= _CHECKPOINT_AFTER:
                self._checkpoint()  # on a connection of its own: commits go on meanwhile
            self._wake.wait(retry_after)
            self._wake.clear()
            with self._conn_lock:
                with self._lock:
                    batch = self._take_pending()
                    stopping = self._stopping
                    busy = bool(batch.rows or batch.calls or batch.events)
                    if busy:
                        self._inflight = batch
                if busy:
                    self._write_safely(batch)
                    self._commits += 1
                    self._hand_back(batch)
            if stopping and self._stop_now(batch):
                return

    def write_now(self, most: int = _INLINE_MOST) -> bool:
        """On the event loop: commit what is pending here and now, if the thread is
        idle, nothing it wrote waits to be told, and at most `most` writes are
        pending; True if it did (their waiters are told before it returns).

        A lone submit so skips two thread switches (most of its latency), at the
        cost of blocking the loop for one small commit. Never waits for a lock: if
        another connection holds the file, the thread writes it as usual.
        """
        pending = self._pending
        if (
            self._inline_this_pass
            or self._stopping
            or self._committed
            or self._inflight is not None
            or len(pending.rows) + len(pending.calls) + len(pending.events) > most
            or not self._conn_lock.acquire(blocking=False)
        ):
            return False
        try:
            with self._lock:
                if self.failure is not None or self._pending is not pending:
                    return False
                if not self._begin_at_once():
                    return False
                batch = self._take_pending()
                self._inflight = batch
            self._begun = True
            try:
                self._write_safely(batch)
            except BaseException as exc:  # a bug: the writer ends, as its thread would
                self._died_inline(exc)
                if not isinstance(exc, Exception | KeyboardInterrupt | SystemExit):
                    return True  # reported to the waiters (`_died`)
                raise
            self._commits += 1
        finally:
            self._begun = False
            self._conn_lock.release()
        # Once per pass of the event loop: submitters that run in the same pass (many
        # at once) wait for the thread, which commits them together.
        self._inline_this_pass = self._inlined = True
        self._on_loop_soon(self._next_pass)
        if self._commits >= _CHECKPOINT_AFTER:
            self.wake()  # the thread checkpoints once it finds nothing to write
        contextvars.Context().run(self._finish, batch)  # as the thread's hand-back would
        return True

    def _died_inline(self, exc: BaseException) -> None:
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                logger.debug("rollback after a failed write failed", exc_info=True)
        self._died(exc)
        self._stopping = True
        self._wake.set()

    def _next_pass(self) -> None:
        self._inline_this_pass = False

    def _begin_at_once(self) -> bool:
        """BEGIN IMMEDIATE without waiting for another connection's lock; False
        (nothing begun) if it cannot: the thread then writes, and reports what fails."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            if self._conn.in_transaction:
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    logger.debug("rollback of an inline BEGIN failed", exc_info=True)
            return False
        return True

    def _begin(self) -> None:
        """BEGIN IMMEDIATE on the thread, waiting up to the busy timeout while another
        connection holds the file's write lock (as SQLite's own busy handler would)."""
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if _code(exc) != sqlite3.SQLITE_BUSY:
                raise
        for attempt in Retrying(
            retry=retry_if_exception(lambda exc: _code(exc) == sqlite3.SQLITE_BUSY),
            stop=stop_after_delay(self._busy_timeout),
            wait=wait_exponential(multiplier=0.001, max=0.05),
            reraise=True,
        ):
            with attempt:
                self._conn.execute("BEGIN IMMEDIATE")

    def _hand_back(self, batch: Batch) -> None:
        """Queue a written batch for the event loop, without waiting for it: the
        thread writes the next batch while the loop tells this one's waiters."""
        with self._lock:
            self._committed.append(batch)
            if self._drain_scheduled:
                return
            self._drain_scheduled = True
        token = self._token
        try:
            token.backend_class.run_sync_soon(self.drain, (), token.native_token)
        except (RunFinishedError, RuntimeError):  # the event loop has ended: nobody waits
            logger.debug("writer of %r: its event loop has ended", str(self._path))

    def _checkpoint(self) -> None:
        """Copy the WAL back into the file while nothing waits (a commit would
        otherwise do it, and its waiters with it). PASSIVE, and on a connection of
        its own: it blocks no reader, and a submit committed on the event loop
        meanwhile (`write_now`) does not wait for it."""
        self._commits = 0
        try:
            if self._checkpointer is None:
                self._checkpointer = connect(self._path, busy_timeout=0)
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error as exc:
            logger.debug("SQLite store %r: checkpoint failed: %s", str(self._path), exc)

    def _died(self, exc: BaseException) -> None:
        failure = StoreError(
            f"SQLite store {str(self._path)!r}: its writer thread stopped "
            f"({type(exc).__name__}: {escape_text(str(exc))}); close and open the store again"
        )
        failure.__cause__ = exc
        logger.critical("%s", failure, exc_info=exc)
        with self._lock:
            self.failure = failure
            batches = [batch for batch in (self._inflight, self._pending) if batch is not None]
            self._inflight = None
        for batch in batches:
            batch.fail(failure)
        token = self._token
        try:
            token.backend_class.run_sync_soon(_set_done, (batches,), token.native_token)
        except (RunFinishedError, RuntimeError):  # the event loop has ended: nobody waits
            logger.debug("writer of %r stopped after its event loop", str(self._path))

    def _stop_now(self, last: Batch) -> bool:
        with self._lock:
            pending = self._pending
            left = len(pending.rows) + len(pending.calls) + len(pending.events)
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

    def _write_safely(self, batch: Batch) -> None:
        try:
            self._write(batch)
        except Exception as exc:
            logger.exception("SQLite store %r: a group of writes failed", str(self._path))
            error = StoreError(
                f"SQLite store {str(self._path)!r}: cannot write: {type(exc).__name__}: "
                f"{escape_text(str(exc))}"
            )
            error.__cause__ = exc
            batch.fail(error)

    def _write(self, batch: Batch) -> None:
        if (batch.rows or batch.events) and batch.calls:
            # One transaction for everything, the common case under load (one
            # commit, not two); if anything in it fails, the parts alone below.
            try:
                ids, results = self._transaction(partial(self._write_all, batch))
            except Exception:  # noqa: BLE001 - each part alone below keeps failures apart
                logger.debug("a group of writes failed; writing its parts alone")
            else:
                batch.results = dict(enumerate(results))
                number_events(batch, ids, batch.calls)
                if self._retrying:
                    self._retrying.difference_update(batch.rows)
                return
        self._write_parts(batch)

    def _write_all(self, batch: Batch, conn: sqlite3.Connection) -> tuple[list[int], list[Any]]:
        if batch.rows:
            conn.executemany(UPSERT, batch.rows.values())
        results = [fn(conn) for fn in batch.calls]
        return self._log(conn, batch.events, batch.calls), results

    def _log(
        self,
        conn: sqlite3.Connection,
        events: list[Event],
        calls: list[Callable[[sqlite3.Connection], Any]],
    ) -> list[int]:
        """Insert `events` and those the `calls` asked for, in one statement."""
        logged = [*events]
        for fn in calls:
            if isinstance(fn, LoggingCall) and fn.to_log:
                logged.extend(fn.to_log)
        return self._event_log.insert(conn, logged) if logged else []

    def _write_parts(self, batch: Batch) -> None:
        if batch.rows or batch.events:
            try:
                ids = self._transaction(partial(self._write_group, batch))
            except Exception as exc:  # noqa: BLE001 - sorted out row by row below
                if batch.rows:
                    self._write_one_by_one(batch, exc)
                self._write_events_alone(batch)
            else:
                number_events(batch, ids, ())
                if self._retrying:
                    self._retrying.difference_update(batch.rows)
        if batch.calls:
            self._run_calls(batch)

    def _write_group(self, batch: Batch, conn: sqlite3.Connection) -> list[int]:
        if batch.rows:
            conn.executemany(UPSERT, batch.rows.values())
        return self._event_log.insert(conn, batch.events) if batch.events else []

    def _write_events_alone(self, batch: Batch) -> None:
        # After a failed group: the events of tasks whose insert failed never
        # happened (their submit raises); the others are logged on their own.
        failed = {task_id for task_id in batch.errors if task_id in batch.inserts}
        if failed:
            batch.events = [e for e in batch.events if task_of(e) not in failed]
        if not batch.events:
            return
        try:
            ids = self._transaction(partial(self._event_log.insert, events=batch.events))
        except Exception:
            # Delivered unnumbered: listeners hear them, nobody can resume from them.
            logger.exception(
                "SQLite store %r: %d event(s) could not be logged",
                str(self._path),
                len(batch.events),
            )
        else:
            number_events(batch, ids, ())

    def _write_one_by_one(self, batch: Batch, group_error: Exception) -> None:
        if _code(group_error) in _WHOLE_GROUP:  # busy or locked: every row alike
            for task_id, row in batch.rows.items():
                self._row_failed(batch, task_id, row, group_error)
            return
        for task_id, row in batch.rows.items():
            try:
                self._transaction(partial(_upsert_one, row=row))
            except Exception as exc:  # noqa: BLE001 - the row's own failure, kept for its waiter
                self._row_failed(batch, task_id, row, exc)

    def _row_failed(self, batch: Batch, task_id: str, row: Row, exc: Exception) -> None:
        error = self._row_error(task_id, row, exc)
        batch.errors[task_id] = error
        if task_id in batch.inserts:
            logger.warning("%s", error)  # its submit raises it
        elif not is_transient(exc):
            logger.error(
                "%s; giving up on this change (the task keeps its last written state)", error
            )
        elif task_id not in self._retrying:
            self._retrying.add(task_id)
            logger.error("%s; trying again every %gs", error, _RETRY_INTERVAL)

    def _row_error(self, task_id: str, row: Row, exc: Exception) -> StoreError:
        if isinstance(exc, sqlite3.Error):
            return store_error(self._path, exc, "write", task_id=task_id)
        column = unstorable_column(row)
        where = f"its {column}" if column else "a value"
        error = UnstorableValue(
            f"SQLite store {str(self._path)!r}: cannot write task {escape_text(task_id)}: "
            f"{where} cannot be stored ({type(exc).__name__}: {escape_text(str(exc))})",
            task_id=task_id,
            field=column,
        )
        error.__cause__ = exc
        return error

    def _run_calls(self, batch: Batch) -> None:
        calls = batch.calls
        try:
            results, ids = self._transaction(partial(run_all, calls, self._log))
        except Exception:  # noqa: BLE001 - each call alone below, so one fails only itself
            for index, fn in enumerate(calls):
                try:
                    (batch.results[index],), ids = self._transaction(
                        partial(run_all, [fn], self._log)
                    )
                except Exception as exc:  # noqa: BLE001 - the call's own failure, for its caller
                    batch.call_errors[index] = self._call_error(exc)
                else:
                    number_events(batch, ids, [fn], start=len(batch.events))
        else:
            batch.results = dict(enumerate(results))
            number_events(batch, ids, calls, start=len(batch.events))

    def _call_error(self, exc: Exception) -> StoreError:
        if isinstance(exc, sqlite3.Error):
            error = store_error(self._path, exc, "write")
            logger.error("%s", error)
            return error
        logger.error("SQLite store %r: a write failed", str(self._path), exc_info=exc)
        if isinstance(exc, StoreError):
            return exc
        error = StoreError(
            f"SQLite store {str(self._path)!r}: cannot write: {type(exc).__name__}: "
            f"{escape_text(str(exc))}"
        )
        error.__cause__ = exc
        return error

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if self._begun:  # by `write_now`, for this first transaction only
            self._begun = False
        else:
            self._begin()
        try:
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (disk full)
                conn.execute("ROLLBACK")
            raise
        return result

    def drain(self) -> None:
        """On the event loop: tell the waiters of every batch written so far, in
        commit order."""
        while True:
            with self._lock:
                if not self._committed:
                    self._drain_scheduled = False
                    return
                batch = self._committed.popleft()
            self._finish(batch)

    def _finish(self, batch: Batch) -> None:
        try:
            if batch.errors:
                self._requeue_updates(batch)
            with self._lock:
                if self._inflight is batch:
                    self._inflight = None
            self._on_committed(batch)
        except Exception:
            logger.exception("SQLite store %r: after a commit", str(self._path))
        finally:
            batch.done.set()

    def _requeue_updates(self, batch: Batch) -> None:
        # Rows of tasks whose insert failed belong to a submit that raised: the task
        # does not exist. Updates to stored tasks that failed for a reason that may
        # pass are tried again with the next batch (a newer row for the task wins).
        with self._lock:
            pending = self._pending
            for task_id, error in batch.errors.items():
                if (
                    task_id not in batch.inserts
                    and task_id not in pending.rows
                    and is_transient(error.__cause__ or error)
                ):
                    pending.rows[task_id] = batch.rows[task_id]

    @staticmethod
    def is_final(row: Row) -> bool:
        return row[_STATE] in _FINAL


def _upsert_one(conn: sqlite3.Connection, *, row: Row) -> None:
    conn.execute(UPSERT, row)


def _set_done(batches: list[Batch]) -> None:
    for batch in batches:
        try:
            report_calls(batch)  # each gets None: the writer stopped
        finally:
            batch.done.set()
