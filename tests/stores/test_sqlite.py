"""The SQLite store through a `TaskBus`: reopening, durability, clear errors,
concurrent submitters, idempotency keys, retention, and listing.

Tests that provoke write failures pass ``retention=None``: the retention loop's
first purge can land in the same group commit as the failing write, and a
`StoreError` from a purge currently ends the bus (reported to the lead).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import pytest
from pydantic import BaseModel

from taskbus import (
    FatalError,
    RetentionPolicy,
    RetryPolicy,
    StoreError,
    TaskBus,
    TaskCompleted,
    TaskContext,
    TaskFailedError,
    TaskHandle,
    TaskStarted,
    TaskState,
)
from taskbus._record import TaskRecord, new_task_id
from taskbus.stores import TaskQuery
from taskbus.stores._sqlite_schema import SCHEMA_VERSION
from taskbus.stores.sqlite import SqliteStore
from taskbus.testing import EventRecorder, FakeClock

pytestmark = pytest.mark.anyio
MakeBus = Callable[..., TaskBus]


class Params(BaseModel):
    year: int


class Report(BaseModel):
    rows: int
    title: str = "report"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


def register_reports(bus: TaskBus) -> None:
    @bus.task("reports:build")
    async def build(ctx: TaskContext, params: Params) -> Report:
        return Report(rows=params.year, title=f"year {params.year}")


def raw_rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows read through a separate, plain `sqlite3` connection."""
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


# -- close and reopen ---------------------------------------------------------------


async def test_a_delayed_task_runs_after_reopen_with_a_typed_result(
    make_bus: MakeBus, db_path: Path, fake_clock: FakeClock
) -> None:
    def build() -> TaskBus:
        bus = make_bus(store=SqliteStore(db_path), clock=fake_clock)
        register_reports(bus)
        return bus

    bus = build()
    async with bus:
        handle = await bus.submit("reports:build", {"year": 2025}, owner="alice", delay=60)
    assert bus.shutdown_report is not None
    assert bus.shutdown_report.left_queued == []  # queued in the store, not claimed here

    bus = build()
    async with bus:
        recorder = EventRecorder(bus)
        snap = await bus.get(handle.id)
        assert (snap.state, snap.owner, snap.attempts) == (TaskState.QUEUED, "alice", 0)
        fake_clock.advance(61)
        await recorder.wait_for(TaskCompleted, task_id=handle.id)
        result = await bus.result(handle.id, timeout=5)
    assert isinstance(result, Report)
    assert result == Report(rows=2025, title="year 2025")

    bus = build()
    async with bus:  # now read back from the file, not from a live record
        result = await bus.result(handle.id, timeout=5)
        snap = await bus.get(handle.id)
    assert isinstance(result, Report)
    assert result == Report(rows=2025, title="year 2025")
    assert (snap.state, snap.attempts) == (TaskState.COMPLETED, 1)
    assert snap.result == result, "snapshots carry the typed result too"


async def test_tasks_left_queued_at_shutdown_run_after_reopen(
    make_bus: MakeBus, db_path: Path
) -> None:
    url = f"sqlite:///{db_path}"
    bus = make_bus(store=url, workers=1, shutdown_grace=0.05)
    register_reports(bus)

    @bus.task("jobs:block")
    async def block(ctx: TaskContext) -> None:
        await anyio.sleep_forever()

    async with bus:
        recorder = EventRecorder(bus)
        blocker = await bus.submit("jobs:block")
        await recorder.wait_for(TaskStarted, task_id=blocker.id)
        waiting = [await bus.submit("reports:build", {"year": year}) for year in (1999, 2000)]
    assert bus.shutdown_report is not None
    assert bus.shutdown_report.handed_back == [blocker.id]  # durable: not cancelled
    assert bus.shutdown_report.cancelled == []
    assert bus.shutdown_report.left_queued == []  # queued in the store, not claimed here

    bus = make_bus(store=url)
    register_reports(bus)
    async with bus:
        results = [await bus.result(handle.id, timeout=5) for handle in waiting]
        with anyio.fail_after(5):
            while not len(bus._held):  # noqa: ASYNC110 - a count, no event
                await anyio.sleep(0.01)
        blocked = await bus.get(blocker.id)
    assert results == [Report(rows=1999, title="year 1999"), Report(rows=2000, title="year 2000")]
    assert all(isinstance(result, Report) for result in results)
    # Handed back, and held: this bus does not register its type.
    assert (blocked.state, blocked.attempts) == (TaskState.QUEUED, 0)


async def test_a_failed_tasks_bounded_traceback_survives_reopen(
    make_bus: MakeBus, db_path: Path
) -> None:
    def build() -> TaskBus:
        bus = make_bus(store=SqliteStore(db_path))

        @bus.task("jobs:explode", retry=RetryPolicy.never())
        async def explode(ctx: TaskContext) -> None:
            raise FatalError("bad row: " + "x" * 20_000)

        return bus

    bus = build()
    async with bus:
        handle = await bus.submit("jobs:explode")
        before = await handle.wait(timeout=5)
    assert before.state is TaskState.FAILED
    assert before.error is not None and before.error.traceback is not None
    assert len(before.error.traceback) == 8192
    assert before.error.traceback.rstrip().endswith("x" * 100)

    bus = build()
    async with bus:
        after = await bus.get(handle.id)
        with pytest.raises(TaskFailedError) as failed:
            await bus.result(handle.id, timeout=5)
    assert after.error == before.error
    assert failed.value.snapshot.error == before.error


# -- add durability -----------------------------------------------------------------


async def test_a_submitted_task_is_in_the_file_when_submit_returns(
    make_bus: MakeBus, db_path: Path
) -> None:
    bus = make_bus(store=SqliteStore(db_path))
    register_reports(bus)
    async with bus:
        handles = [
            await bus.submit("reports:build", {"year": year}, owner="alice", delay=3600)
            for year in range(2020, 2025)
        ]
        for year, handle in zip(range(2020, 2025), handles, strict=True):
            rows = raw_rows(
                db_path, "SELECT state, type, owner, input FROM tasks WHERE id = ?", (handle.id,)
            )
            assert len(rows) == 1
            state, task_type, owner, stored_input = rows[0]
            assert (state, task_type, owner) == ("queued", "reports:build", "alice")
            assert json.loads(stored_input) == {"year": year}


# -- clear errors -------------------------------------------------------------------


def _read_bytes(path: Path) -> bytes:
    return path.read_bytes()


def _write_random_bytes(path: Path) -> bytes:
    data = random.Random(0).randbytes(16_384)
    path.write_bytes(data)
    return data


async def test_a_corrupt_file_is_a_clear_error(make_bus: MakeBus, db_path: Path) -> None:
    data = _write_random_bytes(db_path)

    for _ in range(2):  # the failed open let go of its lock: the same error again
        with pytest.raises(StoreError, match=r"not a database.*corrupt") as error:
            async with make_bus(store=SqliteStore(db_path)):
                pass
        assert str(db_path) in str(error.value)
    assert _read_bytes(db_path) == data


def _corrupt_pages_after_the_schema(path: Path) -> None:
    data = bytearray(path.read_bytes())
    noise = random.Random(1)
    for offset in range(2 * 4096, len(data)):
        data[offset] = noise.randrange(256)
    path.write_bytes(bytes(data))


async def test_a_damaged_table_is_a_clear_error_when_read(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    try:
        async with anyio.create_task_group() as tg:  # one commit for them all
            for i in range(50):
                record = TaskRecord(new_task_id(), "jobs:fill", "y" * 3000, 5, 1.7e9 + i)
                tg.start_soon(store.add, record)
    finally:
        await store.close()
    _corrupt_pages_after_the_schema(db_path)

    store = SqliteStore(db_path)
    # Page 1 (the schema) is intact; opening reads the event log's position, reading
    # the tasks reads the rest: either meets the damage, and says so.
    with pytest.raises(StoreError, match=r"malformed.*corrupt"):
        await store.open()
        try:
            await store.recover()
        finally:
            await store.close()


def _make_foreign_database(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('ada')")
        conn.commit()


async def test_another_applications_database_is_refused(make_bus: MakeBus, db_path: Path) -> None:
    _make_foreign_database(db_path)

    with pytest.raises(StoreError, match="belongs to another application"):
        async with make_bus(store=SqliteStore(db_path)):
            pass

    assert raw_rows(db_path, "SELECT name FROM users") == [("ada",)]
    assert raw_rows(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'") == [("users",)]
    assert raw_rows(db_path, "PRAGMA journal_mode") != [("wal",)], "its journal mode is untouched"
    assert not db_path.with_name(db_path.name + ".lock").exists(), "no lock file left beside it"


async def test_a_database_from_a_newer_taskbus_is_refused(make_bus: MakeBus, db_path: Path) -> None:
    async with make_bus(store=SqliteStore(db_path)):
        pass
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(StoreError, match=rf"schema version {SCHEMA_VERSION + 1}.*newer taskbus"):
        async with make_bus(store=SqliteStore(db_path)):
            pass


async def test_two_buses_share_one_file_and_each_task_runs_once(
    make_bus: MakeBus, db_path: Path
) -> None:
    ran: list[str] = []

    def build() -> TaskBus:
        bus = make_bus(store=SqliteStore(db_path), workers=2)

        @bus.task("jobs:count")
        async def count(ctx: TaskContext) -> str:
            ran.append(ctx.task_id)
            await anyio.lowlevel.checkpoint()
            return ctx.task_id

        return bus

    async with build() as first, build() as second:
        handles = [await (first if i % 2 else second).submit("jobs:count") for i in range(40)]
        results = [await first.result(handle.id, timeout=10) for handle in handles]
        assert results == [handle.id for handle in handles]
        # A task submitted to one runs in either, and both see it finish.
        assert [(await second.get(h.id)).state for h in handles] == [TaskState.COMPLETED] * 40
    assert sorted(ran) == sorted(handle.id for handle in handles)  # each exactly once


async def test_a_database_locked_at_open_is_a_clear_error(make_bus: MakeBus, db_path: Path) -> None:
    with closing(sqlite3.connect(db_path, isolation_level=None)) as holder:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(StoreError, match=r"locked.*another connection"):
            async with make_bus(store=SqliteStore(db_path, busy_timeout=0.05)):
                pass
        holder.execute("ROLLBACK")

    async with make_bus(store=SqliteStore(db_path)):
        pass


async def test_a_write_locked_database_fails_the_submit_clearly(
    make_bus: MakeBus, db_path: Path
) -> None:
    async with make_bus(store=SqliteStore(db_path)):
        pass  # a taskbus database, in WAL mode
    bus = make_bus(store=SqliteStore(db_path, busy_timeout=0.05), retention=None)
    register_reports(bus)
    async with bus:
        with closing(sqlite3.connect(db_path, isolation_level=None)) as holder:
            holder.execute("BEGIN EXCLUSIVE")
            with pytest.raises(StoreError, match="cannot write: database is locked"):
                await bus.submit("reports:build", {"year": 1})
            holder.execute("ROLLBACK")

        handle = await bus.submit("reports:build", {"year": 2})
        assert await handle.result(timeout=5) == Report(rows=2, title="year 2")
        assert [snap.id for snap in await bus.list()] == [handle.id]


async def test_an_unwritable_location_is_a_clear_error(make_bus: MakeBus, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        # Root ignores permission bits, so a read-only directory cannot be made
        # here; a path "under" a regular file is just as unwritable.
        (tmp_path / "afile").write_text("not a directory")
        path = tmp_path / "afile" / "jobs.db"
        with pytest.raises(StoreError, match=r"cannot open.*not writable"):
            async with make_bus(store=SqliteStore(path)):
                pass
        return
    locked_dir = tmp_path / "readonly"
    locked_dir.mkdir()
    locked_dir.chmod(0o555)
    try:
        with pytest.raises(StoreError, match=r"cannot open.*not writable"):
            async with make_bus(store=SqliteStore(locked_dir / "jobs.db")):
                pass
    finally:
        locked_dir.chmod(0o755)


async def test_a_read_only_database_is_a_clear_error(make_bus: MakeBus, db_path: Path) -> None:
    # A read-only file cannot be made as root either: PRAGMA query_only makes
    # SQLite refuse writes the same way ("attempt to write a readonly database").
    # The store applies pragmas once the schema is in place, so the refusal shows
    # at the first write (a worker's first look for tasks to take back is logged).
    async with make_bus(store=SqliteStore(db_path)):
        pass
    for workers in (2, 0):
        bus = make_bus(
            store=SqliteStore(db_path, pragmas={"query_only": 1}), retention=None, workers=workers
        )
        register_reports(bus)
        async with bus:
            with pytest.raises(StoreError, match=r"cannot write.*readonly.*not writable"):
                await bus.submit("reports:build", {"year": 1})
            assert await bus.list() == []
    assert raw_rows(db_path, "SELECT count(*) FROM tasks") == [(0,)]


async def test_a_full_disk_fails_the_submit_and_stores_nothing(
    make_bus: MakeBus, db_path: Path
) -> None:
    # max_page_count caps the file at 16 pages of 4 KiB: the schema and a few
    # small tasks fit, a 200 KB input does not.
    store = SqliteStore(db_path, pragmas={"max_page_count": 16})
    bus = make_bus(store=store, retention=None)

    @bus.task("blobs:keep")
    async def keep(ctx: TaskContext, blob: str) -> int:
        return len(blob)

    async with bus:
        recorder = EventRecorder(bus)
        small = await bus.submit("blobs:keep", "small")
        assert await small.result(timeout=5) == 5

        with pytest.raises(StoreError, match=r"cannot write.*full"):
            await bus.submit("blobs:keep", "z" * 200_000)

        assert [snap.id for snap in await bus.list()] == [small.id]
        assert (await bus.stats()).by_state == {TaskState.COMPLETED: 1}
        assert len(bus.queue) == 0
        assert recorder.names() == ["task-queued", "task-started", "task-completed"]

        # Room for small tasks still: the store goes on working.
        after = await bus.submit("blobs:keep", "tiny")
        assert await after.result(timeout=5) == 4
        assert [snap.id for snap in await bus.list()] == [small.id, after.id]
    assert raw_rows(db_path, "SELECT count(*) FROM tasks") == [(2,)]


async def test_one_row_too_big_fails_only_its_own_submit(make_bus: MakeBus, db_path: Path) -> None:
    # Both submits land in one group commit; the group fails, then each row is
    # written on its own, so only the oversized one fails.
    bus = make_bus(store=SqliteStore(db_path, pragmas={"max_page_count": 16}), retention=None)

    @bus.task("blobs:keep")
    async def keep(ctx: TaskContext, blob: str) -> int:
        return len(blob)

    outcomes: dict[str, object] = {}

    async def submit(label: str, blob: str) -> None:
        try:
            outcomes[label] = await bus.submit("blobs:keep", blob)
        except StoreError as exc:
            outcomes[label] = exc

    async with bus:
        async with anyio.create_task_group() as tg:
            tg.start_soon(submit, "big", "z" * 200_000)
            tg.start_soon(submit, "small", "s")
        assert isinstance(outcomes["big"], StoreError)
        small = outcomes["small"]
        assert isinstance(small, TaskHandle)
        assert await small.result(timeout=5) == 1


async def test_concurrent_submits_with_one_key_store_one_task(
    make_bus: MakeBus, db_path: Path
) -> None:
    bus = make_bus(store=SqliteStore(db_path))
    gate = anyio.Event()

    @bus.task("keyed:job")
    async def job(ctx: TaskContext) -> None:
        await gate.wait()

    handles: list[TaskHandle[Any]] = []

    async def submit() -> None:
        handles.append(await bus.submit("keyed:job", key="same"))

    async with bus:
        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(submit)
        gate.set()
        assert len({handle.id for handle in handles}) == 1
        await handles[0].result(timeout=5)
    assert raw_rows(db_path, "SELECT count(*) FROM tasks") == [(1,)]


# -- concurrent submitters ----------------------------------------------------------


async def test_concurrent_submitters_from_tasks_and_threads(
    make_bus: MakeBus, db_path: Path
) -> None:
    bus = make_bus(store=SqliteStore(db_path), workers=4)

    @bus.task("bulk:echo")
    async def echo(ctx: TaskContext, value: int) -> int:
        return value

    per_submitter, submitters = 25, 8
    handles: list[TaskHandle[Any]] = []

    async def from_task(start: int) -> None:
        handles.extend(
            [await bus.submit("bulk:echo", value) for value in range(start, start + per_submitter)]
        )

    def from_thread(start: int) -> None:
        handles.extend(
            anyio.from_thread.run(bus.submit, "bulk:echo", value)
            for value in range(start, start + per_submitter)
        )

    total = per_submitter * submitters
    async with bus:
        recorder = EventRecorder(bus, timeout=10)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for n in range(submitters):
                    if n % 2:
                        tg.start_soon(from_task, n * per_submitter)
                    else:
                        tg.start_soon(anyio.to_thread.run_sync, from_thread, n * per_submitter)
        await recorder.wait_for(TaskCompleted, count=total)
        results = [await handle.result(timeout=5) for handle in handles]
        stats = await bus.stats()

    assert len(handles) == total
    assert len({handle.id for handle in handles}) == total
    assert sorted(results) == list(range(total))
    assert stats.by_state == {TaskState.COMPLETED: total}
    assert raw_rows(db_path, "SELECT state, count(*) FROM tasks GROUP BY state") == [
        ("completed", total)
    ]


# -- idempotency keys ---------------------------------------------------------------


async def test_a_key_returns_the_queued_or_running_task(make_bus: MakeBus, db_path: Path) -> None:
    bus = make_bus(store=SqliteStore(db_path))
    gate = anyio.Event()

    @bus.task("reports:once")
    async def once(ctx: TaskContext, n: int) -> int:
        await gate.wait()
        return n

    async with bus:
        recorder = EventRecorder(bus)
        first = await bus.submit("reports:once", 1, key="k")
        assert (await bus.submit("reports:once", 2, key="k")).id == first.id
        await recorder.wait_for(TaskStarted, task_id=first.id)
        assert (await bus.submit("reports:once", 3, key="k")).id == first.id
        other = await bus.submit("reports:once", 4, key="other")
        assert other.id != first.id

        gate.set()
        assert await first.result(timeout=5) == 1
        # Without key_ttl a finished task no longer answers for its key.
        later = await bus.submit("reports:once", 5, key="k")
        assert later.id != first.id
        assert await later.result(timeout=5) == 5
    assert raw_rows(db_path, "SELECT count(*) FROM tasks") == [(3,)]


async def test_a_key_answers_for_a_task_still_queued_after_reopen(
    make_bus: MakeBus, db_path: Path
) -> None:
    def build() -> TaskBus:
        bus = make_bus(store=SqliteStore(db_path))
        register_reports(bus)
        return bus

    async with build() as bus:
        first = await bus.submit("reports:build", {"year": 1}, key="nightly", delay=3600)

    async with build() as bus:
        again = await bus.submit("reports:build", {"year": 2}, key="nightly", delay=3600)
        assert again.id == first.id
        assert [snap.id for snap in await bus.list()] == [first.id]


async def test_a_key_with_a_ttl_returns_the_completed_task_also_after_reopen(
    make_bus: MakeBus, db_path: Path, fake_clock: FakeClock
) -> None:
    def build() -> TaskBus:
        bus = make_bus(store=SqliteStore(db_path), clock=fake_clock)

        @bus.task("reports:once", key_ttl=60)
        async def once(ctx: TaskContext, params: Params) -> Report:
            return Report(rows=params.year)

        return bus

    bus = build()
    async with bus:
        first = await bus.submit("reports:once", {"year": 1}, key="monthly")
        assert await first.result(timeout=5) == Report(rows=1)
        fake_clock.advance(30)
        again = await bus.submit("reports:once", {"year": 2}, key="monthly")
        assert again.id == first.id

    bus = build()
    async with bus:
        fake_clock.advance(29)  # 59 s after it completed: still within the window
        again = await bus.submit("reports:once", {"year": 3}, key="monthly")
        assert again.id == first.id
        result = await again.result(timeout=5)
        assert isinstance(result, Report) and result == Report(rows=1)

        fake_clock.advance(2)  # 61 s: the window has passed
        fresh = await bus.submit("reports:once", {"year": 4}, key="monthly")
        assert fresh.id != first.id
        assert await fresh.result(timeout=5) == Report(rows=4)


# -- retention ----------------------------------------------------------------------


async def _advance_until(
    bus: TaskBus, clock: FakeClock, done: Callable[[set[str]], bool], step: float
) -> None:
    """Move the fake clock `step` at a time until `done(ids of the stored tasks)`."""
    with anyio.fail_after(5):
        while not done({snap.id for snap in await bus.list(limit=1000)}):
            clock.advance(step)


async def test_retention_purges_old_finished_tasks_and_keeps_active_ones(
    make_bus: MakeBus, db_path: Path, fake_clock: FakeClock
) -> None:
    bus = make_bus(
        store=SqliteStore(db_path),
        clock=fake_clock,
        retention=RetentionPolicy(max_age=30, interval=1),
    )
    gate = anyio.Event()

    @bus.task("jobs:quick")
    async def quick(ctx: TaskContext, n: int) -> int:
        return n

    @bus.task("jobs:slow")
    async def slow(ctx: TaskContext) -> None:
        await gate.wait()

    async with bus:
        recorder = EventRecorder(bus)
        old = [await bus.submit("jobs:quick", n) for n in range(3)]
        for handle in old:
            await handle.result(timeout=5)
        running = await bus.submit("jobs:slow")
        await recorder.wait_for(TaskStarted, task_id=running.id)
        delayed = await bus.submit("jobs:quick", 99, delay=100_000)
        fake_clock.advance(15)
        young = await bus.submit("jobs:quick", 7)
        await young.result(timeout=5)

        # The old ones go once 30 s have passed; the young one is 15 s younger.
        await _advance_until(bus, fake_clock, lambda ids: not ids & {h.id for h in old}, step=1)
        left = {snap.id: snap.state for snap in await bus.list()}
        assert left == {
            running.id: TaskState.RUNNING,
            delayed.id: TaskState.QUEUED,
            young.id: TaskState.COMPLETED,
        }
        gate.set()
        await running.result(timeout=5)


async def test_retention_keeps_the_newest_finished_tasks(
    make_bus: MakeBus, db_path: Path, fake_clock: FakeClock
) -> None:
    bus = make_bus(
        store=SqliteStore(db_path),
        clock=fake_clock,
        retention=RetentionPolicy(max_age=None, max_count=2, interval=1),
    )

    @bus.task("jobs:quick")
    async def quick(ctx: TaskContext, n: int) -> int:
        return n

    async with bus:
        delayed = await bus.submit("jobs:quick", 99, delay=100_000)
        finished = []
        for n in range(5):
            handle = await bus.submit("jobs:quick", n)
            await handle.result(timeout=5)
            finished.append(handle)
            fake_clock.advance(0.5)  # so that each one finished later than the last

        expected = {delayed.id, finished[-2].id, finished[-1].id}
        await _advance_until(bus, fake_clock, lambda ids: len(ids) == 3, step=1)
        assert {snap.id for snap in await bus.list()} == expected
        assert (await bus.stats()).by_state == {TaskState.COMPLETED: 2, TaskState.QUEUED: 1}


# -- list and stats -----------------------------------------------------------------


async def test_list_and_stats_through_the_bus(
    make_bus: MakeBus, db_path: Path, fake_clock: FakeClock
) -> None:
    def build() -> TaskBus:
        bus = make_bus(store=SqliteStore(db_path), clock=fake_clock)
        for name in ("reports:daily", "reports:weekly", "mail:send", "reportsx:odd"):
            bus.task(name)(_echo)
        return bus

    plan = [
        ("reports:daily", "alice"),
        ("mail:send", "bob"),
        ("reports:weekly", "alice"),
        ("reportsx:odd", "alice"),
        ("reports:daily", "bob"),
        ("mail:send", "alice"),
    ]
    start = fake_clock.now()
    bus = build()
    async with bus:
        handles = []
        for n, (task_type, owner) in enumerate(plan):
            handles.append(await bus.submit(task_type, n, owner=owner))
            fake_clock.advance(10)
        for handle in handles:
            await handle.result(timeout=5)
        queued = await bus.submit("reports:daily", 6, owner="carol", delay=1_000)
        await _check_listing(bus, [h.id for h in handles], queued.id, start)

    bus = build()
    async with bus:  # the same answers from the file
        await _check_listing(bus, [h.id for h in handles], queued.id, start)


async def _echo(ctx: TaskContext, n: int) -> int:
    return n


async def _check_listing(bus: TaskBus, done: list[str], queued: str, start: float) -> None:
    async def ids(**filters: Any) -> list[str]:
        return [snap.id for snap in await bus.list(**filters)]

    assert await ids() == [*done, queued]
    assert await ids(type_prefix="reports:") == [done[0], done[2], done[4], queued]
    assert await ids(type_prefix="mail:", owner="alice") == [done[5]]
    assert await ids(owner="alice") == [done[0], done[2], done[3], done[5]]
    assert await ids(state="queued") == [queued]
    assert await ids(state=TaskState.COMPLETED, owner="bob") == [done[1], done[4]]
    assert await ids(created_after=start + 20, created_before=start + 40) == done[2:4]
    after = datetime.fromtimestamp(start + 30, UTC)
    assert await ids(created_after=after, type_prefix="reports") == [done[3], done[4], queued]
    pages = [await ids(limit=3, offset=offset) for offset in (0, 3, 6, 9)]
    assert pages == [done[:3], done[3:6], [queued], []]

    stats = await bus.stats()
    assert stats.by_state == {TaskState.COMPLETED: 6, TaskState.QUEUED: 1}
    assert stats.by_type == {
        "reports:daily": {TaskState.COMPLETED: 2, TaskState.QUEUED: 1},
        "reports:weekly": {TaskState.COMPLETED: 1},
        "reportsx:odd": {TaskState.COMPLETED: 1},
        "mail:send": {TaskState.COMPLETED: 2},
    }
    snap = (await bus.list(owner="bob", limit=1))[0]
    assert (snap.type, snap.result, snap.attempts) == ("mail:send", 1, 1)


async def test_an_update_that_keeps_failing_neither_hangs_reads_nor_close(
    make_bus: MakeBus, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskbus.stores import _sqlite_writer

    monkeypatch.setattr(_sqlite_writer, "_RETRY_INTERVAL", 0.05)
    async with make_bus(store=SqliteStore(db_path)):
        pass
    with closing(sqlite3.connect(db_path)) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE UPDATE ON tasks WHEN NEW.state = 'completed' "
            "BEGIN SELECT RAISE(ABORT, 'cannot write the completion'); END"
        )
        conn.commit()
    bus = make_bus(store=SqliteStore(db_path), retention=None)
    register_reports(bus)
    with anyio.fail_after(5):
        async with bus:
            handle = await bus.submit("reports:build", {"year": 1})
            # Nobody hears of a completion the store could not take: the task stays
            # claimed, and runs again once its lease expires.
            with pytest.raises(TimeoutError):
                await handle.result(timeout=0.5)
            stats = await bus.stats()
            assert TaskState.COMPLETED not in stats.by_state, "the file keeps its last state"
    assert raw_rows(db_path, "SELECT state FROM tasks") in ([("queued",)], [("running",)])


# -- schema migrations --------------------------------------------------------------


async def test_a_version_1_file_migrates_and_scopes_its_keys(
    make_bus: MakeBus, db_path: Path
) -> None:
    from taskbus.stores._codec import COLUMNS, row_from_record
    from taskbus.stores._sqlite_schema import APPLICATION_ID, MIGRATIONS

    old = TaskRecord(
        new_task_id(), "reports:build", {"year": 1}, 5, 1.7e9, 1, "alice", None, "nightly"
    )
    old.not_before = 4.1e9  # far ahead: it stays queued
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        MIGRATIONS[0](conn)  # the schema a version 1 taskbus wrote
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 1")
        v1 = COLUMNS[: COLUMNS.index("cancel_reason") + 1]  # the columns of version 1
        conn.execute(
            f"INSERT INTO tasks ({', '.join(v1)}) VALUES ({', '.join('?' * len(v1))})",
            row_from_record(old)[: len(v1)],
        )
        conn.execute("COMMIT")

    bus = make_bus(store=SqliteStore(db_path))
    register_reports(bus)
    async with bus:
        same = await bus.submit("reports:build", {"year": 2}, owner="alice", key="nightly")
        other = await bus.submit("reports:build", {"year": 3}, owner="bob", key="nightly")
        assert same.id == old.id
        assert other.id != old.id
        assert await other.result(timeout=5) == Report(rows=3, title="year 3")

    assert raw_rows(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    indexes = {row[0] for row in raw_rows(db_path, "SELECT name FROM sqlite_master")}
    assert "tasks_key_scope" in indexes and "tasks_key" not in indexes
    plan = raw_rows(
        db_path,
        "EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE key = ? AND type = ? AND owner IS ? "
        "AND state = 'completed' AND finished_at >= ? ORDER BY finished_at DESC LIMIT 1",
        ("nightly", "reports:build", "alice", 0.0),
    )
    assert any("tasks_key_scope" in str(step) for step in plan), plan


async def test_a_version_5_file_migrates_and_finds_its_batches(db_path: Path) -> None:
    from taskbus.stores._codec import COLUMNS, row_from_record
    from taskbus.stores._sqlite_schema import APPLICATION_ID, MIGRATIONS

    def old(metadata: dict[str, object] | None) -> TaskRecord:
        return TaskRecord(new_task_id(), "reports:build", None, 5, 1.7e9, 1, None, metadata)

    members = [old({"batch_id": "b-1", "n": n}) for n in range(2)]
    others = [old({"batch_id": 7}), old(None), old({"x": "b-1"})]
    with closing(sqlite3.connect(db_path, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        for migrate in MIGRATIONS[:5]:  # the schema a version 5 taskbus wrote
            migrate(conn)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 5")
        v5 = COLUMNS[: COLUMNS.index("lease_until") + 1]
        for record in [*members, *others]:
            conn.execute(
                f"INSERT INTO tasks ({', '.join(v5)}) VALUES ({', '.join('?' * len(v5))})",
                row_from_record(record)[: len(v5)],
            )
        conn.execute("UPDATE tasks SET metadata = '{bad' WHERE id = ?", (others[1].id,))
        conn.execute("COMMIT")

    store = SqliteStore(db_path)
    await store.open()
    try:
        found = await store.list(TaskQuery(batch_id="b-1"))
    finally:
        await store.close()
    assert [r.id for r in found] == [r.id for r in members]
    plan = raw_rows(db_path, "EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE batch_id = ?", ("b-1",))
    assert any("tasks_batch" in str(step) for step in plan), plan


def test_processes_that_open_a_new_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    """Each opener reads the schema version again under the write lock, so openers
    that raced past the first read do not run a migration twice (no "table already
    exists")."""
    import threading

    from taskbus.stores._sqlite_schema import connect, migrate

    for attempt in range(10):
        path = tmp_path / f"race-{attempt}.db"
        start = threading.Barrier(4)
        errors: list[Any] = []

        def open_it(
            path: Path = path, start: threading.Barrier = start, errors: list[Any] = errors
        ) -> None:
            with closing(connect(path, busy_timeout=10.0)) as conn:
                start.wait()
                try:
                    migrate(conn, path)
                except (StoreError, sqlite3.Error) as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=open_it) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
