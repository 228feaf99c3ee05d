"""The SQLite store under values and failures it was not built for: nothing a
caller sends, and no row edited by hand, may hang, crash or poison it.

- values SQLite cannot bind fail their own write, and the writer thread goes on;
- a writer thread that is stuck or has died costs a caller at most
  `write_timeout`, and closing never hangs;
- a handler whose result or error text cannot be encoded fails its own task;
- rows corrupted with raw SQL fail their own tasks; the others run.

Buses here pass ``retention=None``: a purge caught by a stuck writer would end the
bus (a `StoreError` from the retention loop ends it, see test_sqlite.py).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from pydantic import BaseModel

from taskbus import (
    CorruptRecord,
    RetryPolicy,
    StoreError,
    TaskBus,
    TaskCompleted,
    TaskContext,
    TaskFailed,
    TaskState,
    UnstorableValue,
)
from taskbus._record import TaskRecord, new_task_id
from taskbus.stores._codec import row_from_record
from taskbus.stores._sqlite_batch import Batch
from taskbus.stores._sqlite_writer import SqliteWriter
from taskbus.stores.sqlite import SqliteStore
from taskbus.testing import EventRecorder, FakeClock

pytestmark = pytest.mark.anyio
MakeBus = Callable[..., TaskBus]
T0 = 1_700_000_000.0


class Params(BaseModel):
    year: int


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


def raw_rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


def raw_write(path: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(sql, params)
        conn.commit()


def make_record(task_type: str = "jobs:echo", input: Any = 1, **values: Any) -> TaskRecord:
    record = TaskRecord(new_task_id(), task_type, input, 5, values.pop("created_at", T0), 1)
    record.queued_at = record.created_at
    for name, value in values.items():
        setattr(record, name, value)
    return record


def register_echo(bus: TaskBus) -> None:
    @bus.task("jobs:echo")
    async def echo(ctx: TaskContext, n: int) -> int:
        return n


# -- values SQLite cannot bind --------------------------------------------------------


async def test_a_surrogate_in_owner_or_key_fails_that_add_and_the_store_goes_on(
    db_path: Path,
) -> None:
    store = SqliteStore(db_path)
    await store.open()
    try:
        with anyio.fail_after(5):  # before: the writer thread died and this hung for ever
            for field in ("owner", "key"):
                record = make_record(**{field: "k\ud800"})
                with pytest.raises(UnstorableValue, match=f"task {record.id} .*its {field}"):
                    await store.add(record)
                assert await store.get(record.id) is None
            good = make_record()
            await store.add(good)
            got = await store.get(good.id)
            assert got is not None and got.state is TaskState.QUEUED
    finally:
        await store.close()


async def _wait(writer: SqliteWriter, batch: Batch) -> None:
    await writer.wait(batch, 5.0, "write", shield=False)


async def test_a_row_sqlite_cannot_bind_fails_only_its_own_insert_and_the_writer_goes_on(
    db_path: Path,
) -> None:
    # Rows put straight to the writer, past the codec: a lone surrogate and an
    # integer beyond 64 bits in one group with a good row.
    store = SqliteStore(db_path)
    await store.open()
    try:
        writer = store._require_writer()
        bad_text = list(row_from_record(make_record()))
        bad_text[4] = "k\ud800"  # owner
        bad_int = list(row_from_record(make_record()))
        bad_int[3] = 2**70  # priority
        good = make_record()
        batch = writer.put(tuple(bad_text), insert=True)
        assert writer.put(tuple(bad_int), insert=True) is batch
        assert writer.put(row_from_record(good), insert=True) is batch
        with anyio.fail_after(5):
            await _wait(writer, batch)

        text_error, int_error = batch.errors[bad_text[0]], batch.errors[bad_int[0]]
        assert isinstance(text_error, UnstorableValue) and text_error.field == "owner"
        assert f"cannot write task {bad_text[0]}: its owner" in str(text_error)
        assert isinstance(int_error, UnstorableValue) and int_error.field == "priority"
        assert good.id not in batch.errors
        assert [row[0] for row in raw_rows(db_path, "SELECT id FROM tasks")] == [good.id]
        later = make_record()
        await store.add(later)  # the thread still serves
        assert len(raw_rows(db_path, "SELECT id FROM tasks")) == 2
    finally:
        await store.close()


async def test_an_update_that_can_never_be_written_is_given_up_and_logged_once(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore(db_path)
    await store.open()
    try:
        record = make_record()
        await store.add(record)
        writer = store._require_writer()
        row = list(row_from_record(record))
        row[18] = "page \ud800"  # message, past the codec (which would escape it)
        with caplog.at_level(logging.ERROR, logger="taskbus.stores.sqlite"):
            batch = writer.put(tuple(row))
            with anyio.fail_after(5):
                await _wait(writer, batch)
                assert writer.barrier() is None, "not queued again"
                await store.flush()
        assert isinstance(batch.errors[record.id], UnstorableValue)
        giving_up = [r for r in caplog.records if "giving up" in r.getMessage()]
        assert len(giving_up) == 1 and record.id in giving_up[0].getMessage()
        assert raw_rows(db_path, "SELECT message FROM tasks") == [(None,)]
    finally:
        await store.close()


async def test_a_call_that_raises_fails_only_its_caller(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    try:
        with anyio.fail_after(5):
            with pytest.raises(StoreError, match="ZeroDivisionError"):
                await store._in_writer(lambda conn: 1 / 0)
            assert await store._in_writer(lambda conn: 42) == 42
            assert await store.purge(keep=0) == 0
    finally:
        await store.close()


async def test_calls_written_one_by_one_after_a_failure_get_their_own_results(
    db_path: Path,
) -> None:
    """A group of calls that fails is run again call by call: each caller still gets
    its own result (a tuple stays a tuple), and only the failing one an error."""
    store = SqliteStore(db_path)
    await store.open()
    try:
        results: dict[str, Any] = {}

        async def call(name: str, fn: Callable[[sqlite3.Connection], Any]) -> None:
            try:
                results[name] = await store._in_writer(fn)
            except StoreError as exc:
                results[name] = exc

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:  # one batch: the thread is idle
                tg.start_soon(call, "pair", lambda conn: ([1], ["x"]))
                tg.start_soon(call, "bad", lambda conn: 1 / 0)
                tg.start_soon(call, "one", lambda conn: 42)
        assert results["pair"] == ([1], ["x"])
        assert results["one"] == 42
        assert isinstance(results["bad"], StoreError)
    finally:
        await store.close()


async def test_diagnostic_text_and_huge_counters_of_a_running_task_are_stored(
    db_path: Path,
) -> None:
    store = SqliteStore(db_path)
    await store.open()
    try:
        record = make_record()
        await store.add(record)
        record.move(TaskState.RUNNING)
        record.attempt = 1
        record.message, record.current, record.total = "page \ud800", 10**20, 10**21
        await store.claim(record)
        record.move(TaskState.CANCELLED)
        record.cancel_reason = "stop \udcff"
        record.finished_at = T0 + 1
        await store.finish(record)
        await store.flush()
    finally:
        await store.close()

    assert raw_rows(db_path, "SELECT state, message, cancel_reason FROM tasks") == [
        ("cancelled", "page \\ud800", "stop \\udcff")
    ]
    store = SqliteStore(db_path)
    await store.open()
    try:
        got = await store.get(record.id)
        assert got is not None
        assert (got.current, got.total) == (10**20, 10**21)
    finally:
        await store.close()


# -- a stuck or dead writer thread ------------------------------------------------------


class StuckWriter:
    """Makes the writer thread block in its next write until `release()`. Every
    write goes to the thread (none is committed on the event loop, `write_now`),
    as it does while the thread is busy."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self._release = threading.Event()
        self.threads: list[threading.Thread] = []
        original = SqliteWriter._write

        def write(writer: SqliteWriter, batch: Batch) -> None:
            self.threads.append(threading.current_thread())
            self.entered.set()
            self._release.wait(20)
            original(writer, batch)

        monkeypatch.setattr(SqliteWriter, "_write", write)
        monkeypatch.setattr(SqliteWriter, "write_now", lambda writer, most=0: False)

    def release(self) -> None:
        self._release.set()

    async def join(self) -> None:
        for thread in self.threads:
            await anyio.to_thread.run_sync(thread.join, 10)
            assert not thread.is_alive()


@pytest.fixture
def stuck(monkeypatch: pytest.MonkeyPatch) -> Iterator[StuckWriter]:
    writer = StuckWriter(monkeypatch)
    try:
        yield writer
    finally:
        writer.release()


async def test_a_submit_waiting_on_a_stuck_writer_gives_up_within_write_timeout(
    make_bus: MakeBus, db_path: Path, stuck: StuckWriter
) -> None:
    bus = make_bus(store=SqliteStore(db_path, write_timeout=0.2), retention=None)
    register_echo(bus)
    async with bus:
        with anyio.fail_after(5), pytest.raises(StoreError, match=r"writer thread is stuck"):
            await bus.submit("jobs:echo", 1)
        stuck.release()  # it answers again: submits work again
        handle = await bus.submit("jobs:echo", 2)
        assert await handle.result(timeout=5) == 2
    await stuck.join()


async def test_closing_a_bus_whose_writer_is_stuck_does_not_hang(
    make_bus: MakeBus, db_path: Path, stuck: StuckWriter
) -> None:
    bus = make_bus(store=SqliteStore(db_path, write_timeout=0.2), retention=None)
    register_echo(bus)
    with anyio.fail_after(10):
        async with bus:
            with pytest.raises(StoreError, match="stuck"):
                await bus.submit("jobs:echo", 1)
    # The stuck thread keeps the file until it ends; then it lets go of it.
    stuck.release()
    await stuck.join()
    async with make_bus(store=SqliteStore(db_path), retention=None):
        pass


class WriterKiller(BaseException):
    """Stands for a bug that ends the writer thread."""


async def test_a_dead_writer_thread_fails_waiters_at_once_and_later_calls_fast(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def die(writer: SqliteWriter, batch: Batch) -> None:
        raise WriterKiller("simulated bug")

    monkeypatch.setattr(SqliteWriter, "_write", die)
    store = SqliteStore(db_path, write_timeout=60)
    await store.open()
    try:
        with anyio.fail_after(5):  # far less than write_timeout: the death is reported
            with pytest.raises(StoreError, match=r"writer thread stopped \(WriterKiller"):
                await store.add(make_record())
            with pytest.raises(StoreError, match=r"writer thread stopped"):
                await store.add(make_record())
            with pytest.raises(StoreError, match=r"writer thread stopped"):
                await store.flush()
            record = make_record()
            await store.claim(record)  # a change is lost (logged), not raised at the executor
    finally:
        with anyio.fail_after(5):
            await store.close()
    assert any("writer thread stopped" in r.getMessage() for r in caplog.records)


async def test_write_timeout_must_be_positive(db_path: Path) -> None:
    for bad in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="write_timeout"):
            SqliteStore(db_path, write_timeout=bad)


# -- results and errors a handler gives that cannot be encoded ------------------------------


async def test_a_result_or_error_text_that_cannot_be_encoded_fails_only_its_own_task(
    make_bus: MakeBus, db_path: Path
) -> None:
    def build() -> TaskBus:
        bus = make_bus(store=SqliteStore(db_path))

        @bus.task("bad:bytes", retry=RetryPolicy.never())
        async def bad_bytes(ctx: TaskContext) -> Any:
            return b"\xff"

        @bus.task("bad:error", retry=RetryPolicy.never())
        async def bad_error(ctx: TaskContext) -> None:
            raise ValueError("bad \ud800")

        @bus.task("good:beside")
        async def beside(ctx: TaskContext, gate: int) -> str:
            return "fine"

        return bus

    bus = build()
    async with bus:
        recorder = EventRecorder(bus)
        good = await bus.submit("good:beside", 1)
        bytes_task = await bus.submit("bad:bytes")
        error_task = await bus.submit("bad:error")
        await recorder.wait_for(TaskFailed, count=2)
        assert await good.result(timeout=5) == "fine"
        failed_bytes = await bus.get(bytes_task.id)
        failed_error = await bus.get(error_task.id)
    assert failed_bytes.state is TaskState.FAILED and failed_bytes.error is not None
    assert "cannot be stored" in failed_bytes.error.message
    assert failed_error.state is TaskState.FAILED and failed_error.error is not None

    bus = build()
    async with bus:  # reopened: nothing runs again, nothing crashes
        recorder = EventRecorder(bus)
        snaps = {snap.id: snap for snap in await bus.list()}
        stats = await bus.stats()
    assert recorder.events == []
    assert stats.by_state == {TaskState.COMPLETED: 1, TaskState.FAILED: 2}
    assert snaps[good.id].result == "fine"
    after_bytes, after_error = snaps[bytes_task.id], snaps[error_task.id]
    assert after_bytes.error is not None and "cannot be stored" in after_bytes.error.message
    assert after_error.error is not None and after_error.error.message == "bad \\ud800"


# -- rows corrupted outside taskbus -------------------------------------------------------


async def _store_records(path: Path, records: list[TaskRecord]) -> None:
    store = SqliteStore(path)
    await store.open()
    try:
        for record in records:
            await store.add(record)
    finally:
        await store.close()


async def test_corrupt_rows_fail_their_own_tasks_and_the_others_run_including_delayed(
    make_bus: MakeBus, db_path: Path, fake_clock: FakeClock
) -> None:
    now = fake_clock.now()
    later = now + 60
    records = {
        "bad_input": make_record(input=1, created_at=now),
        "bad_state": make_record(input=2, created_at=now),
        "bad_priority": make_record(input=3, created_at=now, not_before=later),
        "delayed": make_record(input=4, created_at=now, not_before=later),
        "queued": make_record(input=5, created_at=now),
    }
    await _store_records(db_path, list(records.values()))
    ids = {name: record.id for name, record in records.items()}
    raw_write(db_path, "UPDATE tasks SET input = '{not json' WHERE id = ?", (ids["bad_input"],))
    raw_write(db_path, "UPDATE tasks SET state = 'paused' WHERE id = ?", (ids["bad_state"],))
    raw_write(db_path, "UPDATE tasks SET priority = 'high' WHERE id = ?", (ids["bad_priority"],))

    bus = make_bus(store=SqliteStore(db_path), clock=fake_clock)
    register_echo(bus)
    async with bus:
        recorder = EventRecorder(bus)
        assert await bus.result(ids["queued"], timeout=5) == 5
        fake_clock.advance(61)
        await recorder.wait_for(TaskCompleted, task_id=ids["delayed"])
        assert await bus.result(ids["delayed"], timeout=5) == 4
        snaps = {snap.id: snap for snap in await bus.list()}
        stats = await bus.stats()

    assert len(snaps) == 5
    assert stats.by_state == {TaskState.COMPLETED: 2, TaskState.FAILED: 3}
    for name, column in (
        ("bad_input", "input"),
        ("bad_state", "state"),
        ("bad_priority", "priority"),
    ):
        snap = snaps[ids[name]]
        assert snap.state is TaskState.FAILED, name
        assert snap.error is not None and snap.error.exception_type.endswith("CorruptRecord")
        assert ids[name] in snap.error.message and column in snap.error.message
    # Written back as valid rows: failed, with the error.
    for name in ("bad_input", "bad_state", "bad_priority"):
        [(state, error)] = raw_rows(
            db_path, "SELECT state, error FROM tasks WHERE id = ?", (ids[name],)
        )
        assert state == "failed" and ids[name] in error


async def test_text_that_is_not_utf8_in_a_row_breaks_neither_list_nor_get(
    make_bus: MakeBus, db_path: Path
) -> None:
    garbled_owner, garbled_message = make_record(), make_record()
    for record in (garbled_owner, garbled_message):
        record.move(TaskState.CANCELLED)
        record.finished_at = T0 + 1
    await _store_records(db_path, [garbled_owner, garbled_message])
    raw_write(
        db_path, "UPDATE tasks SET owner = CAST(x'ff61' AS TEXT) WHERE id = ?", (garbled_owner.id,)
    )
    raw_write(
        db_path,
        "UPDATE tasks SET message = CAST(x'c3' AS TEXT) WHERE id = ?",
        (garbled_message.id,),
    )

    async with make_bus(store=SqliteStore(db_path), retention=None) as bus:
        snaps = {snap.id: snap for snap in await bus.list()}
        owner_snap = await bus.get(garbled_owner.id)
        message_snap = await bus.get(garbled_message.id)

    assert set(snaps) == {garbled_owner.id, garbled_message.id}
    assert owner_snap.state is TaskState.FAILED and owner_snap.error is not None
    assert "owner" in owner_snap.error.message
    assert message_snap.state is TaskState.CANCELLED and message_snap.message == "\\xc3"


async def test_get_of_a_corrupt_final_row_reads_it_as_failed_naming_the_column(
    db_path: Path,
) -> None:
    record = make_record()
    await _store_records(db_path, [record])
    raw_write(
        db_path,
        "UPDATE tasks SET state = 'completed', result = 'oops{' , finished_at = 1 WHERE id = ?",
        (record.id,),
    )
    store = SqliteStore(db_path)
    await store.open()
    try:
        assert await store.recover() == []
        got = await store.get(record.id)
    finally:
        await store.close()
    assert got is not None and got.state is TaskState.FAILED
    assert got.error is not None and "result: not JSON" in got.error.message
    assert isinstance(CorruptRecord(record.id, {"result": "x"}), StoreError)
