"""Where and when the SQLite store commits.

- a lone submit on an idle store is committed on the event loop's thread (no
  switch to the writer thread and back), and is durable when `add` returns;
- submits that arrive together are committed together by the writer thread;
- a submit while another connection holds the file's write lock never blocks
  the event loop: the writer thread waits for the lock instead;
- the writer thread writes the next group while the loop tells the waiters of
  the last one, and waiters are told in commit order.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from taskbus import TaskBus, TaskContext
from taskbus._record import TaskRecord, new_task_id
from taskbus.stores._sqlite_batch import Batch
from taskbus.stores._sqlite_writer import SqliteWriter
from taskbus.stores.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


async def noop(ctx: TaskContext) -> None:
    return None


def make_record() -> TaskRecord:
    now = time.time()
    return TaskRecord(new_task_id(), "jobs:echo", None, 5, now, 3, None, None)


@pytest.fixture
def written_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, int]]]:
    """(thread id, rows) of every group the writer writes."""
    seen: list[tuple[int, int]] = []
    write = SqliteWriter._write_safely

    def spy(writer: SqliteWriter, batch: Batch) -> None:
        seen.append((threading.get_ident(), len(batch.rows)))
        write(writer, batch)

    monkeypatch.setattr(SqliteWriter, "_write_safely", spy)
    yield seen


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """An open store on ``tmp_path / "jobs.db"``, its first writes committed."""
    opened = SqliteStore(tmp_path / "jobs.db")
    await opened.open()
    try:
        await opened.flush()
        yield opened
    finally:
        await opened.close()


def stored_ids(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM tasks")}


async def test_a_lone_submit_is_committed_on_the_event_loop(
    store: SqliteStore, written_on: list[tuple[int, int]]
) -> None:
    written_on.clear()
    record = make_record()
    await store.add(record)
    # Durable when add returns: another connection reads it.
    assert record.id in stored_ids(store.path)
    assert written_on == [(threading.get_ident(), 1)]


async def test_submits_that_arrive_together_are_committed_together(
    tmp_path: Path, written_on: list[tuple[int, int]]
) -> None:
    path = tmp_path / "jobs.db"
    store = SqliteStore(path)
    await store.open()
    records = [make_record() for _ in range(50)]
    try:
        await store.flush()
        written_on.clear()
        async with anyio.create_task_group() as tg:
            for record in records:
                tg.start_soon(store.add, record)
    finally:
        await store.close()
    assert {r.id for r in records} <= stored_ids(path)
    # At most one of them on the loop; the rest in a few groups of the thread.
    loop = threading.get_ident()
    assert sum(rows for thread, rows in written_on if thread == loop) <= 1
    assert len(written_on) <= 5, written_on


async def test_a_submit_never_blocks_the_loop_on_another_connections_lock(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    store = SqliteStore(path)
    await store.open()
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        await store.flush()
        other.execute("BEGIN IMMEDIATE")  # holds the write lock
        ticks = 0
        added = anyio.Event()
        record = make_record()

        async def submit() -> None:
            await store.add(record)
            added.set()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(submit)
                while ticks < 20:  # the loop keeps running while the lock is held
                    await anyio.sleep(0.005)
                    ticks += 1
                assert not added.is_set()
                await anyio.to_thread.run_sync(other.execute, "COMMIT")
                await added.wait()
        assert record.id in stored_ids(path)
    finally:
        other.close()
        await store.close()


async def test_waiters_are_told_in_commit_order_while_the_thread_writes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    told: list[int] = []
    finish = SqliteWriter._finish
    written: list[Batch] = []  # kept alive, so that no two are one object
    write = SqliteWriter._write_safely

    def numbered(writer: SqliteWriter, batch: Batch) -> None:
        written.append(batch)
        write(writer, batch)

    def recorded(writer: SqliteWriter, batch: Batch) -> None:
        told.append(next(n for n, seen in enumerate(written) if seen is batch))
        finish(writer, batch)

    monkeypatch.setattr(SqliteWriter, "_write_safely", numbered)
    monkeypatch.setattr(SqliteWriter, "_finish", recorded)
    store = SqliteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        for _ in range(5):
            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(store.add, make_record())
        await store.flush()
    finally:
        await store.close()
    assert told == list(range(len(written)))


async def test_owner_listing_uses_the_partial_owner_index_and_events_have_no_task_index(
    tmp_path: Path,
) -> None:
    store = SqliteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        plan = await store.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE owner = ? "
            "ORDER BY created_at, rowid LIMIT 10",
            ("alice",),
        )
        assert any("tasks_owner_created" in str(step) for step in plan), plan
        indexes = await store.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        assert ("events_task",) not in indexes
    finally:
        await store.close()


class _FailingBegin:
    """The writer's connection, but its first BEGIN (the inline path's) fails."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.failed = 0

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "BEGIN IMMEDIATE" and not self.failed:
            self.failed += 1
            raise sqlite3.OperationalError("disk I/O error")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)


async def test_a_failure_to_begin_on_the_loop_leaves_the_write_to_the_thread(
    tmp_path: Path, written_on: list[tuple[int, int]]
) -> None:
    path = tmp_path / "jobs.db"
    store = SqliteStore(path)
    await store.open()
    try:
        await store.flush()
        writer = store._writer
        assert writer is not None
        failing = _FailingBegin(writer._conn)
        writer._conn = failing  # type: ignore[assignment]
        written_on.clear()
        record = make_record()
        with anyio.fail_after(10):
            await store.add(record)
        assert failing.failed == 1
        assert record.id in stored_ids(path)
        assert [thread for thread, _ in written_on] != [threading.get_ident()]
        writer._conn = failing._conn
    finally:
        await store.close()


async def test_a_submit_does_not_wait_for_the_threads_checkpoint(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, written_on: list[tuple[int, int]]
) -> None:
    """The idle writer thread copies the WAL back on a connection of its own, so a
    submit meanwhile commits on the loop at once (it waited ~5 ms: a p99 of
    submit->result one task at a time)."""
    checkpointing = threading.Event()
    go_on = threading.Event()
    checkpoint = SqliteWriter._checkpoint

    def slow(writer: SqliteWriter) -> None:
        checkpointing.set()
        go_on.wait(10)
        checkpoint(writer)

    monkeypatch.setattr(SqliteWriter, "_checkpoint", slow)
    try:
        writer = store._require_writer()
        writer._commits = 10**6  # due for a checkpoint once idle
        writer.wake()
        assert await anyio.to_thread.run_sync(checkpointing.wait, 10)
        written_on.clear()
        record = make_record()
        with anyio.fail_after(5):
            await store.add(record)
        assert not go_on.is_set(), "committed while the checkpoint still runs"
        assert written_on == [(threading.get_ident(), 1)]
        assert record.id in stored_ids(store.path)
    finally:
        go_on.set()  # before the store closes


async def test_a_lone_task_is_committed_on_the_loop_from_submit_to_outcome(
    tmp_path: Path, written_on: list[tuple[int, int]]
) -> None:
    """On an idle bus, the submit (with its claim) and then the outcome are each
    committed on the event loop's thread: no thread switch between submit and
    result."""
    store = SqliteStore(tmp_path / "jobs.db")
    bus = TaskBus(store=store, workers=2, shutdown_grace=1.0)
    bus.task("jobs:noop")(noop)
    async with bus:
        with anyio.fail_after(5):
            await (await bus.submit("jobs:noop")).result()  # after the claims of the start
        for _ in range(3):
            written_on.clear()
            handle = await bus.submit("jobs:noop")
            with anyio.fail_after(5):
                await handle.result()
            threads = {thread for thread, _ in written_on}
            assert threads == {threading.get_ident()}, written_on
            # The submit with its claim, then the outcome (and perhaps the claim loop's
            # once-a-second look, committed on the loop too).
            assert 2 <= len(written_on) <= 3, written_on
