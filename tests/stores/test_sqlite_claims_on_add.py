"""Claims that ride a submit's commit (`ClaimsOnAdd` on SQLite).

A bus whose workers are idle leaves a standing claim with the store; the next
transaction that inserts tasks runs it, so a task submitted to an idle bus is
stored and claimed in one commit. What it may pick follows `acquire` (any ready
task, most urgent first), the worker hears of its records before anyone hears
of the tasks, and a worker that stopped meanwhile gives them back.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskbus import TaskBus, TaskContext, TaskState
from taskbus._events import Event
from taskbus._record import TaskRecord, new_task_id
from taskbus.abc import ClaimsOnAdd
from taskbus.stores._codec import row_from_record
from taskbus.stores._sqlite_batch import Batch
from taskbus.stores._sqlite_writer import SqliteWriter
from taskbus.stores.sqlite import SqliteStore
from taskbus.testing import FakeClock

pytestmark = pytest.mark.anyio

WAIT = 5.0
WORKER = "host:1:standing"


def make_record(priority: int = 5, not_before: float | None = None) -> TaskRecord:
    now = time.time()
    return TaskRecord(
        new_task_id(), "jobs:echo", None, priority, now, 3, None, None, not_before=not_before
    )


class Deliveries:
    """What a standing claim delivered, and the events delivered by then."""

    def __init__(self, store: SqliteStore, keep: bool = True) -> None:
        self.keep = keep
        self.calls: list[tuple[list[TaskRecord] | None, frozenset[str], list[str]]] = []
        self.events: list[Event] = []
        store.deliver_events(self.events.append)

    def __call__(self, records: list[TaskRecord] | None, added: frozenset[str]) -> bool:
        self.calls.append((records, added, [event.name for event in self.events]))
        return self.keep


@pytest.fixture
async def store(tmp_path: Path) -> Any:
    opened = SqliteStore(tmp_path / "jobs.db")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Batch]]:
    """Every group the writer writes (one transaction each, when nothing fails)."""
    seen: list[Batch] = []
    write = SqliteWriter._write_safely

    def spy(writer: SqliteWriter, batch: Batch) -> None:
        seen.append(batch)
        write(writer, batch)

    monkeypatch.setattr(SqliteWriter, "_write_safely", spy)
    yield seen


def stand_by(store: SqliteStore, deliver: Deliveries, limit: int = 4) -> None:
    store.claim_on_add(WORKER, limit, 30.0, limits=None, aging=None, now=time.time, deliver=deliver)


def test_the_sqlite_store_offers_claims_on_add(tmp_path: Path) -> None:
    assert isinstance(SqliteStore(tmp_path / "jobs.db"), ClaimsOnAdd)


async def test_a_standing_claim_takes_the_added_task_in_the_same_commit(
    store: SqliteStore, groups: list[Batch]
) -> None:
    await store.flush()
    deliver = Deliveries(store)
    stand_by(store, deliver)
    groups.clear()
    record = make_record()
    await store.add(record)
    assert len(groups) == 1, "the insert and the claim commit together"
    [(records, added, events_by_then)] = deliver.calls
    assert records is not None
    assert [(r.id, r.state, r.worker, r.attempt) for r in records] == [
        (record.id, TaskState.RUNNING, WORKER, 1)
    ]
    assert added == {record.id}
    assert events_by_then == [], "the worker hears of its claim before the task's events"
    stored = await store.get(record.id)
    assert stored is not None
    assert (stored.state, stored.worker) == (TaskState.RUNNING, WORKER)


async def test_a_standing_claim_runs_once(store: SqliteStore) -> None:
    deliver = Deliveries(store)
    stand_by(store, deliver)
    first, second = make_record(), make_record()
    await store.add(first)
    await store.add(second)
    assert len(deliver.calls) == 1
    stored = await store.get(second.id)
    assert stored is not None and stored.state is TaskState.QUEUED


async def test_a_standing_claim_picks_as_acquire_does_most_urgent_first(
    store: SqliteStore,
) -> None:
    urgent = make_record(priority=9)
    await store.add(urgent)  # nobody stands by: it stays queued
    deliver = Deliveries(store)
    stand_by(store, deliver, limit=1)
    later = make_record(priority=1)
    await store.add(later)
    [(records, added, _)] = deliver.calls
    assert records is not None
    assert [r.id for r in records] == [urgent.id]
    assert added == {later.id}


async def test_a_standing_claim_leaves_a_task_that_is_not_due(store: SqliteStore) -> None:
    deliver = Deliveries(store)
    stand_by(store, deliver)
    delayed = make_record(not_before=time.time() + 3600)
    await store.add(delayed)
    [(records, added, _)] = deliver.calls
    assert records == []
    assert added == {delayed.id}


async def test_a_withdrawn_claim_claims_nothing(store: SqliteStore) -> None:
    deliver = Deliveries(store)
    stand_by(store, deliver)
    assert store.withdraw_claim_on_add(WORKER)
    assert store.withdraw_claim_on_add(WORKER), "withdrawing twice is harmless"
    record = make_record()
    await store.add(record)
    assert deliver.calls == []
    stored = await store.get(record.id)
    assert stored is not None and stored.state is TaskState.QUEUED


async def test_a_claim_taken_by_a_commit_cannot_be_withdrawn_until_delivered(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    committed = threading.Event()
    hand_back = SqliteWriter._hand_back

    def spy(writer: SqliteWriter, batch: Batch) -> None:
        hand_back(writer, batch)
        committed.set()

    monkeypatch.setattr(SqliteWriter, "_hand_back", spy)
    deliver = Deliveries(store)
    stand_by(store, deliver)
    store._require_writer().put(row_from_record(make_record()), insert=True)  # to the thread
    # The loop is held here, so the commit's delivery cannot run yet.
    assert committed.wait(WAIT)
    assert not store.withdraw_claim_on_add(WORKER), "its delivery is still to come"
    assert deliver.calls == []
    await store.flush()
    assert len(deliver.calls) == 1
    assert store.withdraw_claim_on_add(WORKER)


async def test_records_a_stopped_worker_refuses_go_back_to_the_queue(
    store: SqliteStore,
) -> None:
    deliver = Deliveries(store, keep=False)
    stand_by(store, deliver)
    record = make_record()
    await store.add(record)
    [(records, _, _)] = deliver.calls
    assert records is not None and [r.id for r in records] == [record.id]
    await store.flush()
    stored = await store.get(record.id)
    assert stored is not None
    assert (stored.state, stored.worker, stored.attempt) == (TaskState.QUEUED, None, 0)


async def test_a_delivery_that_raises_gives_the_records_back(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(records: list[TaskRecord] | None, added: frozenset[str]) -> bool:
        raise RuntimeError("listener bug")

    store.claim_on_add(WORKER, 2, 30.0, limits=None, aging=None, now=time.time, deliver=broken)
    record = make_record()
    await store.add(record)  # the add itself is not failed by it
    await store.flush()
    stored = await store.get(record.id)
    assert stored is not None and stored.state is TaskState.QUEUED
    assert "delivering a claim failed" in caplog.text


async def test_bad_arguments_are_refused_when_standing_by(store: SqliteStore) -> None:
    deliver = Deliveries(store)
    with pytest.raises(ValueError, match="limit"):
        store.claim_on_add(
            WORKER, -1, 30.0, limits=None, aging=None, now=time.time, deliver=deliver
        )
    with pytest.raises(ValueError, match="lease"):
        store.claim_on_add(WORKER, 1, 0, limits=None, aging=None, now=time.time, deliver=deliver)
    with pytest.raises(ValueError, match="worker_id"):
        store.claim_on_add("", 1, 30.0, limits=None, aging=None, now=time.time, deliver=deliver)
    record = make_record()
    await store.add(record)
    assert deliver.calls == [], "a refused claim does not stand"


# -- through the bus -------------------------------------------------------------------


async def noop(ctx: TaskContext) -> None:
    return None


async def test_a_sequential_submitter_costs_no_separate_claims(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, groups: list[Batch]
) -> None:
    """Each task is claimed in its submit's commit (no `acquire` round trip of its
    own), and a worker's release waits for the next submit's commit while the
    submitter commits pass after pass: about one commit per task where it was
    three. (More workers than tasks: a worker is always idle, as in
    `benchmarks/durable.py`.)"""
    monkeypatch.setattr("taskbus._leasing._IDLE_CHECK", 60.0)  # no claims of idleness
    store = SqliteStore(tmp_path / "jobs.db")
    acquired: list[int] = []
    acquire = store.acquire

    async def counted(*args: Any, **kwargs: Any) -> Any:
        claimed = await acquire(*args, **kwargs)
        acquired.append(len(claimed))
        return claimed

    store.acquire = counted  # type: ignore[method-assign]
    tasks = 40
    bus = TaskBus(store=store, workers=tasks + 1, shutdown_grace=1.0)
    bus.task("jobs:noop")(noop)
    async with bus:
        await store.flush()
        before = len(groups)
        handles = [await bus.submit("jobs:noop") for _ in range(tasks)]
        with anyio.fail_after(WAIT):
            for handle in handles:
                await handle.result()
        await store.flush()
        commits = len(groups) - before
        stats = await bus.stats()
    assert stats.by_state == {TaskState.COMPLETED: tasks}
    assert sum(acquired) == 0, acquired
    # Quiet: about one per task. Under load some go to the thread on their own (seen:
    # 46 for 40 tasks with three CPU hogs on asyncio, 51 with two on trio); two or
    # three per task would be the regression this guards against.
    assert commits <= tasks * 3 // 2, commits


async def test_a_delayed_task_submitted_to_an_idle_bus_runs_when_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_clock: FakeClock
) -> None:
    """The standing claim leaves a task that is not due; its task-queued event still
    wakes the claim loop, which arms the due timer for it."""
    monkeypatch.setattr("taskbus._leasing._IDLE_CHECK", 60.0)  # only the due timer helps
    store = SqliteStore(tmp_path / "jobs.db")
    due_read = anyio.Event()
    next_due = store.next_due

    async def watched() -> float | None:
        due = await next_due()
        due_read.set()
        return due

    store.next_due = watched  # type: ignore[method-assign]
    bus = TaskBus(store=store, workers=2, shutdown_grace=1.0, clock=fake_clock)
    bus.task("jobs:noop")(noop)
    async with bus:
        with anyio.fail_after(WAIT):
            await due_read.wait()  # idle, standing by
        due_read = anyio.Event()
        handle = await bus.submit("jobs:noop", delay=30)
        with anyio.fail_after(WAIT):
            await due_read.wait()  # read again for the new task: the timer is armed
        fake_clock.advance(31)
        with anyio.fail_after(WAIT):
            await handle.result()


async def test_a_failing_claim_is_reported_once_backed_off_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A standing claim whose SQL fails tells the claim loop, which logs the outage
    once, backs off, and says when claiming works again; the task then runs."""
    from taskbus.stores import _sqlite_lease

    failures = 6  # a group that fails is tried again call by call: 2 or 3 a claim
    run = _sqlite_lease.Pick.run

    def flaky(pick: _sqlite_lease.Pick, conn: Any) -> Any:
        nonlocal failures
        if failures:
            failures -= 1
            raise sqlite3.OperationalError("disk I/O error (injected)")
        return run(pick, conn)

    monkeypatch.setattr(_sqlite_lease.Pick, "run", flaky)
    bus = TaskBus(store=SqliteStore(tmp_path / "jobs.db"), workers=2, shutdown_grace=1.0)
    bus.task("jobs:noop")(noop)
    async with bus:
        handle = await bus.submit("jobs:noop")
        with anyio.fail_after(WAIT):
            await handle.result()
    assert failures == 0
    outage = [r.getMessage() for r in caplog.records if r.name == "taskbus.leases"]
    assert len([m for m in outage if "claiming tasks failed" in m]) == 1, outage
    assert len([m for m in outage if "claiming tasks works again" in m]) == 1, outage
