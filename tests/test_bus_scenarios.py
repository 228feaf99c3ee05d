"""Bus scenarios over every store: the same public-API stories on memory, SQLite and
the value-semantics fake (`tests/stores/_fake.ValueStore`, a `TaskStore`, so the
bus runs over it in leased mode as it does over SQLite).

Each scenario opens its bus inside the test body (``async with``) and waits only
on events and bounded waits; two scenarios need a durable store (SQLite only).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from _redis import redis_store
from pydantic import BaseModel
from stores._fake import ValueStore

import taskbus._leasing
from taskbus import (
    BatchNotFound,
    BusNotRunning,
    DeadLetterReason,
    ErrorType,
    Event,
    FatalError,
    InvalidAnswer,
    InvalidSubmission,
    InvalidTaskInput,
    RetryableError,
    RetryPolicy,
    TaskBus,
    TaskCancelledError,
    TaskCompleted,
    TaskContext,
    TaskFailedError,
    TaskInputRequired,
    TaskNotFound,
    TaskNotRetryable,
    TaskNotWaiting,
    TaskProgress,
    TaskQueued,
    TaskRetrying,
    TaskStarted,
    TaskState,
    UnknownTaskType,
    event_order,
)
from taskbus.abc import ClaimsOnAdd, TaskStore
from taskbus.stores import Store
from taskbus.testing import EventRecorder, FakeClock

pytestmark = pytest.mark.anyio

MakeBus = Callable[..., TaskBus]
WAIT = 5.0  # seconds any one wait may take before the test fails


def _memory(tmp_path: Path) -> Store | str:
    return "memory://"


def _sqlite(tmp_path: Path) -> Store | str:
    return f"sqlite:///{tmp_path / 'bus.db'}"


def _fake(tmp_path: Path) -> Store | str:
    return ValueStore()


def _redis(tmp_path: Path) -> Store | str:
    return redis_store(tmp_path)


#: Every store the scenarios run over, by the id their tests carry.
STORES: dict[str, Callable[[Path], Store | str]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "fake": _fake,
    "redis": _redis,
}


@pytest.fixture(params=list(STORES), ids=list(STORES))
def new_bus(request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str) -> MakeBus:
    """Build a bus over one kind of store (2 workers, a short grace, unless given)."""

    def make(**kwargs: Any) -> TaskBus:
        kwargs.setdefault("workers", 2)
        kwargs.setdefault("shutdown_grace", 1.0)
        return TaskBus(store=STORES[request.param](tmp_path), **kwargs)

    return make


class Params(BaseModel):
    n: int


class Report(BaseModel):
    rows: int


class Gate:
    """A handler that holds its worker until the test opens the gate."""

    def __init__(self, bus: TaskBus, name: str = "sc:hold") -> None:
        self.running = anyio.Event()
        self.open = anyio.Event()
        self.ran: list[str] = []

        @bus.task(name)
        async def hold(ctx: TaskContext, params: Params) -> int:
            self.ran.append(ctx.task_id)
            if params.n == 0:
                self.running.set()
                await self.open.wait()
            return params.n

    async def until_running(self) -> None:
        with anyio.fail_after(WAIT):
            await self.running.wait()


def register_build(bus: TaskBus) -> Any:
    @bus.task("sc:build")
    async def build(ctx: TaskContext, params: Params) -> Report:
        return Report(rows=params.n * 2)

    return build


def order(event: Event) -> tuple[int, int]:
    assert event.id is not None
    return event_order(event.id)


async def test_the_fake_runs_the_bus_in_leased_mode_as_sqlite_does(tmp_path: Path) -> None:
    assert isinstance(ValueStore(), TaskStore)
    shares = {kind: TaskBus(store=build(tmp_path)).shares_store for kind, build in STORES.items()}
    assert shares == {"memory": False, "sqlite": True, "fake": True, "redis": True}


# -- results --------------------------------------------------------------------------


async def test_submit_and_result_gives_the_typed_result(new_bus: MakeBus) -> None:
    bus = new_bus()
    build = register_build(bus)
    async with bus:
        handle = await bus.submit("sc:build", {"n": 21})
        typed = await build.submit(Params(n=5))
        result = await handle.result(timeout=WAIT)
        other = await typed.result(timeout=WAIT)
    assert isinstance(result, Report) and result == Report(rows=42)
    assert isinstance(other, Report) and other == Report(rows=10)


async def test_wait_returns_the_final_snapshot(new_bus: MakeBus) -> None:
    bus = new_bus()
    register_build(bus)
    async with bus:
        handle = await bus.submit(
            "sc:build", {"n": 3}, owner="alice", metadata={"from": "test"}, priority=7
        )
        snap = await handle.wait(timeout=WAIT)
        now = await bus.get(handle.id)
    assert snap.state is TaskState.COMPLETED and snap.is_final
    assert (snap.owner, snap.metadata, snap.priority) == ("alice", {"from": "test"}, 7)
    assert (snap.attempts, snap.error, snap.cancel_reason) == (1, None, None)
    assert snap.started_at is not None and snap.finished_at is not None
    assert snap.created_at <= snap.started_at <= snap.finished_at
    assert snap.model_dump(exclude={"result"}) == now.model_dump(exclude={"result"})
    assert snap.result == now.result == Report(rows=6), "typed, as `get` and `result` give it"


async def test_a_failed_handler_raises_task_failed_error_with_its_message(
    new_bus: MakeBus,
) -> None:
    bus = new_bus()

    @bus.task("sc:broken", retry=RetryPolicy.never())
    async def broken(ctx: TaskContext) -> None:
        raise ValueError("disk is full")

    async with bus:
        handle = await bus.submit("sc:broken")
        with pytest.raises(TaskFailedError, match="disk is full") as info:
            await handle.result(timeout=WAIT)
        snap = await bus.get(handle.id)
    assert info.value.snapshot.id == handle.id
    assert snap.state is TaskState.FAILED and snap.error is not None
    assert (snap.error.message, snap.attempts) == ("disk is full", 1)
    assert snap.error.exception_type == "builtins.ValueError"


async def test_get_of_an_unknown_id_raises_task_not_found(new_bus: MakeBus) -> None:
    bus = new_bus()
    register_build(bus)
    async with bus:
        await (await bus.submit("sc:build", {"n": 1})).result(timeout=WAIT)
        for unknown in (uuid.uuid4().hex, "no-such-task"):
            with pytest.raises(TaskNotFound, match=unknown):
                await bus.get(unknown)


# -- cancelling -----------------------------------------------------------------------


async def test_a_cancelled_queued_task_never_starts(new_bus: MakeBus) -> None:
    bus = new_bus(workers=1)
    gate = Gate(bus)
    async with bus:
        blocker = await bus.submit("sc:hold", {"n": 0})
        await gate.until_running()
        waiting = await bus.submit("sc:hold", {"n": 1})
        assert (await bus.get(waiting.id)).state is TaskState.QUEUED

        with anyio.fail_after(WAIT):
            assert await bus.cancel(waiting.id, reason="not wanted")
        gate.open.set()
        assert await blocker.result(timeout=WAIT) == 0
        # One worker, FIFO: had the cancelled task stayed queued, it would run first.
        after = await bus.submit("sc:hold", {"n": 2})
        assert await after.result(timeout=WAIT) == 2
        with pytest.raises(TaskCancelledError, match="not wanted"):
            await waiting.result(timeout=WAIT)
        snap = await bus.get(waiting.id)
    assert gate.ran == [blocker.id, after.id]
    assert (snap.state, snap.cancel_reason, snap.attempts) == (
        TaskState.CANCELLED,
        "not wanted",
        0,
    )
    assert snap.started_at is None


async def test_a_cancelled_running_task_sees_it_and_is_never_retried(new_bus: MakeBus) -> None:
    bus = new_bus()
    started = anyio.Event()
    attempts: list[int] = []
    seen: list[bool] = []

    @bus.task("sc:forever", retry=RetryPolicy(max_attempts=3, base_delay=0, jitter=0))
    async def forever(ctx: TaskContext) -> None:
        attempts.append(ctx.attempt)
        started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            seen.append(ctx.cancelled)
            raise

    async with bus:
        recorder = EventRecorder(bus, timeout=WAIT)
        handle = await bus.submit("sc:forever")
        with anyio.fail_after(WAIT):
            await started.wait()
            assert await bus.cancel(handle.id, reason="user pressed stop")
        with pytest.raises(TaskCancelledError, match="user pressed stop"):
            await handle.result(timeout=WAIT)
        snap = await bus.get(handle.id)
        await bus.flush_events()
        names = recorder.names(handle.id)
    assert seen == [True], "the handler saw its cancellation"
    assert attempts == [1]
    assert (snap.state, snap.attempts, snap.cancel_reason) == (
        TaskState.CANCELLED,
        1,
        "user pressed stop",
    )
    assert names == ["task-queued", "task-started", "task-cancelled"]


# -- retries and timeouts -------------------------------------------------------------


async def test_a_retryable_failure_backs_off_then_succeeds(new_bus: MakeBus) -> None:
    bus = new_bus()
    attempts: list[int] = []

    @bus.task(
        "sc:flaky",
        retry=RetryPolicy(max_attempts=3, base_delay=0.02, multiplier=2.0, jitter=0),
    )
    async def flaky(ctx: TaskContext, params: Params) -> int:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise RetryableError(f"not yet ({ctx.attempt})")
        return params.n

    async with bus:
        recorder = EventRecorder(bus, timeout=WAIT)
        handle = await bus.submit("sc:flaky", {"n": 9})
        assert await handle.result(timeout=WAIT) == 9
        snap = await bus.get(handle.id)
        await recorder.wait_for(TaskCompleted, task_id=handle.id)
    assert attempts == [1, 2, 3]
    assert (snap.state, snap.attempts, snap.error) == (TaskState.COMPLETED, 3, None)
    retrying = recorder.of(TaskRetrying, handle.id)
    assert [(r.attempt, r.delay, r.error) for r in retrying] == [
        (1, 0.02, "not yet (1)"),
        (2, 0.04, "not yet (2)"),
    ]
    starts = recorder.of(TaskStarted, handle.id)
    assert [s.attempt for s in starts] == [1, 2, 3]
    for retry, start in zip(retrying, starts[1:], strict=True):
        # Stored times are rounded to the microsecond: allow one.
        waited = start.timestamp - retry.timestamp
        assert waited >= timedelta(seconds=retry.delay) - timedelta(microseconds=1)
    assert recorder.names(handle.id) == [
        "task-queued",
        "task-started",
        "task-retrying",
        "task-started",
        "task-retrying",
        "task-started",
        "task-completed",
    ]


@pytest.mark.parametrize("max_attempts", [1, 2])
async def test_a_timeout_fails_with_task_timeout_error_retried_as_the_policy_says(
    new_bus: MakeBus, max_attempts: int
) -> None:
    bus = new_bus()
    attempts: list[int] = []

    @bus.task(
        "sc:slow",
        timeout=0.05,
        retry=RetryPolicy(max_attempts=max_attempts, base_delay=0, jitter=0),
    )
    async def slow(ctx: TaskContext) -> None:
        attempts.append(ctx.attempt)
        await anyio.sleep_forever()

    async with bus:
        handle = await bus.submit("sc:slow")
        with pytest.raises(TaskFailedError) as info:
            await handle.result(timeout=WAIT)
        snap = await bus.get(handle.id)
    assert info.value.snapshot.id == handle.id
    assert attempts == list(range(1, max_attempts + 1))
    assert (snap.state, snap.attempts) == (TaskState.FAILED, max_attempts)
    assert snap.error is not None
    assert snap.error.exception_type.rsplit(".", 1)[-1] == "TaskTimeoutError"
    assert snap.error.retryable


# -- events ---------------------------------------------------------------------------


async def test_subscribe_to_a_task_sees_its_events_in_order_and_ends(new_bus: MakeBus) -> None:
    bus = new_bus(workers=1)
    gate = Gate(bus)

    @bus.task("sc:steps")
    async def steps(ctx: TaskContext) -> int:
        await ctx.progress(50, "half way")
        return 7

    async with bus:
        blocker = await bus.submit("sc:hold", {"n": 0})
        await gate.until_running()
        handle = await bus.submit("sc:steps")  # waits behind the blocker
        # A store's log delivers task-queued after submit returns: let it pass first.
        await bus.flush_events()
        async with bus.subscribe(task_id=handle.id) as events:
            gate.open.set()
            with anyio.fail_after(WAIT):  # the iteration ends after the final event
                seen: list[Event] = [event async for event in events]
        assert await blocker.result(timeout=WAIT) == 0
    assert [e.name for e in seen] == ["task-started", "task-progress", "task-completed"]
    assert all(getattr(e, "task_id", None) == handle.id for e in seen)
    orders = [order(e) for e in seen]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    progress, done = seen[1], seen[2]
    assert isinstance(progress, TaskProgress) and (progress.progress, progress.message) == (
        50,
        "half way",
    )
    assert isinstance(done, TaskCompleted) and done.result == 7


async def test_subscribe_after_an_id_replays_what_followed(new_bus: MakeBus) -> None:
    bus = new_bus()
    register_build(bus)
    async with bus:
        recorder = EventRecorder(bus, timeout=WAIT)
        first = await bus.submit("sc:build", {"n": 1})
        second = await bus.submit("sc:build", {"n": 2})
        await first.result(timeout=WAIT)
        await second.result(timeout=WAIT)
        await recorder.wait_for(TaskCompleted, count=2)
        live = list(recorder.events)
        queued_first = live[0]
        assert (queued_first.name, getattr(queued_first, "task_id", None)) == (
            "task-queued",
            first.id,
        )
        async with bus.subscribe(after=queued_first.id, task_id=second.id) as events:
            with anyio.fail_after(WAIT):
                replayed: list[Event] = [event async for event in events]
    expected = [e for e in live[1:] if getattr(e, "task_id", None) == second.id]
    assert [e.name for e in expected] == ["task-queued", "task-started", "task-completed"]
    # Replayed from the store's log, an event is the live one as data (JSON).
    assert [e.model_dump(mode="json") for e in replayed] == [
        e.model_dump(mode="json") for e in expected
    ]


async def test_progress_reaches_listeners_before_the_final_event(new_bus: MakeBus) -> None:
    bus = new_bus()
    heard: list[TaskProgress] = []

    @bus.task("sc:pages")
    async def pages(ctx: TaskContext) -> None:
        await ctx.progress(25, "loading")
        await ctx.progress(current=3, total=4, message="page 3/4")

    async with bus:
        bus.on(TaskProgress, heard.append)
        recorder = EventRecorder(bus, timeout=WAIT)
        handle = await bus.submit("sc:pages")
        await handle.result(timeout=WAIT)
        await recorder.wait_for(TaskCompleted, task_id=handle.id)
        names = recorder.names(handle.id)
    assert [(p.task_id, p.progress, p.message) for p in heard[:1]] == [(handle.id, 25, "loading")]
    last = heard[-1]
    assert (last.current, last.total, last.message) == (3, 4, "page 3/4"), "last value kept"
    assert names[-1] == "task-completed"
    assert names.count("task-progress") == len(heard) >= 2


# -- keys and batches -----------------------------------------------------------------


async def test_an_idempotency_key_gives_the_same_task_while_it_is_unfinished(
    new_bus: MakeBus,
) -> None:
    bus = new_bus()
    gate = Gate(bus)
    async with bus:
        mine = await bus.submit("sc:hold", {"n": 0}, key="nightly", owner="alice")
        await gate.until_running()
        again = await bus.submit("sc:hold", {"n": 0}, key="nightly", owner="alice")
        theirs = await bus.submit("sc:hold", {"n": 3}, key="nightly", owner="bob")
        other = await bus.submit("sc:hold", {"n": 4}, key="weekly", owner="alice")
        assert again.id == mine.id
        assert len({mine.id, theirs.id, other.id}) == 3
        gate.open.set()
        assert await mine.result(timeout=WAIT) == 0
        assert await theirs.result(timeout=WAIT) == 3
        assert await other.result(timeout=WAIT) == 4
        later = await bus.submit("sc:hold", {"n": 5}, key="nightly", owner="alice")
        assert await later.result(timeout=WAIT) == 5
        owned = await bus.list(owner="alice")
    assert later.id != mine.id, "a finished task no longer answers for its key (no key_ttl)"
    assert sorted(gate.ran) == sorted([mine.id, theirs.id, other.id, later.id])
    assert {s.id for s in owned} == {mine.id, other.id, later.id}


async def test_a_batch_runs_every_item_and_sums_them_up(new_bus: MakeBus) -> None:
    bus = new_bus()

    @bus.task("sc:item", retry=RetryPolicy.never())
    async def item(ctx: TaskContext, params: Params) -> int:
        if params.n < 0:
            raise FatalError("negative input")
        return params.n * 10

    async with bus:
        batch = await bus.submit_batch(
            [("sc:item", {"n": 1}), ("sc:item", {"n": -1}), ("sc:item", {"n": 2})]
        )
        summary = await batch.wait(timeout=WAIT)
        ids = summary.task_ids
        results = [await bus.result(ids[0], timeout=WAIT), await bus.result(ids[2], timeout=WAIT)]
        with pytest.raises(TaskFailedError, match="negative input"):
            await bus.result(ids[1], timeout=WAIT)
        again = await bus.batch(batch.id)
        tagged = [(await bus.get(task_id)).metadata.get("batch_id") for task_id in ids]
    counts = (summary.total, summary.completed, summary.failed, summary.cancelled)
    assert counts == (3, 2, 1, 0)
    assert (summary.running, summary.queued, summary.done, summary.progress) == (0, 0, 3, 100)
    assert results == [10, 20]
    assert again == summary
    assert tagged == [batch.id] * 3


async def test_a_task_submitted_to_run_at_a_time_starts_no_sooner(new_bus: MakeBus) -> None:
    bus = new_bus()
    register_build(bus)
    async with bus:
        recorder = EventRecorder(bus)
        at = datetime.now(UTC) + timedelta(seconds=0.3)
        handle = await bus.submit("sc:build", {"n": 1}, run_at=at)
        stored = await bus.get(handle.id)
        started = await recorder.wait_for(TaskStarted, task_id=handle.id, timeout=WAIT)
    assert stored.state is TaskState.QUEUED
    assert stored.not_before is not None
    assert abs((stored.not_before - at).total_seconds()) < 1e-3, "the store keeps the time"
    assert started.timestamp >= at - timedelta(milliseconds=1)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_a_batch_is_read_and_cancelled_from_a_bus_that_did_not_submit_it(
    kind: str, tmp_path: Path, anyio_backend: str
) -> None:
    """A batch is its tasks in the store: a bus sharing the store (another process,
    as far as the store can tell) reads its summary and cancels what is unfinished."""
    gate = anyio.Event()

    def register(bus: TaskBus) -> None:
        @bus.task("sc:part", retry=RetryPolicy.never())
        async def part(ctx: TaskContext, params: Params) -> int:
            if params.n >= 100:
                await gate.wait()
            return params.n

    submitter = TaskBus(store=STORES[kind](tmp_path), workers=0)
    worker = TaskBus(store=STORES[kind](tmp_path), workers=1, shutdown_grace=1.0)
    observer = TaskBus(store=STORES[kind](tmp_path), workers=0)
    register(submitter)
    register(worker)
    async with worker, submitter, observer:
        recorder = EventRecorder(observer)
        batch = await submitter.submit_batch([("sc:part", {"n": n}) for n in (1, 100, 101)])
        first, blocked, waiting = batch.task_ids
        await recorder.wait_for(TaskStarted, task_id=blocked, timeout=WAIT)
        summary = await observer.batch(batch.id)
        assert summary.task_ids == batch.task_ids
        counts = (summary.total, summary.completed, summary.running, summary.queued)
        assert counts == (3, 1, 1, 1)
        assert await observer.cancel_batch(batch.id, reason="enough") == 2
        final = await batch.wait(timeout=WAIT)
        read_back = await observer.batch(batch.id)
        states = [(await observer.get(task_id)).state for task_id in (first, blocked, waiting)]
        with pytest.raises(BatchNotFound):
            await observer.batch("no-such-batch")
    assert (final.completed, final.cancelled) == (1, 2)
    assert (read_back.completed, read_back.cancelled, read_back.progress) == (1, 2, 100.0)
    assert read_back.task_ids == final.task_ids
    assert states == [TaskState.COMPLETED, TaskState.CANCELLED, TaskState.CANCELLED]


# -- dead letters and re-runs ---------------------------------------------------------


class Renamed(BaseModel):
    """A changed input model: what ``{"n": ...}`` no longer validates against."""

    count: int


class Compatible(BaseModel):
    """A new input model that takes what `Params` held."""

    n: int


class Flaky:
    """``sc:flaky``: fails retryably (2 attempts) until `fixed`; `fatal` inputs fail
    at once; `runs` lists (task id, attempt)."""

    def __init__(self, bus: TaskBus) -> None:
        self.fixed = False
        self.runs: list[tuple[str, int]] = []

        @bus.task("sc:flaky", retry=RetryPolicy(max_attempts=2, base_delay=0.01, jitter=0))
        async def flaky(ctx: TaskContext, params: Params) -> int:
            self.runs.append((ctx.task_id, ctx.attempt))
            if params.n < 0:
                raise FatalError("negative input")
            if not self.fixed:
                raise RetryableError("the backend is down")
            return params.n


async def test_a_dead_letter_is_listed_and_its_retry_runs_as_a_new_linked_task(
    new_bus: MakeBus,
) -> None:
    bus = new_bus()
    flaky = Flaky(bus)
    register_build(bus)
    async with bus:
        old = await bus.submit(
            "sc:flaky", {"n": 7}, owner="alice", priority=8, metadata={"from": "test"}
        )
        with pytest.raises(TaskFailedError, match="the backend is down"):
            await old.result(timeout=WAIT)
        fatal = await bus.submit("sc:flaky", {"n": -1}, owner="alice")
        await bus.wait(fatal.id, timeout=WAIT)
        done = await bus.submit("sc:build", {"n": 1}, owner="alice")
        await done.result(timeout=WAIT)
        dead = await bus.list(dead_letter=True)
        mine = await bus.list(dead_letter=True, owner="alice", type_prefix="sc:", limit=1)
        flaky.fixed = True
        new = await bus.retry(old.id)
        assert await new.result(timeout=WAIT) == 7
        rerun = await bus.get(new.id)
        before = await bus.get(old.id)
        dead_after = await bus.list(dead_letter=True)
    assert [(s.id, s.dead_letter) for s in dead] == [
        (old.id, DeadLetterReason.EXHAUSTED),
        (fatal.id, DeadLetterReason.NOT_RETRYABLE),
    ]
    assert [s.id for s in mine] == [old.id]
    assert new.id != old.id and new.type == "sc:flaky"
    assert flaky.runs == [(old.id, 1), (old.id, 2), (fatal.id, 1), (new.id, 1)]
    assert rerun.retry_of == old.id and before.retry_of is None
    assert (rerun.owner, rerun.priority) == ("alice", 8)
    assert Params.model_validate(rerun.input) == Params(n=7), "a store gives back JSON"
    assert rerun.metadata == {"from": "test", "retry_of": old.id}
    assert (rerun.state, rerun.dead_letter) == (TaskState.COMPLETED, None)
    assert (before.state, before.attempts, before.dead_letter) == (
        TaskState.FAILED,
        2,
        DeadLetterReason.EXHAUSTED,
    ), "the old task stays as it was"
    assert [s.id for s in dead_after] == [old.id, fatal.id]


async def test_a_cancelled_task_is_retried_with_a_new_priority_and_delay(
    new_bus: MakeBus,
) -> None:
    bus = new_bus()
    register_build(bus)
    async with bus:
        recorder = EventRecorder(bus)
        old = await bus.submit("sc:build", {"n": 2}, delay=60)
        assert await bus.cancel(old.id, reason="not now")
        await bus.wait(old.id, timeout=WAIT)
        assert await bus.list(dead_letter=True) == [], "a cancelled task is no dead letter"
        new = await bus.retry(old.id, priority=9, delay=0.05)
        queued = await bus.get(new.id)
        started = await recorder.wait_for(TaskStarted, task_id=new.id, timeout=WAIT)
        assert await new.result(timeout=WAIT) == Report(rows=4)
        at = datetime.now(UTC) + timedelta(seconds=0.05)
        later = await bus.retry(old.id, run_at=at)
        assert await later.result(timeout=WAIT) == Report(rows=4)
    assert (queued.state, queued.priority, queued.retry_of) == (TaskState.QUEUED, 9, old.id)
    assert queued.not_before is not None
    assert started.timestamp >= queued.not_before - timedelta(milliseconds=1)
    assert later.id not in (old.id, new.id)


async def test_retrying_twice_makes_two_tasks_unless_a_key_is_given(new_bus: MakeBus) -> None:
    bus = new_bus()
    gate = Gate(bus)
    async with bus:
        old = await bus.submit("sc:hold", {"n": 0}, owner="alice")
        await gate.until_running()
        assert await bus.cancel(old.id)
        await bus.wait(old.id, timeout=WAIT)
        first = await bus.retry(old.id, key="redo")
        second = await bus.retry(old.id, key="redo")
        third = await bus.retry(old.id)
        fourth = await bus.retry(old.id)
        gate.open.set()
        for handle in (first, third, fourth):
            await bus.wait(handle.id, timeout=WAIT)
        reruns = [s for s in await bus.list(owner="alice") if s.retry_of == old.id]
    assert first.id == second.id, "the key answers with the re-run still unfinished"
    assert len({first.id, third.id, fourth.id}) == 3
    assert sorted(s.id for s in reruns) == sorted([first.id, third.id, fourth.id])


async def test_retry_refuses_what_it_cannot_run_again(new_bus: MakeBus) -> None:
    bus = new_bus()
    gate = Gate(bus)
    register_build(bus)

    @bus.task("sc:gone", retry=RetryPolicy.never())
    async def gone(ctx: TaskContext, params: Params) -> None:
        raise FatalError("always")

    async with bus:
        with pytest.raises(TaskNotFound, match="no-such-task"):
            await bus.retry("no-such-task")
        done = await bus.submit("sc:build", {"n": 1})
        await done.result(timeout=WAIT)
        running = await bus.submit("sc:hold", {"n": 0})
        await gate.until_running()
        queued = await bus.submit("sc:hold", {"n": 1}, delay=60)
        for handle, state in ((running, "running"), (queued, "queued"), (done, "completed")):
            with pytest.raises(TaskNotRetryable, match=f"is {state}") as info:
                await bus.retry(handle.id)
            assert (info.value.task_id, info.value.state) == (handle.id, state)
        gate.open.set()
        await bus.cancel(queued.id)
        failed = await bus.submit("sc:gone", {"n": 1})
        await bus.wait(failed.id, timeout=WAIT)
        with pytest.raises(InvalidSubmission):
            await bus.retry(failed.id, priority=11)
        with pytest.raises(InvalidSubmission):
            await bus.retry(failed.id, delay=1, run_at=datetime.now(UTC))
        bus.registry.unregister("sc:gone")
        with pytest.raises(UnknownTaskType, match="sc:gone"):
            await bus.retry(failed.id)

        @bus.task("sc:gone")
        async def renamed(ctx: TaskContext, params: Renamed) -> None:
            return None

        with pytest.raises(InvalidTaskInput, match="count"):
            await bus.retry(failed.id)
        before = await bus.list(limit=1000)
        bus.registry.unregister("sc:gone")

        @bus.task("sc:gone")
        async def same_fields(ctx: TaskContext, params: Compatible) -> int:
            return params.n

        # A new model class with the same fields takes the old input (on the memory
        # store, the old model instance, through its JSON).
        assert await (await bus.retry(failed.id)).result(timeout=WAIT) == 1
    assert not [s for s in before if s.retry_of is not None], "nothing half-stored"
    with pytest.raises(BusNotRunning):
        await bus.retry(failed.id)


# -- rate limits and keyed concurrency ------------------------------------------------


class Clone(BaseModel):
    user: str
    hold: bool = False


async def test_a_key_runs_one_task_at_a_time_and_other_keys_go_on(new_bus: MakeBus) -> None:
    bus = new_bus(workers=3)
    holding, release = anyio.Event(), anyio.Event()
    running: Counter[str] = Counter()
    peak: Counter[str] = Counter()

    @bus.task("sc:clone", concurrency_key=lambda params: params.user)
    async def clone(ctx: TaskContext, params: Clone) -> str:
        running[params.user] += 1
        peak[params.user] = max(peak[params.user], running[params.user])
        try:
            if params.hold:
                holding.set()
                await release.wait()
        finally:
            running[params.user] -= 1
        return params.user

    async with bus:
        first = await clone.submit(Clone(user="alice", hold=True))
        with anyio.fail_after(WAIT):
            await holding.wait()
        second = await clone.submit(Clone(user="alice"))
        other = await clone.submit(Clone(user="bob"))
        assert await other.result(timeout=WAIT) == "bob"  # another key is not held up
        waiting = await bus.get(second.id)
        release.set()
        assert await second.result(timeout=WAIT) == "alice"
        assert await first.result(timeout=WAIT) == "alice"
        ran = await bus.get(second.id)
    assert (waiting.state, waiting.attempts) == (TaskState.QUEUED, 0)
    assert waiting.waiting_for == "concurrency 1 per key 'alice'"
    assert waiting.metadata["concurrency_key"] == "alice"
    assert (ran.waiting_for, ran.attempts) == (None, 1)
    assert peak == {"alice": 1, "bob": 1}


async def until_waiting(bus: TaskBus, task_id: str) -> Any:
    """The task's snapshot once it says what it waits for (a bounded poll)."""
    with anyio.fail_after(WAIT):
        while True:
            snapshot = await bus.get(task_id)
            if snapshot.waiting_for is not None:
                return snapshot
            await anyio.sleep(0.01)  # the store says it, no event does


async def test_a_rate_limited_type_starts_no_more_than_its_rate_and_others_go_on(
    new_bus: MakeBus,
) -> None:
    # A window of a minute: the third task cannot start within this test, however
    # slowly the machine claims it (`test_rate_limits.py` sees one run a window later).
    bus = new_bus(workers=4)
    register_build(bus)
    release, two_started = anyio.Event(), anyio.Event()
    starts: list[str] = []

    @bus.task("sc:call", rate="2/minute")
    async def call(ctx: TaskContext) -> None:
        starts.append(ctx.task_id)
        if len(starts) == 2:
            two_started.set()
        await release.wait()

    async with bus:
        recorder = EventRecorder(bus)
        handles = [await bus.submit("sc:call") for _ in range(3)]
        with anyio.fail_after(WAIT):
            await two_started.wait()
        [late] = [handle for handle in handles if handle.id not in starts]
        waiting = await until_waiting(bus, late.id)
        other = await bus.submit("sc:build", {"n": 2})  # another type is not held up
        assert await bus.result(other.id, timeout=WAIT) == Report(rows=4)
        release.set()
        for handle in handles:
            if handle is not late:
                await bus.result(handle.id, timeout=WAIT)
        assert await bus.cancel(late.id, reason="the test is over")
        await bus.flush_events()
        cancelled = await bus.get(late.id)
    assert (waiting.state, waiting.attempts) == (TaskState.QUEUED, 0)
    assert waiting.waiting_for == "rate limit 2/minute"
    assert waiting.not_before is not None
    assert len(starts) == 2
    assert recorder.of(TaskStarted, task_id=late.id) == []  # handed back unstarted
    assert (cancelled.state, cancelled.attempts) == (TaskState.CANCELLED, 0)


async def test_a_rate_per_owner_holds_one_owner_back_and_not_another(new_bus: MakeBus) -> None:
    bus = new_bus()

    @bus.task("sc:tenant", rate="1/minute", rate_key="owner")
    async def tenant(ctx: TaskContext) -> str:
        return ctx.task_id

    async with bus:
        alice = await bus.submit("sc:tenant", owner="alice")
        bob = await bus.submit("sc:tenant", owner="bob")
        again = await bus.submit("sc:tenant", owner="alice")
        await bus.result(alice.id, timeout=WAIT)
        await bus.result(bob.id, timeout=WAIT)
        waiting = await until_waiting(bus, again.id)
        assert await bus.cancel(again.id, reason="the test is over")
    assert (waiting.state, waiting.attempts) == (TaskState.QUEUED, 0)
    assert waiting.waiting_for == "rate limit 1/minute (key 'alice')"


# -- dependencies -----------------------------------------------------------------------


async def test_a_chain_runs_in_order_and_each_step_reads_its_parents(new_bus: MakeBus) -> None:
    bus = new_bus()
    seen: dict[int, list[Any]] = {}

    @bus.task("sc:step")
    async def step(ctx: TaskContext, params: Params) -> Report:
        seen[params.n] = [(p.state, p.result) for p in ctx.parents]
        return Report(rows=params.n)

    async with bus:
        first, second, third = await bus.chain(
            step.step(Params(n=1)), step.step(Params(n=2)), step.step(Params(n=3))
        )
        report = await third.result(timeout=WAIT)
        snapshots = [await bus.get(h.id) for h in (first, second, third)]
    assert report == Report(rows=3)
    assert seen == {
        1: [],
        2: [(TaskState.COMPLETED, Report(rows=1))],
        3: [(TaskState.COMPLETED, Report(rows=2))],
    }
    starts = [s.started_at for s in snapshots]
    ends = [s.finished_at for s in snapshots]
    assert all(start is not None for start in starts) and all(end is not None for end in ends)
    assert ends[0] <= starts[1] and ends[1] <= starts[2]  # type: ignore[operator]
    assert snapshots[2].metadata["after"] == [second.id]


async def test_a_waiting_child_holds_no_worker_and_says_why(new_bus: MakeBus) -> None:
    bus = new_bus(workers=2)
    gate = Gate(bus)
    build = register_build(bus)
    async with bus:
        parent = await bus.submit("sc:hold", {"n": 0})
        await gate.until_running()
        children = [await build.submit(Params(n=i), after=[parent]) for i in range(5)]
        waiting = await bus.get(children[0].id)
        free = await bus.submit("sc:build", {"n": 7})
        assert await free.result(timeout=WAIT) == Report(rows=14), "the other worker is free"
        still = [(await bus.get(h.id)).state for h in children]
        gate.open.set()
        results = [await h.result(timeout=WAIT) for h in children]
        done = await bus.get(children[0].id)
    assert (waiting.state, waiting.waiting_for, waiting.not_before) == (
        TaskState.QUEUED,
        "parents",
        None,
    )
    assert still == [TaskState.QUEUED] * 5
    assert results == [Report(rows=2 * i) for i in range(5)]
    assert done.waiting_for is None


async def test_fan_in_waits_for_every_parent_in_the_order_given(new_bus: MakeBus) -> None:
    bus = new_bus(workers=3)
    build = register_build(bus)

    @bus.task("sc:sum")
    async def total(ctx: TaskContext) -> int:
        return sum(p.result.rows for p in ctx.parents)

    async with bus:
        parents = [await build.submit(Params(n=n)) for n in (1, 2, 3)]
        joined = await total.submit(after=[parents[2], parents[0].id, parents[1]])
        result = await joined.result(timeout=WAIT)
        snapshot = await bus.get(joined.id)
    assert result == 12
    assert snapshot.metadata["after"] == [parents[2].id, parents[0].id, parents[1].id]


@pytest.mark.parametrize("policy", ["cancel", "fail", "run"])
async def test_a_failed_parent_applies_the_childs_policy(new_bus: MakeBus, policy: Any) -> None:
    bus = new_bus()
    ran: list[list[TaskState]] = []

    @bus.task("sc:broken", retry=RetryPolicy.never())
    async def broken(ctx: TaskContext) -> None:
        raise FatalError("no rows")

    @bus.task("sc:after")
    async def after(ctx: TaskContext) -> str:
        ran.append([p.state for p in ctx.parents])
        return "ran"

    async with bus:
        recorder = EventRecorder(bus)
        parent = await bus.submit("sc:broken")
        child = await after.submit(after=[parent], on_parent_failure=policy)
        final = await child.wait(timeout=WAIT)
        if policy == "cancel":
            with pytest.raises(TaskCancelledError):
                await child.result(timeout=WAIT)
        await bus.flush_events()
    names = [e.name for e in recorder.events if getattr(e, "task_id", None) == child.id]
    if policy == "run":
        assert (final.state, final.result, ran) == (
            TaskState.COMPLETED,
            "ran",
            [[TaskState.FAILED]],
        )
        return
    assert ran == [], "the child never ran"
    assert "task-started" not in names
    named = f"parent task {parent.id} (sc:broken) failed"
    if policy == "cancel":
        assert (final.state, final.cancel_reason) == (TaskState.CANCELLED, named)
        assert names[-1] == "task-cancelled"
    else:
        assert final.state is TaskState.FAILED and final.error is not None
        assert final.error.message == named
        assert names[-1] == "task-failed"


async def test_a_child_failed_for_its_parent_is_retried_on_its_own(new_bus: MakeBus) -> None:
    bus = new_bus()
    ran: list[int] = []

    @bus.task("sc:broken", retry=RetryPolicy.never())
    async def broken(ctx: TaskContext) -> None:
        raise FatalError("no rows")

    @bus.task("sc:after")
    async def after(ctx: TaskContext) -> str:
        ran.append(len(ctx.parents))
        return "ran"

    async with bus:
        parent = await bus.submit("sc:broken")
        child = await after.submit(after=[parent], on_parent_failure="fail", metadata={"a": 1})
        assert (await child.wait(timeout=WAIT)).state is TaskState.FAILED
        rerun = await bus.retry(child.id)
        done = await rerun.wait(timeout=WAIT)
    assert (done.state, done.result, ran) == (TaskState.COMPLETED, "ran", [0])
    assert done.metadata == {"a": 1, "retry_of": child.id}


async def test_cancelling_a_parent_cancels_the_chain_after_it(new_bus: MakeBus) -> None:
    bus = new_bus()
    gate = Gate(bus)
    build = register_build(bus)
    async with bus:
        blocker = await bus.submit("sc:hold", {"n": 0})
        await gate.until_running()
        parent, child, grandchild = await bus.chain(
            build.step(Params(n=1)),
            build.step(Params(n=2)),
            build.step(Params(n=3)),
            after=[blocker],
        )
        assert await bus.cancel(parent.id, reason="changed my mind")
        states = [(await h.wait(timeout=WAIT)) for h in (parent, child, grandchild)]
        gate.open.set()
        assert await bus.wait(blocker.id, timeout=WAIT)
    assert [s.state for s in states] == [TaskState.CANCELLED] * 3
    assert states[1].cancel_reason == f"parent task {parent.id} (sc:build) cancelled"
    assert states[2].cancel_reason == f"parent task {child.id} (sc:build) cancelled"


async def test_a_waiting_child_cancelled_never_runs(new_bus: MakeBus) -> None:
    bus = new_bus()
    gate = Gate(bus)
    async with bus:
        parent = await bus.submit("sc:hold", {"n": 0})
        await gate.until_running()
        child = await bus.submit("sc:hold", {"n": 5}, after=[parent])
        assert await bus.cancel(child.id, reason="not needed")
        gate.open.set()
        assert await parent.result(timeout=WAIT) == 0
        final = await child.wait(timeout=WAIT)
        later = await bus.submit("sc:hold", {"n": 6}, after=[parent])
        assert await later.result(timeout=WAIT) == 6, "parents already final: runs at once"
    assert (final.state, final.cancel_reason) == (TaskState.CANCELLED, "not needed")
    assert child.id not in gate.ran


async def test_after_refuses_unknown_and_other_owners_parents_storing_nothing(
    new_bus: MakeBus,
) -> None:
    bus = new_bus()
    build = register_build(bus)
    async with bus:
        theirs = await build.submit(Params(n=1), owner="bob")
        await theirs.result(timeout=WAIT)
        before = len(await bus.list())
        for after in (["no-such-task"], [theirs.id]):
            with pytest.raises(InvalidSubmission, match="unknown parent task"):
                await build.submit(Params(n=2), owner="alice", after=after)
        with pytest.raises(InvalidSubmission, match="unknown parent task"):
            await build.submit(Params(n=2), after=[theirs])  # no owner is not bob
        with pytest.raises(InvalidSubmission, match="on_parent_failure"):
            await build.submit(Params(n=2), after=[theirs], on_parent_failure="ignore")
        with pytest.raises(InvalidSubmission, match="at most 1000"):
            await build.submit(Params(n=2), after=[f"t{i}" for i in range(1001)])
        with pytest.raises(InvalidSubmission, match="delay"):
            await build.submit(Params(n=2), owner="bob", after=[theirs], delay=1.0)
        with pytest.raises(InvalidSubmission, match="not one string"):
            await build.submit(Params(n=2), after=theirs.id)
        with pytest.raises(InvalidTaskInput):
            await bus.chain(build.step(Params(n=1)), ("sc:build", {"n": "x"}))
        after_refusals = len(await bus.list())
        mine = await build.submit(Params(n=3), owner="bob", after=[theirs])
        assert await mine.result(timeout=WAIT) == Report(rows=6)
    assert after_refusals == before


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_a_child_submitted_by_one_bus_runs_in_another_after_its_parent(
    kind: str, tmp_path: Path, anyio_backend: str
) -> None:
    """Dependencies are in the store: a client with no workers submits the chain,
    and a bus sharing the store (another process, as far as the store can tell)
    runs parent and child."""
    seen: list[list[Any]] = []

    def register(bus: TaskBus) -> None:
        @bus.task("sc:link")
        async def link(ctx: TaskContext, params: Params) -> int:
            seen.append([p.result for p in ctx.parents])
            return params.n

    submitter = TaskBus(store=STORES[kind](tmp_path), workers=0)
    worker = TaskBus(store=STORES[kind](tmp_path), workers=2, shutdown_grace=1.0)
    register(submitter)
    register(worker)
    async with worker, submitter:
        handles = await submitter.chain(*[("sc:link", {"n": n}) for n in range(4)])
        assert await handles[-1].result(timeout=WAIT) == 3
    assert seen == [[], [0], [1], [2]]


# -- durable stores: restarts ---------------------------------------------------------


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'durable.db'}"


async def test_a_task_left_queued_by_a_closed_bus_runs_on_the_next_start(
    tmp_path: Path, anyio_backend: str
) -> None:
    ran: list[str] = []
    client = TaskBus(store=sqlite_url(tmp_path), workers=0)  # stores, runs nothing
    register_build(client)
    async with client:
        handle = await client.submit("sc:build", {"n": 4})
        assert (await client.get(handle.id)).state is TaskState.QUEUED

    bus = TaskBus(store=sqlite_url(tmp_path), workers=2, shutdown_grace=1.0)

    @bus.task("sc:build")
    async def build(ctx: TaskContext, params: Params) -> Report:
        ran.append(ctx.task_id)
        return Report(rows=params.n * 2)

    async with bus:
        assert await bus.result(handle.id, timeout=WAIT) == Report(rows=8)
        snap = await bus.get(handle.id)
    assert ran == [handle.id]
    assert (snap.state, snap.attempts) == (TaskState.COMPLETED, 1)


async def test_a_graceful_stop_hands_a_running_task_back_and_it_completes_after_restart(
    tmp_path: Path, anyio_backend: str
) -> None:
    started = anyio.Event()
    first = TaskBus(store=sqlite_url(tmp_path), workers=1, shutdown_grace=0.1)

    @first.task("sc:long", retry=RetryPolicy.never())
    async def stuck(ctx: TaskContext, params: Params) -> int:
        started.set()
        await anyio.sleep_forever()
        return 0

    async with first:
        handle = await first.submit("sc:long", {"n": 6})
        with anyio.fail_after(WAIT):
            await started.wait()
    report = first.shutdown_report
    assert report is not None
    assert (report.handed_back, report.cancelled) == ([handle.id], [])

    ran: list[int] = []
    second = TaskBus(store=sqlite_url(tmp_path), workers=1, shutdown_grace=1.0)

    @second.task("sc:long", retry=RetryPolicy.never())
    async def quick(ctx: TaskContext, params: Params) -> int:
        ran.append(ctx.attempt)
        return params.n * 2

    async with second:
        assert await second.result(handle.id, timeout=WAIT) == 12
        snap = await second.get(handle.id)
    assert ran == [1], "the attempt the stop interrupted is not counted"
    assert (snap.state, snap.attempts) == (TaskState.COMPLETED, 1)


@pytest.mark.parametrize("kind", ["sqlite", "fake"])
async def test_a_short_claim_is_not_followed_by_an_empty_one(
    kind: str, tmp_path: Path, anyio_backend: str
) -> None:
    """A claim that gets fewer tasks than it asked for found the queue empty: the
    bus waits for a new task (or a free worker) instead of claiming again at once,
    which would cost a store round trip (a commit on SQLite) per task."""
    store = STORES[kind](tmp_path)
    if isinstance(store, str):
        from taskbus.stores.sqlite import SqliteStore

        store = SqliteStore.from_url(store)
    assert isinstance(store, TaskStore)
    claims: list[int] = []
    acquire = store.acquire

    async def counted(*args: Any, **kwargs: Any) -> Any:
        claimed = await acquire(*args, **kwargs)
        claims.append(len(claimed))
        return claimed

    store.acquire = counted  # type: ignore[method-assign]
    if isinstance(store, ClaimsOnAdd):  # claims made in the commit of a submit count too
        claim_on_add = store.claim_on_add

        def standing(*args: Any, deliver: Any, **kwargs: Any) -> None:
            def counted_delivery(records: list[Any] | None, added: frozenset[str]) -> bool:
                claims.append(len(records or ()))
                return bool(deliver(records, added))

            claim_on_add(*args, deliver=counted_delivery, **kwargs)

        store.claim_on_add = standing  # type: ignore[method-assign]
    bus = TaskBus(store=store, workers=4, shutdown_grace=1.0)
    register_build(bus)
    tasks = 20
    async with bus:
        for n in range(tasks):
            handle = await bus.submit("sc:build", {"n": n})
            with anyio.fail_after(WAIT):
                await handle.result()
    assert sum(claims) == tasks
    # One claim per task (before the fix, 8 to 14 empty ones for 20 tasks), and
    # at most a few empty ones (a wake-up for a task another claim already took).
    assert claims.count(0) <= 3, claims


async def test_a_failed_read_of_the_next_due_time_is_tried_again(
    tmp_path: Path, anyio_backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The due timer is armed off the claim loop's path; a store error there is
    logged, and the read is tried again, so a delayed task still runs on time."""
    from taskbus import StoreError

    # No idle re-check within the test: only the retried read can arm the timer.
    monkeypatch.setattr(taskbus._leasing, "_IDLE_CHECK", 3600.0)
    store = ValueStore()
    next_due = store.next_due
    read_done = anyio.Event()
    failures: list[str] = []
    fail_next = False

    async def flaky() -> float | None:
        nonlocal fail_next
        if fail_next:
            fail_next = False
            failures.append("failed")
            raise StoreError("the store is away for a moment")
        value = await next_due()
        read_done.set()
        return value

    store.next_due = flaky  # type: ignore[method-assign]
    bus = TaskBus(store=store, workers=2, shutdown_grace=1.0)
    register_build(bus)
    async with bus:
        with anyio.fail_after(WAIT):
            await read_done.wait()  # the read at start is over
        fail_next = True  # the read the delayed task causes fails
        handle = await bus.submit("sc:build", {"n": 3}, delay=0.3)
        with anyio.fail_after(WAIT):
            assert await handle.result() == Report(rows=6)
    assert failures == ["failed"]


async def test_each_transition_logs_one_line_naming_the_task(
    new_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    bus = new_bus()
    register_build(bus)
    caplog.set_level(logging.DEBUG, logger="taskbus")
    async with bus:
        handle = await bus.submit("sc:build", {"n": 2})
        await handle.result(timeout=WAIT)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if handle.id in r.getMessage()]
    kinds = [(level, message.split()[0]) for level, message in lines]
    assert kinds == [("DEBUG", "queued"), ("DEBUG", "started"), ("INFO", "completed")], lines


async def test_a_running_task_names_its_worker_on_a_shared_store(new_bus: MakeBus) -> None:
    bus = new_bus()
    gate = Gate(bus)
    started: list[Event] = []
    bus.on("task-started", started.append)
    async with bus:
        handle = await bus.submit("sc:hold", {"n": 0})
        await gate.until_running()
        running = await bus.get(handle.id)
        gate.open.set()
        done = await handle.wait(timeout=WAIT)
    expected = bus.worker_id if bus.shares_store else None
    assert running.worker == expected
    assert [getattr(event, "worker", "?") for event in started] == [expected]
    assert done.worker is None  # it no longer runs


# -- schedules ------------------------------------------------------------------------


async def until(condition: Callable[[], Any], *, timeout: float = WAIT) -> None:
    """Wait, bounded, until the async `condition` holds (it reads the store)."""
    with anyio.fail_after(timeout):
        # The store is the truth and tells nobody: read it again (bounded).
        while not await condition():  # noqa: ASYNC110
            await anyio.sleep(0.005)


async def fired_for(bus: TaskBus, schedule_id: str) -> list[str]:
    """The intended fire times of the tasks a schedule fired, in order."""
    tasks = await bus.list(limit=1000)
    return sorted(
        t.metadata["scheduled_for"] for t in tasks if t.metadata.get("schedule_id") == schedule_id
    )


async def test_a_schedule_fires_a_task_whose_metadata_names_it(new_bus: MakeBus) -> None:
    clock = FakeClock(start=time.time())
    bus = new_bus(clock=clock)
    register_build(bus)
    async with bus:
        recorder = EventRecorder(bus)
        schedule = await bus.schedule("sc:build", every=timedelta(seconds=60), input={"n": 4})
        assert schedule.id == "sc:build"
        assert schedule.next_fire == pytest.approx(clock.now() + 60)
        due = schedule.next_fire_at
        assert due is not None
        clock.advance(60)
        queued = await recorder.wait_for(TaskQueued, timeout=WAIT)
        done = await recorder.wait_for(TaskCompleted, task_id=queued.task_id, timeout=WAIT)
        stored = await bus.get_schedule("sc:build")
    assert queued.metadata == {"schedule_id": "sc:build", "scheduled_for": due.isoformat()}
    assert Report.model_validate(done.result) == Report(rows=8)
    assert stored.last_task_id == queued.task_id
    assert stored.last_fire_at == due
    assert stored.next_fire_at == due + timedelta(seconds=60)


@pytest.mark.parametrize(
    ("misfire", "fired"),
    [("skip", []), ("once", [50]), ("all", [30, 40, 50])],
)
async def test_fires_missed_while_down_follow_the_misfire_policy(
    new_bus: MakeBus, misfire: Any, fired: list[int]
) -> None:
    clock = FakeClock(start=float(int(time.time())))
    start = clock.now()
    bus = new_bus(clock=clock)
    register_build(bus)
    async with bus:
        await bus.schedule(
            "sc:build",
            every=10,
            input={"n": 1},
            misfire=misfire,
            misfire_limit=3,
            misfire_grace=1,
        )
        clock.advance(55)  # due at +10, +20, +30, +40 and +50: all missed but the last is late

        async def caught_up() -> bool:
            return (await bus.get_schedule("sc:build")).next_fire == start + 60

        await until(caught_up)
        times = await fired_for(bus, "sc:build")
    expected = [datetime.fromtimestamp(start + n, UTC).isoformat() for n in fired]
    assert times == expected


async def test_a_paused_schedule_never_fires_and_resumes_from_now(new_bus: MakeBus) -> None:
    clock = FakeClock(start=float(int(time.time())))
    start = clock.now()
    bus = new_bus(clock=clock)
    register_build(bus)
    async with bus:
        await bus.schedule("sc:build", id="paused", every=10, input={"n": 1})
        await bus.schedule("sc:build", id="witness", every=10, input={"n": 2})
        paused = await bus.pause_schedule("paused")
        assert paused.paused
        clock.advance(10)

        async def witness_fired() -> bool:
            return len(await fired_for(bus, "witness")) == 1

        await until(witness_fired)  # the same pass looked at the paused one
        assert await fired_for(bus, "paused") == []
        clock.advance(25)
        resumed = await bus.resume_schedule("paused")
        assert not resumed.paused
        assert resumed.next_fire == start + 45, "from now, not catching up"
        await bus.remove_schedule("witness")
        assert [s.id for s in await bus.schedules()] == ["paused"]


async def test_registering_a_schedule_again_keeps_one_schedule_and_its_time(
    new_bus: MakeBus,
) -> None:
    clock = FakeClock(start=time.time())
    bus = new_bus(clock=clock)
    register_build(bus)
    async with bus:
        first = await bus.schedule("sc:build", every=60, input={"n": 1}, owner="alice")
        clock.advance(5)  # a second process starting a little later
        again = await bus.schedule("sc:build", every=60, input={"n": 2}, owner="alice")
        changed = await bus.schedule("sc:build", every=30, input={"n": 2}, owner="alice")
        listed = await bus.schedules(owner="alice")
    assert first.id == again.id == "alice/sc:build"
    assert again.next_fire_at == first.next_fire_at
    assert again.input == {"n": 2}
    assert changed.next_fire == pytest.approx(clock.now() + 30)
    assert [s.id for s in listed] == ["alice/sc:build"]


async def test_a_jittered_fire_waits_without_a_worker_then_runs(new_bus: MakeBus) -> None:
    clock = FakeClock(start=float(int(time.time())))
    start = clock.now()
    bus = new_bus(clock=clock)
    register_build(bus)
    async with bus:
        recorder = EventRecorder(bus)
        await bus.schedule("sc:build", every=10, input={"n": 1}, jitter=5)
        clock.advance(10)
        queued = await recorder.wait_for(TaskQueued, timeout=WAIT)
        task = await bus.get(queued.task_id)
        assert task.not_before is not None
        assert start + 10 <= task.not_before.timestamp() <= start + 15
        assert task.state is TaskState.QUEUED
        clock.advance(5)
        done = await recorder.wait_for(TaskCompleted, task_id=queued.task_id, timeout=WAIT)
    assert Report.model_validate(done.result) == Report(rows=2)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_three_buses_on_one_store_fire_each_time_exactly_once(
    kind: str, tmp_path: Path, anyio_backend: str
) -> None:
    """Three buses share a store (as three processes would) and one clock: every
    one of them wakes for every fire, and each fire still makes one task."""
    clock = FakeClock(start=float(int(time.time())))
    start = clock.now()
    buses = [
        TaskBus(store=STORES[kind](tmp_path), workers=1, clock=clock, shutdown_grace=1.0)
        for _ in range(3)
    ]
    for bus in buses:
        register_build(bus)
    async with buses[0], buses[1], buses[2]:
        for bus in buses:  # each process registers it at start-up
            await bus.schedule("sc:build", every=1, input={"n": 1}, misfire="all")
        for step in range(1, 11):
            clock.advance(1)

            async def moved_on(step: int = step) -> bool:
                schedule = await buses[0].get_schedule("sc:build")
                return schedule.next_fire == start + step + 1

            await until(moved_on)
        times = await fired_for(buses[0], "sc:build")
    expected = [datetime.fromtimestamp(start + n, UTC).isoformat() for n in range(1, 11)]
    assert times == expected


# -- input required -------------------------------------------------------------------


class Choice(BaseModel):
    branch: str
    depth: int = 1


class Asker:
    """A handler that asks which branch to build, and records each run."""

    def __init__(self, bus: TaskBus, *, timeout: float | None = None) -> None:
        self.runs: list[int] = []
        self.recorder = EventRecorder(bus, timeout=WAIT)

        @bus.task("sc:ask")
        async def ask(ctx: TaskContext, params: Params) -> str:
            self.runs.append(ctx.attempt)
            choice = await ctx.ask("Which branch?", model=Choice, timeout=timeout)
            return f"{choice.branch}:{choice.depth}:{params.n}"

    async def until_asked(self, task_id: str, count: int = 1) -> TaskInputRequired:
        return await self.recorder.wait_for(TaskInputRequired, task_id=task_id, count=count)


async def test_a_task_that_asks_waits_holding_no_worker_and_resumes_with_the_answer(
    new_bus: MakeBus,
) -> None:
    bus = new_bus(workers=1)
    asker = Asker(bus)
    register_build(bus)
    async with bus:
        handle = await bus.submit("sc:ask", {"n": 7})
        asked = await asker.until_asked(handle.id)
        waiting = await bus.get(handle.id)
        # The one worker is free: another task runs to the end meanwhile.
        other = await bus.submit("sc:build", {"n": 2})
        assert await other.result(timeout=WAIT) == Report(rows=4)
        assert (await bus.stats()).running == 0

        queued = await bus.respond(handle.id, {"branch": "main"})
        assert await handle.result(timeout=WAIT) == "main:1:7"
        done = await bus.get(handle.id)
        await bus.flush_events()
        names = asker.recorder.names(handle.id)
    assert (asked.key, asked.prompt, asked.deadline) == ("ask-1", "Which branch?", None)
    assert asked.json_schema == Choice.model_json_schema()
    assert waiting.state is TaskState.WAITING
    assert waiting.question is not None and waiting.question.prompt == "Which branch?"
    assert (waiting.waiting_for, waiting.worker) == ("Which branch?", None)
    assert queued.state in (TaskState.QUEUED, TaskState.RUNNING, TaskState.COMPLETED)
    assert asker.runs == [1, 1], "the handler ran again from the top, in the same attempt"
    assert (done.state, done.attempts, done.question) == (TaskState.COMPLETED, 1, None)
    assert names == [
        "task-queued",
        "task-started",
        "task-input-required",
        "task-input-received",
        "task-started",
        "task-completed",
    ]


async def test_a_child_of_a_task_waiting_for_input_waits_until_it_is_answered(
    new_bus: MakeBus,
) -> None:
    bus = new_bus()
    asker = Asker(bus)
    ran: list[Any] = []

    @bus.task("sc:after-ask")
    async def after_ask(ctx: TaskContext) -> None:
        ran.append([parent.result for parent in ctx.parents])

    async with bus:
        parent = await bus.submit("sc:ask", {"n": 3})
        await asker.until_asked(parent.id)
        # The parent holds no worker while it waits, but it is not finished.
        child = await after_ask.submit(after=[parent])
        waiting_child = await bus.get(child.id)
        assert (waiting_child.state, waiting_child.waiting_for) == (TaskState.QUEUED, "parents")
        assert ran == []
        await bus.respond(parent.id, {"branch": "dev"})
        await child.result(timeout=WAIT)
    assert ran == [["dev:1:3"]]


async def test_cancelling_a_task_waiting_for_input_applies_its_childs_policy(
    new_bus: MakeBus,
) -> None:
    bus = new_bus()
    asker = Asker(bus)

    @bus.task("sc:after-ask")
    async def after_ask(ctx: TaskContext) -> None:
        pass

    async with bus:
        parent = await bus.submit("sc:ask", {"n": 3})
        await asker.until_asked(parent.id)
        child = await after_ask.submit(after=[parent], on_parent_failure="cancel")
        await bus.cancel(parent.id, reason="no answer coming")
        final = await child.wait(timeout=WAIT)
    assert final.state is TaskState.CANCELLED
    assert final.cancel_reason is not None and parent.id in final.cancel_reason


async def test_an_answer_given_the_moment_the_question_is_asked_is_taken(
    new_bus: MakeBus,
) -> None:
    bus = new_bus()
    asking = anyio.Event()

    @bus.task("sc:quick-ask")
    async def quick_ask(ctx: TaskContext) -> str:
        asking.set()  # the test answers as soon as this is set
        return await ctx.ask("Now?")

    async with bus:
        handle = await bus.submit("sc:quick-ask")
        with anyio.fail_after(WAIT):
            await asking.wait()
        # The question may not be written to the store yet; the answer still finds it.
        await bus.respond(handle.id, "yes")
        assert await handle.result(timeout=WAIT) == "yes"


async def test_an_answer_that_does_not_fit_is_refused_and_nothing_is_stored(
    new_bus: MakeBus,
) -> None:
    bus = new_bus()
    asker = Asker(bus)
    register_build(bus)
    async with bus:
        handle = await bus.submit("sc:ask", {"n": 1})
        await asker.until_asked(handle.id)
        with pytest.raises(InvalidAnswer, match="depth"):
            await bus.respond(handle.id, {"branch": "main", "depth": "deep"})
        with pytest.raises(TaskNotFound):
            await bus.respond("no-such-task", {"branch": "main"})
        still = await bus.get(handle.id)
        assert still.state is TaskState.WAITING
        assert still.question is not None

        await bus.respond(handle.id, {"branch": "dev", "depth": 2})
        assert await handle.result(timeout=WAIT) == "dev:2:1"
        with pytest.raises(TaskNotWaiting, match="completed"):
            await bus.respond(handle.id, {"branch": "late"})
        plain = await bus.submit("sc:build", {"n": 1})
        await plain.result(timeout=WAIT)
        with pytest.raises(TaskNotWaiting):
            await bus.respond(plain.id, {"branch": "main"})
    assert asker.runs == [1, 1]


async def test_no_answer_in_time_fails_the_task_with_input_timeout(
    new_bus: MakeBus, fake_clock: FakeClock
) -> None:
    bus = new_bus(clock=fake_clock)
    asker = Asker(bus, timeout=600)
    async with bus:
        handle = await bus.submit("sc:ask", {"n": 1})
        asked = await asker.until_asked(handle.id)
        assert asked.deadline is not None
        assert asked.deadline.timestamp() == pytest.approx(fake_clock.now() + 600)
        fake_clock.advance(601)
        with pytest.raises(TaskFailedError, match="no answer") as caught:
            await handle.result(timeout=WAIT)
        with pytest.raises(TaskNotWaiting):
            await bus.respond(handle.id, {"branch": "main"})
    error = caught.value.snapshot.error
    assert error is not None
    assert (error.error_type, error.exception_type) == (
        ErrorType.FATAL,
        "taskbus.InputTimeout",
    )
    assert asker.runs == [1, 1]


async def test_a_task_waiting_for_input_is_cancelled_at_once(new_bus: MakeBus) -> None:
    bus = new_bus()
    asker = Asker(bus)
    async with bus:
        handle = await bus.submit("sc:ask", {"n": 1})
        await asker.until_asked(handle.id)
        with anyio.fail_after(WAIT):
            assert await bus.cancel(handle.id, reason="never mind")
        with pytest.raises(TaskCancelledError, match="never mind"):
            await handle.result(timeout=WAIT)
        with pytest.raises(TaskNotWaiting, match="cancelled"):
            await bus.respond(handle.id, {"branch": "main"})
        assert [s.id for s in await bus.list(state=TaskState.WAITING)] == []
    assert asker.runs == [1]


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_another_bus_on_the_store_answers_and_the_running_bus_resumes(
    kind: str, tmp_path: Path, anyio_backend: str
) -> None:
    store = STORES[kind]
    runner = TaskBus(store=store(tmp_path), workers=1, shutdown_grace=1.0)
    asker = Asker(runner)
    client = TaskBus(store=store(tmp_path), workers=0)  # a web server, say: runs nothing
    async with runner, client:
        handle = await runner.submit("sc:ask", {"n": 3})
        await asker.until_asked(handle.id)
        seen = await client.get(handle.id)
        assert seen.question is not None and seen.question.key == "ask-1"
        # The client has no model: it checks the answer against the stored JSON schema.
        with pytest.raises(InvalidAnswer, match="branch"):
            await client.respond(handle.id, {"depth": 2})
        await client.respond(handle.id, {"branch": "release", "depth": 3})
        assert await client.result(handle.id, timeout=WAIT) == "release:3:3"
    assert asker.runs == [1, 1]


async def test_a_task_waiting_when_its_bus_stops_is_answered_and_finished_after_restart(
    tmp_path: Path, anyio_backend: str
) -> None:
    first = TaskBus(store=sqlite_url(tmp_path), workers=1, shutdown_grace=1.0)
    asker = Asker(first, timeout=3600)
    async with first:
        handle = await first.submit("sc:ask", {"n": 5})
        await asker.until_asked(handle.id)
    assert first.shutdown_report is not None
    assert first.shutdown_report.handed_back == []

    client = TaskBus(store=sqlite_url(tmp_path), workers=0)
    async with client:  # answered while no bus runs it
        waiting = await client.get(handle.id)
        assert waiting.state is TaskState.WAITING
        assert waiting.question is not None and waiting.question.deadline is not None
        await client.respond(handle.id, {"branch": "main", "depth": 4})

    second = TaskBus(store=sqlite_url(tmp_path), workers=1, shutdown_grace=1.0)
    again = Asker(second, timeout=3600)
    async with second:
        assert await second.result(handle.id, timeout=WAIT) == "main:4:5"
        snap = await second.get(handle.id)
    assert (asker.runs, again.runs) == ([1], [1]), "the stored answer came back at once"
    assert (snap.state, snap.attempts) == (TaskState.COMPLETED, 1)


async def test_a_question_not_answered_before_a_restart_is_still_asked_after_it(
    tmp_path: Path, anyio_backend: str
) -> None:
    first = TaskBus(store=sqlite_url(tmp_path), workers=1, shutdown_grace=1.0)
    asker = Asker(first)
    async with first:
        handle = await first.submit("sc:ask", {"n": 2})
        await asker.until_asked(handle.id)

    second = TaskBus(store=sqlite_url(tmp_path), workers=1, shutdown_grace=1.0)
    again = Asker(second)
    async with second:
        waiting = await second.get(handle.id)
        assert waiting.question is not None and waiting.question.prompt == "Which branch?"
        await second.respond(handle.id, {"branch": "hotfix"})
        assert await second.result(handle.id, timeout=WAIT) == "hotfix:1:2"
    assert (asker.runs, again.runs) == ([1], [1])


async def test_a_deadline_that_passed_while_no_bus_ran_times_the_question_out_at_start(
    tmp_path: Path, anyio_backend: str
) -> None:
    before = FakeClock()
    first = TaskBus(store=sqlite_url(tmp_path), workers=1, shutdown_grace=1.0, clock=before)
    asker = Asker(first, timeout=600)
    async with first:
        handle = await first.submit("sc:ask", {"n": 1})
        await asker.until_asked(handle.id)

    after = FakeClock(start=before.now() + 3600)  # the next start, an hour later
    second = TaskBus(store=sqlite_url(tmp_path), workers=1, shutdown_grace=1.0, clock=after)
    again = Asker(second, timeout=600)
    async with second:
        with pytest.raises(TaskFailedError, match="no answer"):
            await second.result(handle.id, timeout=WAIT)
    assert (asker.runs, again.runs) == ([1], [1])


async def test_a_traced_attempt_is_a_child_of_the_span_that_submitted_it(
    new_bus: MakeBus,
) -> None:
    """The trace context goes through the store with the task (`taskbus.otel`); the
    metadata keys that carry it are taskbus's on every store."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from taskbus.otel import instrument

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    bus = new_bus()
    build = register_build(bus)
    instrument(bus, tracer_provider=provider)
    async with bus:
        with pytest.raises(InvalidSubmission, match="traceparent"):
            await build.submit(Params(n=1), metadata={"traceparent": "forged"})
        with provider.get_tracer("tests").start_as_current_span("request") as request:
            handle = await build.submit(Params(n=2))
        assert (await handle.result(timeout=WAIT)).rows == 4
        assert "traceparent" in (await bus.get(handle.id)).metadata
    spans = {span.name: span for span in exporter.get_finished_spans()}
    run, submit = spans["taskbus.run sc:build"], spans["taskbus.submit sc:build"]
    assert submit.parent is not None and submit.context is not None
    assert submit.parent.span_id == request.get_span_context().span_id
    assert run.parent is not None
    assert run.parent.span_id == submit.context.span_id
    assert run.attributes is not None and run.attributes["taskbus.task.attempt"] == 1
    provider.shutdown()
