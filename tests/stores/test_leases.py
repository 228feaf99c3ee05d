"""Claims the store holds: `acquire`, `release`, `extend_leases`, `reap_expired` and
`cancel_queued`, run against every store that implements them (`LEASING`).

Times are explicit (``now=``): a lease expires when a test says it has.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol

import anyio
import pytest

from taskbus import CorruptRecord, ErrorInfo, ErrorType, TaskState, UnstorableValue
from taskbus._asking import start_waiting
from taskbus._input import InputAnswer, InputQuestion
from taskbus._record import TaskRecord
from taskbus.stores import Store, TaskQuery
from taskbus.stores._codec import COLUMNS, row_from_record
from taskbus.stores._codec_read import record_from_row
from taskbus.stores._sqlite_schema import APPLICATION_ID, MIGRATIONS
from taskbus.stores.sqlite import SqliteStore

from ._fake import ValueStore
from .test_contract import T0, make_record

pytestmark = pytest.mark.anyio

LEASE = 10.0


class LeasingStore(Store, Protocol):
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
        key_limits: Mapping[str, int] | None = None,
    ) -> list[TaskRecord]: ...

    async def release(self, worker_id: str, record: TaskRecord) -> bool: ...

    async def extend_leases(
        self, worker_id: str, ids: Collection[str], lease: float, *, now: float | None = None
    ) -> set[str]: ...

    async def reap_expired(
        self,
        *,
        now: float | None = None,
        workers: Collection[str] = (),
        fail_types: Collection[str] = (),
    ) -> list[TaskRecord]: ...

    async def cancel_queued(
        self, task_id: str, reason: str | None, *, now: float | None = None
    ) -> TaskRecord | None: ...

    async def answer_input(
        self, task_id: str, key: str, answer: InputAnswer, *, now: float | None = None
    ) -> TaskRecord | None: ...

    def request_cancel(self, task_id: str, reason: str | None) -> None: ...


def _sqlite(tmp_path: Path) -> LeasingStore:
    return SqliteStore(tmp_path / "store.db")


def _fake(tmp_path: Path) -> LeasingStore:
    return ValueStore()


def _redis(tmp_path: Path) -> LeasingStore:
    from _redis import redis_store

    return redis_store(tmp_path)


#: The stores that hold claims themselves, by the id their tests carry.
LEASING: dict[str, Callable[[Path], LeasingStore]] = {
    "sqlite": _sqlite,
    "fake": _fake,
    "redis": _redis,
}


@pytest.fixture(params=list(LEASING), ids=list(LEASING))
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[LeasingStore]:
    """An open leasing store of each kind; closed at teardown."""
    opened = LEASING[request.param](tmp_path)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


async def queue(
    store: LeasingStore,
    task_type: str = "reports:build",
    *,
    priority: int = 5,
    at: float = T0,
    not_before: float | None = None,
    max_attempts: int = 3,
) -> TaskRecord:
    record = make_record(task_type, {"n": 1}, created_at=at, priority=priority)
    record.max_attempts = max_attempts
    record.not_before = not_before
    await store.add(record)
    return record


async def stored(store: LeasingStore, record: TaskRecord) -> TaskRecord:
    got = await store.get(record.id)
    assert got is not None
    return got


def ids(records: list[TaskRecord]) -> list[str]:
    return [record.id for record in records]


async def running_of(store: LeasingStore, task_type: str) -> int:
    running = await store.list(TaskQuery(state=TaskState.RUNNING))
    return sum(record.type == task_type for record in running)


def completed(record: TaskRecord, at: float, result: Any = 1) -> TaskRecord:
    record.move(TaskState.COMPLETED)
    record.result = result
    record.finished_at = at
    return record


# -- acquire: order, not-before, types --------------------------------------------


async def test_acquire_takes_priority_then_fifo_then_insertion(store: LeasingStore) -> None:
    low = await queue(store, priority=2, at=T0 + 1)
    high_new = await queue(store, priority=9, at=T0 + 5)
    high_old = await queue(store, priority=9, at=T0 + 4)
    mid_first = await queue(store, priority=5, at=T0 + 3)
    mid_second = await queue(store, priority=5, at=T0 + 3)

    first = await store.acquire("w1", 2, LEASE, now=T0 + 10)
    rest = await store.acquire("w1", 10, LEASE, now=T0 + 11)

    assert ids(first) == [high_old.id, high_new.id]
    assert ids(rest) == [mid_first.id, mid_second.id, low.id]
    assert await store.acquire("w1", 10, LEASE, now=T0 + 12) == []
    for got in first:
        assert got.loaded
        assert (got.state, got.attempt, got.started_at) == (TaskState.RUNNING, 1, T0 + 10)
        assert (got.worker, got.lease_until, got.not_before) == ("w1", T0 + 10 + LEASE, None)
        again = await stored(store, got)  # what is stored, not the record `add` was given
        assert (again.state, again.worker, again.lease_until) == (
            TaskState.RUNNING,
            "w1",
            T0 + 10 + LEASE,
        )


async def test_a_claim_clears_what_the_task_waited_for(store: LeasingStore) -> None:
    record = make_record(created_at=T0)
    record.waiting_for = "rate limit 1/second"
    await store.add(record)

    [got] = await store.acquire("w1", 1, LEASE, now=T0 + 1)

    assert got.waiting_for is None
    assert (await stored(store, got)).waiting_for is None


async def test_aging_lets_a_long_wait_beat_a_higher_priority(store: LeasingStore) -> None:
    # Two identical queues, of two types: one picked with aging, one without.
    records = {}
    for kind in ("aged", "plain"):
        records[kind] = [
            await queue(store, f"{kind}:low", priority=1, at=T0),  # key T0 - 10
            await queue(store, f"{kind}:high", priority=9, at=T0 + 100),  # key T0 + 10
            await queue(store, f"{kind}:top", priority=9, at=T0 + 50),  # key T0 - 40
        ]
    aged_types = ["aged:low", "aged:high", "aged:top"]
    plain_types = ["plain:low", "plain:high", "plain:top"]

    aged = await store.acquire("w", 3, LEASE, types=aged_types, aging=10.0, now=T0 + 200)
    plain = await store.acquire("w", 3, LEASE, types=plain_types, now=T0 + 200)

    low, high, top = records["aged"]
    assert ids(aged) == [top.id, low.id, high.id]
    low, high, top = records["plain"]
    assert ids(plain) == [top.id, high.id, low.id]


async def test_a_task_is_acquired_only_from_its_not_before(store: LeasingStore) -> None:
    later = await queue(store, priority=9, not_before=T0 + 30)
    now = await queue(store, priority=1)

    assert ids(await store.acquire("w", 5, LEASE, now=T0 + 29.9)) == [now.id]
    assert await store.acquire("w", 5, LEASE, now=T0 + 29.9) == []
    got = await store.acquire("w", 5, LEASE, now=T0 + 30)

    assert ids(got) == [later.id]
    assert got[0].not_before is None and (await stored(store, later)).not_before is None


async def test_acquire_takes_only_the_types_asked_for(store: LeasingStore) -> None:
    report = await queue(store, "reports:build", priority=9)
    mails = [await queue(store, "mail:send"), await queue(store, "mail:send")]

    assert await store.acquire("w", 5, LEASE, types=[], now=T0) == []
    assert ids(await store.acquire("w", 5, LEASE, types={"mail:send"}, now=T0)) == ids(mails)
    assert (await stored(store, report)).state is TaskState.QUEUED
    assert ids(await store.acquire("w", 5, LEASE, types=None, now=T0)) == [report.id]


# -- acquire: per-type limits and concurrency ---------------------------------------


async def test_a_type_limit_holds_across_workers_without_blocking_other_types(
    store: LeasingStore,
) -> None:
    reports = [await queue(store, "reports:build", priority=9, at=T0 + i) for i in range(3)]
    mails = [await queue(store, "mail:send", priority=1, at=T0 + i) for i in range(2)]
    limits = {"reports:build": 2, "mail:send": 5}

    one = await store.acquire("w1", 1, LEASE, limits=limits, now=T0 + 10)
    two = await store.acquire("w2", 5, LEASE, limits=limits, now=T0 + 10)

    assert ids(one) == [reports[0].id]
    assert ids(two) == [reports[1].id, mails[0].id, mails[1].id]  # reports[2] skipped
    assert await running_of(store, "reports:build") == 2
    assert await store.acquire("w1", 5, LEASE, limits=limits, now=T0 + 11) == []

    assert await store.release("w1", completed(one[0], T0 + 12))
    assert ids(await store.acquire("w1", 5, LEASE, limits=limits, now=T0 + 13)) == [reports[2].id]
    assert await running_of(store, "reports:build") == 2


async def keyed(store: LeasingStore, key: str | None, task_type: str = "repo:clone") -> TaskRecord:
    metadata = None if key is None else {"concurrency_key": key}
    record = make_record(task_type, {"n": 1}, metadata=metadata)
    await store.add(record)
    return record


async def test_a_key_limit_holds_across_workers_without_blocking_other_keys(
    store: LeasingStore,
) -> None:
    alice = [await keyed(store, "alice") for _ in range(3)]
    bob = await keyed(store, "bob")
    nobody = await keyed(store, None)  # no key: limited by nothing per key
    other = await keyed(store, "alice", task_type="mail:send")  # a type without a key limit
    per_key = {"repo:clone": 1}

    one = await store.acquire("w1", 1, LEASE, key_limits=per_key, now=T0 + 10)
    two = await store.acquire("w2", 10, LEASE, key_limits=per_key, now=T0 + 10)

    assert ids(one) == [alice[0].id]
    assert ids(two) == [bob.id, nobody.id, other.id]  # alice's others skipped, not waited for
    for held in alice[1:]:
        again = await stored(store, held)
        assert again.state is TaskState.QUEUED
        assert again.waiting_for == "concurrency 1 per key 'alice'"
    assert await store.acquire("w2", 10, LEASE, key_limits=per_key, now=T0 + 11) == []

    assert await store.release("w1", completed(one[0], T0 + 12))
    [next_one] = await store.acquire("w2", 10, LEASE, key_limits=per_key, now=T0 + 13)
    assert next_one.id == alice[1].id
    assert next_one.waiting_for is None
    assert (await stored(store, next_one)).waiting_for is None


async def test_a_key_limit_of_two_runs_two_of_a_key(store: LeasingStore) -> None:
    tasks = [await keyed(store, "tenant-1") for _ in range(3)]

    got = await store.acquire("w", 10, LEASE, key_limits={"repo:clone": 2}, now=T0 + 1)

    assert ids(got) == ids(tasks[:2])


async def test_concurrent_acquirers_never_exceed_a_key_limit(store: LeasingStore) -> None:
    for n in range(24):
        await keyed(store, f"user-{n % 3}")
    got: dict[str, list[TaskRecord]] = {}

    async def take(worker: str) -> None:
        got[worker] = await store.acquire(
            worker, 6, LEASE, key_limits={"repo:clone": 2}, now=T0 + 1
        )

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for n in range(4):
                group.start_soon(take, f"w{n}")

    taken = [record for records in got.values() for record in records]
    keys = [(record.metadata or {})["concurrency_key"] for record in taken]
    assert sorted(keys) == ["user-0", "user-0", "user-1", "user-1", "user-2", "user-2"]


async def test_a_limit_of_zero_never_runs_that_type(store: LeasingStore) -> None:
    await queue(store, "reports:build", priority=9)
    mail = await queue(store, "mail:send")

    got = await store.acquire("w", 5, LEASE, limits={"reports:build": 0}, now=T0)

    assert ids(got) == [mail.id]


async def test_concurrent_acquirers_never_share_a_task(store: LeasingStore) -> None:
    tasks = [await queue(store, "reports:build" if i % 2 else "mail:send") for i in range(20)]
    limits = {"reports:build": 4}
    got: dict[str, list[TaskRecord]] = {}

    async def take(worker: str) -> None:
        got[worker] = await store.acquire(worker, 6, LEASE, limits=limits, now=T0 + 1)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for n in range(4):
                group.start_soon(take, f"w{n}")

    taken = [record for records in got.values() for record in records]
    assert len(ids(taken)) == len(set(ids(taken)))
    assert sum(record.type == "reports:build" for record in taken) == 4
    assert len(taken) == 14  # 10 mails and 4 reports, of 20 tasks
    for worker, records in got.items():
        for record in records:
            assert (await stored(store, record)).worker == worker
    assert {record.id for record in tasks} >= set(ids(taken))


# -- release -----------------------------------------------------------------------


async def test_release_of_a_final_state_drops_the_lease(store: LeasingStore) -> None:
    await queue(store)
    (record,) = await store.acquire("w1", 1, LEASE, now=T0)

    assert await store.release("w1", completed(record, T0 + 3, {"rows": 3}))

    got = await stored(store, record)
    assert (got.state, got.result, got.finished_at) == (TaskState.COMPLETED, {"rows": 3}, T0 + 3)
    assert (got.worker, got.lease_until) == (None, None)
    assert await store.extend_leases("w1", [record.id], LEASE, now=T0 + 4) == {record.id}
    assert not await store.release("w1", record), "the lease went with the release"


async def test_release_is_refused_once_the_lease_was_reaped_or_taken(
    store: LeasingStore,
) -> None:
    await queue(store)
    (mine,) = await store.acquire("w1", 1, LEASE, now=T0)
    assert ids(await store.reap_expired(now=T0 + LEASE + 1)) == [mine.id]

    assert not await store.release("w1", completed(mine, T0 + 12))
    after_reap = await stored(store, mine)
    assert (after_reap.state, after_reap.attempt, after_reap.result) == (TaskState.QUEUED, 1, None)

    (theirs,) = await store.acquire("w2", 1, LEASE, now=T0 + 20)
    assert not await store.release("w1", mine)
    got = await stored(store, mine)
    assert (got.state, got.worker, got.attempt, got.result) == (TaskState.RUNNING, "w2", 2, None)

    assert await store.release("w2", completed(theirs, T0 + 21, 2))
    assert (await stored(store, mine)).result == 2


async def test_release_of_a_task_not_stored_is_refused(store: LeasingStore) -> None:
    ghost = make_record()
    ghost.move(TaskState.RUNNING)
    completed(ghost, T0)

    assert not await store.release("w1", ghost)
    assert await store.get(ghost.id) is None


async def test_release_of_a_retry_waits_out_its_not_before(store: LeasingStore) -> None:
    await queue(store)
    (record,) = await store.acquire("w1", 1, LEASE, now=T0)
    record.move(TaskState.QUEUED)
    record.queued_at = T0 + 1
    record.not_before = T0 + 30
    record.error = ErrorInfo(
        message="try again", error_type=ErrorType.RETRYABLE, exception_type="x"
    )

    assert await store.release("w1", record)

    got = await stored(store, record)
    assert (got.state, got.worker, got.lease_until, got.not_before) == (
        TaskState.QUEUED,
        None,
        None,
        T0 + 30,
    )
    assert await store.acquire("w2", 1, LEASE, now=T0 + 29) == []
    (again,) = await store.acquire("w2", 1, LEASE, now=T0 + 30)
    assert (again.id, again.attempt, again.worker) == (record.id, 2, "w2")


async def test_release_of_a_value_that_cannot_be_stored_fails_the_task(
    store: LeasingStore,
) -> None:
    await queue(store)
    (record,) = await store.acquire("w1", 1, LEASE, now=T0)

    assert await store.release("w1", completed(record, T0 + 1, {"text": "bad \ud800"}))

    got = await stored(store, record)
    assert got.state is TaskState.FAILED and got.error is not None
    assert got.error.exception_type == "taskbus.UnstorableValue"
    assert (got.worker, got.lease_until) == (None, None)


async def test_a_running_record_cannot_be_released(store: LeasingStore) -> None:
    await queue(store)
    (record,) = await store.acquire("w1", 1, LEASE, now=T0)

    with pytest.raises(ValueError, match=r"re-queued record, not <TaskRecord .* running"):
        await store.release("w1", record)
    assert (await stored(store, record)).worker == "w1"


# -- extend, reap ------------------------------------------------------------------


async def test_extend_leases_renews_held_leases_and_returns_the_lost(store: LeasingStore) -> None:
    for _ in range(3):
        await queue(store)
    a, b = await store.acquire("w1", 2, LEASE, now=T0)
    (c,) = await store.acquire("w2", 1, LEASE, now=T0)

    lost = await store.extend_leases("w1", [a.id, b.id, c.id, "no-such-task"], 60, now=T0 + 5)

    assert lost == {c.id, "no-such-task"}
    assert (await stored(store, a)).lease_until == T0 + 65
    assert (await stored(store, c)).lease_until == T0 + LEASE
    assert ids(await store.reap_expired(now=T0 + 30)) == [c.id]
    assert await store.extend_leases("w1", [], 60, now=T0 + 31) == set()


async def test_reap_requeues_with_attempts_left_and_fails_without(store: LeasingStore) -> None:
    again = await queue(store, max_attempts=2)
    last = await queue(store, max_attempts=1)
    await store.acquire("w1", 2, LEASE, now=T0)
    progressed = await stored(store, again)
    progressed.progress, progressed.message, progressed.current = 50.0, "half", 5
    await store.update(progressed)  # the runtime's own write keeps the lease

    assert await store.reap_expired(now=T0 + LEASE) == [], "a lease ends after its time"
    reaped = {record.id: record for record in await store.reap_expired(now=T0 + LEASE + 0.5)}

    assert set(reaped) == {again.id, last.id}
    queued, failed = reaped[again.id], reaped[last.id]
    assert (queued.state, queued.attempt, queued.queued_at) == (TaskState.QUEUED, 1, T0 + 10.5)
    assert (queued.started_at, queued.progress, queued.message, queued.current) == (None,) * 4
    assert queued.error is not None and queued.error.error_type is ErrorType.RETRYABLE
    assert (failed.state, failed.finished_at) == (TaskState.FAILED, T0 + 10.5)
    assert failed.error is not None and failed.error.error_type is ErrorType.FATAL
    assert "worker 'w1' stopped renewing its lease" in failed.error.message
    assert "it does not run again" in failed.error.message
    assert failed.error.exception_type == "taskbus.TaskInterruptedError"
    for record in (queued, failed):
        assert (record.worker, record.lease_until) == (None, None)
        got = await stored(store, record)
        assert (got.state, got.error, got.worker) == (record.state, record.error, None)
    assert await store.reap_expired(now=T0 + 100) == []
    (rerun,) = await store.acquire("w2", 5, LEASE, now=T0 + 11)
    assert (rerun.id, rerun.attempt) == (again.id, 2)


async def test_a_claim_without_a_lease_is_reaped_at_once(store: LeasingStore) -> None:
    record = await queue(store)
    record.move(TaskState.RUNNING)
    record.attempt, record.started_at = 1, T0
    await store.claim(record)  # a claim nobody renews (an older taskbus made these)

    assert [(r.id, r.state) for r in await store.reap_expired(now=T0)] == [
        (record.id, TaskState.QUEUED)
    ]
    assert (await stored(store, record)).state is TaskState.QUEUED


async def test_reap_takes_the_tasks_of_dead_workers_whatever_their_lease(
    store: LeasingStore,
) -> None:
    alive, dead = await queue(store), await queue(store, task_type="other")
    await store.acquire("alive", 1, LEASE, now=T0, types=["reports:build"])
    await store.acquire("dead", 1, LEASE, now=T0, types=["other"])

    reaped = await store.reap_expired(now=T0 + 1, workers=["dead"], fail_types=["other"])

    assert [(r.id, r.state) for r in reaped] == [(dead.id, TaskState.FAILED)]
    assert (await stored(store, alive)).state is TaskState.RUNNING


async def test_a_task_whose_cancel_was_requested_is_cancelled_when_reaped(
    store: LeasingStore,
) -> None:
    """Its worker died before it heard the request: the task must not run again."""
    asked, other = await queue(store, priority=9), await queue(store, priority=1)
    await store.acquire("dead", 2, LEASE, now=T0)
    store.request_cancel(asked.id, "not wanted any more")

    reaped = await store.reap_expired(now=T0 + 1, workers=["dead"])

    states = {r.id: (r.state, r.cancel_reason) for r in reaped}
    assert states == {
        asked.id: (TaskState.CANCELLED, "not wanted any more"),
        other.id: (TaskState.QUEUED, None),
    }
    got = await stored(store, asked)
    assert (got.state, got.worker, got.finished_at, got.cancel_reason, got.attempt) == (
        TaskState.CANCELLED,
        None,
        T0 + 1,
        "not wanted any more",
        1,
    )


async def test_a_cancel_request_marks_only_a_running_task(store: LeasingStore) -> None:
    waiting = await queue(store)
    store.request_cancel(waiting.id, "early")
    store.request_cancel("no-such-task", "none")
    (claimed,) = await store.acquire("w", 1, LEASE, now=T0)
    assert (claimed.id, claimed.cancel_reason) == (waiting.id, None)
    # A worker that finishes anyway (the request came too late) writes its outcome.
    store.request_cancel(claimed.id, "late")
    assert await store.release("w", completed(claimed, T0 + 1))
    got = await stored(store, waiting)
    assert (got.state, got.cancel_reason, got.result) == (TaskState.COMPLETED, None, 1)


# -- cancel_queued -----------------------------------------------------------------


async def test_cancel_queued_cancels_only_a_queued_task(store: LeasingStore) -> None:
    waiting = await queue(store, priority=1)
    running = await queue(store, priority=9)
    await store.acquire("w", 1, LEASE, now=T0)

    cancelled = await store.cancel_queued(waiting.id, "not wanted", now=T0 + 2)

    assert cancelled is not None
    assert (cancelled.state, cancelled.finished_at, cancelled.cancel_reason) == (
        TaskState.CANCELLED,
        T0 + 2,
        "not wanted",
    )
    got = await stored(store, waiting)
    assert (got.state, got.cancel_reason) == (TaskState.CANCELLED, "not wanted")
    assert await store.cancel_queued(waiting.id, None, now=T0 + 3) is None
    assert await store.cancel_queued(running.id, None, now=T0 + 3) is None
    assert (await stored(store, running)).state is TaskState.RUNNING
    assert await store.cancel_queued("no-such-task", None) is None
    assert await store.acquire("w", 5, LEASE, now=T0 + 4) == []


# -- input required: answer_input, cancel_queued of a waiting task ----------------------


async def waiting_task(store: LeasingStore, key: str = "ask-1") -> TaskRecord:
    """A task claimed by worker w, which asked a question and let its lease go."""
    await queue(store)
    (record,) = await store.acquire("w", 1, LEASE, now=T0)
    question = InputQuestion(
        key=key, prompt="Which branch?", json_schema={"type": "string"}, asked_at=T0 + 1
    )
    start_waiting(record, question)
    assert await store.release("w", record)
    return record


async def test_a_waiting_task_holds_no_lease_and_is_never_claimed_or_reaped(
    store: LeasingStore,
) -> None:
    record = await waiting_task(store)
    got = await stored(store, record)
    assert (got.state, got.worker, got.lease_until, got.attempt) == (
        TaskState.WAITING,
        None,
        None,
        1,
    )
    assert await store.acquire("w2", 5, LEASE, now=T0 + 2) == []
    assert await store.reap_expired(now=T0 + 10 * LEASE) == []
    assert (await stored(store, record)).state is TaskState.WAITING


async def test_answer_input_records_the_answer_and_queues_the_task_once(
    store: LeasingStore,
) -> None:
    record = await waiting_task(store)
    answer = InputAnswer(value="main", answered_at=T0 + 3)

    assert await store.answer_input(record.id, "ask-2", answer, now=T0 + 3) is None
    answered = await store.answer_input(record.id, "ask-1", answer, now=T0 + 3)

    assert answered is not None
    assert (answered.state, answered.queued_at, answered.attempt) == (TaskState.QUEUED, T0 + 3, 0)
    assert answered.asks is not None and answered.asks.answers == {"ask-1": answer}
    assert answered.asks.pending is None
    late = InputAnswer(value="dev", answered_at=T0 + 4)
    assert await store.answer_input(record.id, "ask-1", late, now=T0 + 4) is None
    assert await store.answer_input("no-such-task", "ask-1", late) is None
    (again,) = await store.acquire("w2", 1, LEASE, now=T0 + 5)
    assert (again.id, again.attempt) == (record.id, 1), "the run goes on: not a new attempt"
    assert again.asks is not None and again.asks.answers["ask-1"].value == "main"


async def test_cancel_queued_also_cancels_a_task_waiting_for_input(store: LeasingStore) -> None:
    record = await waiting_task(store)
    cancelled = await store.cancel_queued(record.id, "never mind", now=T0 + 2)
    assert cancelled is not None
    assert (cancelled.state, cancelled.cancel_reason) == (TaskState.CANCELLED, "never mind")
    answer = InputAnswer(value="main", answered_at=T0 + 3)
    assert await store.answer_input(record.id, "ask-1", answer, now=T0 + 3) is None
    assert (await stored(store, record)).state is TaskState.CANCELLED


# -- value semantics and arguments ---------------------------------------------------


async def test_records_handed_out_and_in_are_copies(store: LeasingStore) -> None:
    await queue(store)
    (record,) = await store.acquire("w1", 1, LEASE, now=T0)
    record.state, record.worker, record.attempt = TaskState.FAILED, "someone", 7

    got = await stored(store, record)
    assert (got.state, got.worker, got.attempt) == (TaskState.RUNNING, "w1", 1)
    assert got is not await store.get(record.id)

    got.move(TaskState.COMPLETED)
    got.finished_at = T0 + 1
    assert await store.release("w1", got)
    got.result = "changed after"
    assert (await stored(store, record)).result is None


@pytest.mark.parametrize(
    ("call", "match"),
    [
        ({"limit": -1}, "limit"),
        ({"limit": 1.5}, "limit"),
        ({"limit": True}, "limit"),
        ({"lease": 0}, "lease"),
        ({"lease": float("inf")}, "lease"),
        ({"lease": float("nan")}, "lease"),
        ({"worker_id": ""}, "worker_id"),
        ({"worker_id": 3}, "worker_id"),
        ({"aging": 0}, "aging"),
        ({"now": float("nan")}, "now"),
        ({"limits": {"reports:build": -1}}, "limit of 'reports:build'"),
    ],
)
async def test_acquire_refuses_arguments_that_cannot_work(
    store: LeasingStore, call: dict[str, Any], match: str
) -> None:
    await queue(store)
    arguments: dict[str, Any] = {"worker_id": "w", "limit": 1, "lease": LEASE, **call}

    with pytest.raises(ValueError, match=match):
        await store.acquire(**arguments)
    with pytest.raises(TypeError, match="one string"):
        await store.acquire("w", 1, LEASE, types="reports:build")
    assert await store.acquire("w", 0, LEASE) == []
    assert (await store.stats()).by_state == {TaskState.QUEUED: 1}


async def test_the_codec_keeps_the_lease_columns_as_it_keeps_others() -> None:
    record = make_record()
    record.worker = "w\ud800"
    with pytest.raises(UnstorableValue, match="its worker cannot be stored"):
        row_from_record(record)  # identity text, refused like an owner
    record.worker, record.lease_until = "wörker", float("inf")
    row = row_from_record(record)
    assert row[COLUMNS.index("lease_until")] is None  # a non-finite time is not stored
    record.lease_until = T0
    back = record_from_row(row_from_record(record))
    assert (back.worker, back.lease_until) == ("wörker", T0)
    bad = list(row_from_record(record))
    bad[COLUMNS.index("worker")] = 5
    bad[COLUMNS.index("lease_until")] = "soon"
    with pytest.raises(CorruptRecord) as error:
        record_from_row(tuple(bad))
    assert set(error.value.columns) == {"worker", "lease_until"}


# -- SQLite only -------------------------------------------------------------------


async def test_sqlite_leases_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path)
    await store.open()
    try:
        record = make_record()
        await store.add(record)
        await store.acquire("w1", 1, LEASE, now=T0)
    finally:
        await store.close()

    store = SqliteStore(path)
    await store.open()
    try:
        got = await store.get(record.id)
        assert got is not None
        assert (got.state, got.worker, got.lease_until) == (TaskState.RUNNING, "w1", T0 + LEASE)
        assert await store.extend_leases("w1", [record.id], LEASE, now=T0 + 5) == set()
        assert await store.reap_expired(now=T0 + LEASE + 1) == []
        assert ids(await store.reap_expired(now=T0 + 2 * LEASE)) == [record.id]
    finally:
        await store.close()


async def test_sqlite_a_version_2_file_gains_the_lease_columns(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    old = make_record()
    old.move(TaskState.RUNNING)
    old.attempt, old.started_at = 1, T0
    v2 = COLUMNS[: COLUMNS.index("cancel_reason") + 1]
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("BEGIN")
        MIGRATIONS[0](conn)
        MIGRATIONS[1](conn)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 2")
        conn.execute(
            f"INSERT INTO tasks ({', '.join(v2)}) VALUES ({', '.join('?' * len(v2))})",
            row_from_record(old)[: len(v2)],
        )
        conn.execute("COMMIT")

    store = SqliteStore(path)
    await store.open()
    try:
        got = await store.get(old.id)
        # Left running by a version-2 process (which held no lease): expired at once.
        assert got is not None and (got.state, got.worker, got.lease_until) == (
            TaskState.RUNNING,
            None,
            0.0,
        )
        assert [(r.id, r.state) for r in await store.reap_expired(now=T0)] == [
            (old.id, TaskState.QUEUED)
        ]
        indexes = {name for (name,) in await store.execute("SELECT name FROM sqlite_master")}
        assert {"tasks_queue", "tasks_running_type", "tasks_leases", "tasks_due"} <= indexes
        fresh = make_record()
        await store.add(fresh)
        assert set(ids(await store.acquire("w", 5, LEASE, now=T0))) == {old.id, fresh.id}
        assert set(ids(await store.reap_expired(now=T0 + 2 * LEASE))) == {old.id, fresh.id}
    finally:
        await store.close()


async def test_sqlite_acquire_settles_a_corrupt_row_and_takes_the_next(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = SqliteStore(path)
    await store.open()
    bad, good = make_record(priority=9), make_record(priority=1)
    try:
        await store.add(bad)
        await store.add(good)
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE tasks SET input = '{not json' WHERE id = ?", (bad.id,))

    store = SqliteStore(path)
    await store.open()
    try:
        assert ids(await store.acquire("w", 5, LEASE, now=T0)) == [good.id]
        got = await store.get(bad.id)
        assert got is not None and got.state is TaskState.FAILED
        assert got.error is not None and got.error.exception_type == "taskbus.CorruptRecord"
        assert await store.execute("SELECT state FROM tasks WHERE id = ?", (bad.id,)) == [
            ("failed",)
        ]
        assert await store.acquire("w", 5, LEASE, now=T0) == []
    finally:
        await store.close()
