"""The TaskBus API: submit, get, result, cancel, list, stats, and bad input."""

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from pydantic import BaseModel, ValidationError

from taskbus import (
    BusNotRunning,
    InvalidSubmission,
    InvalidTaskInput,
    StoreError,
    TaskBus,
    TaskCancelled,
    TaskCancelledError,
    TaskCompleted,
    TaskContext,
    TaskFailedError,
    TaskNotFound,
    TaskQueued,
    TaskState,
    UnknownTaskType,
    UserActionableError,
)
from taskbus._record import TaskRecord
from taskbus.stores import MemoryStore, StoreStats
from taskbus.testing import EventRecorder

pytestmark = pytest.mark.anyio
MakeBus = Callable[..., TaskBus]


class Params(BaseModel):
    year: int


class Report(BaseModel):
    rows: int


def register_build(bus: TaskBus) -> None:
    @bus.task("reports:build", estimated_duration=2.0)
    async def build(ctx: TaskContext, params: Params) -> Report:
        return Report(rows=params.year)


async def test_submit_returns_an_id_and_the_result_arrives(make_bus: MakeBus) -> None:
    bus = make_bus()
    register_build(bus)
    async with bus:
        recorder = EventRecorder(bus)
        handle = await bus.submit(
            "reports:build", {"year": 2025}, owner="alice", metadata={"source": "test"}, priority=8
        )
        assert len(handle.id) == 32 and int(handle.id, 16) >= 0
        assert await handle.result(timeout=5) == Report(rows=2025)
        snap = await bus.get(handle.id)
    assert snap.state is TaskState.COMPLETED
    assert (snap.owner, snap.priority, snap.metadata) == ("alice", 8, {"source": "test"})
    assert snap.attempts == 1
    assert snap.started_at is not None and snap.finished_at is not None
    assert snap.wait_time is not None and snap.run_time is not None
    assert snap.created_at <= snap.started_at <= snap.finished_at
    queued = recorder.of(TaskQueued, handle.id)[0]
    assert (queued.priority, queued.estimated_duration, queued.metadata) == (
        8,
        2.0,
        {"source": "test"},
    )
    assert recorder.names(handle.id) == ["task-queued", "task-started", "task-completed"]


async def test_result_awaited_after_the_task_finished(make_bus: MakeBus) -> None:
    """The fast path that two peers get wrong: the result exists before anyone waits."""
    bus = make_bus()

    @bus.task("fast:echo")
    async def echo(ctx: TaskContext, value: int) -> int:
        return value

    async with bus:
        recorder = EventRecorder(bus)
        handle = await echo.submit(41)
        await recorder.wait_for(TaskCompleted, task_id=handle.id)
        assert await handle.result(timeout=1) == 41
        assert await handle.result(timeout=1) == 41
        assert (await handle.wait(timeout=1)).result == 41


async def test_bad_input_raises_at_submit_and_stores_nothing(make_bus: MakeBus) -> None:
    bus = make_bus()
    register_build(bus)
    async with bus:
        with pytest.raises(UnknownTaskType, match="reports:nope"):
            await bus.submit("reports:nope", {})
        with pytest.raises(InvalidTaskInput) as info:
            await bus.submit("reports:build", {"year": "soon"})
        assert isinstance(info.value, ValidationError)
        assert "reports:build" in str(info.value) and "year" in str(info.value)
        assert info.value.errors()[0]["loc"] == ("year",)
        bad: Any
        for bad in (0, 11, 5.5, "high", True):
            with pytest.raises(InvalidSubmission, match="priority"):
                await bus.submit("reports:build", {"year": 1}, priority=bad)
        with pytest.raises(InvalidSubmission, match="delay"):
            await bus.submit("reports:build", {"year": 1}, delay=-1)
        with pytest.raises(InvalidSubmission, match="metadata"):
            await bus.submit("reports:build", {"year": 1}, metadata={"f": object()})
        with pytest.raises(InvalidSubmission, match="owner"):
            await bus.submit("reports:build", {"year": 1}, owner=7)  # type: ignore[arg-type]
        assert (await bus.stats()).by_state == {}
        assert await bus.list() == []


async def test_bad_ids_raise_task_not_found(make_bus: MakeBus) -> None:
    async with make_bus() as bus:
        for bad in ("nope", "", 123, None):
            with pytest.raises(TaskNotFound):
                await bus.get(bad)  # type: ignore[arg-type]
        with pytest.raises(TaskNotFound):
            await bus.cancel("nope")
        with pytest.raises(TaskNotFound):
            await bus.result("nope")


async def test_submit_outside_the_running_bus(make_bus: MakeBus) -> None:
    bus = make_bus()
    register_build(bus)
    with pytest.raises(BusNotRunning, match="async with"):
        await bus.submit("reports:build", {"year": 1})
    async with bus:
        pass
    with pytest.raises(BusNotRunning):
        await bus.submit("reports:build", {"year": 1})


async def test_failed_and_user_actionable_results(make_bus: MakeBus) -> None:
    bus = make_bus()

    @bus.task("auth:sync")
    async def sync(ctx: TaskContext) -> None:
        raise UserActionableError("token expired", suggested_action="log in again")

    async with bus:
        recorder = EventRecorder(bus)
        handle = await sync.submit()
        with pytest.raises(TaskFailedError) as info:
            await handle.result(timeout=5)
    assert info.value.suggested_action == "log in again"
    assert info.value.error_type.value == "user-actionable"
    snap = info.value.snapshot
    assert snap.state is TaskState.FAILED and snap.attempts == 1
    assert snap.error is not None and "UserActionableError" in snap.error.exception_type
    assert snap.error.traceback is not None and "token expired" in snap.error.traceback
    assert recorder.names(handle.id)[-1] == "task-failed"


async def test_cancel_a_queued_task_it_never_starts(make_bus: MakeBus) -> None:
    bus = make_bus(workers=1)
    release = anyio.Event()
    started: list[str] = []

    @bus.task("q:block")
    async def block(ctx: TaskContext) -> None:
        started.append(ctx.task_id)
        await release.wait()

    async with bus:
        recorder = EventRecorder(bus)
        first = await block.submit()
        second = await block.submit()
        assert await second.cancel("not needed") is True
        assert await second.cancel() is False, "cancelling twice is a no-op"
        release.set()
        await first.result(timeout=5)
        with pytest.raises(TaskCancelledError, match="not needed"):
            await second.result(timeout=5)
    assert started == [first.id]
    assert recorder.names(second.id) == ["task-queued", "task-cancelled"]
    assert recorder.of(TaskCancelled, second.id)[0].reason == "not needed"


async def test_delay_holds_a_task_back(make_bus: MakeBus, fake_clock) -> None:  # type: ignore[no-untyped-def]
    bus = make_bus(clock=fake_clock)

    @bus.task("d:later")
    async def later(ctx: TaskContext) -> float:
        return float(fake_clock.now())

    async with bus:
        submitted = fake_clock.now()
        handle = await later.submit(delay=30)
        snap = await handle.get()
        assert snap.state is TaskState.QUEUED and snap.not_before is not None
        fake_clock.advance(29)
        with pytest.raises(TimeoutError):
            await handle.result(timeout=0.05)
        fake_clock.advance(1)
        assert await handle.result(timeout=5) >= submitted + 30


async def test_idempotency_key_returns_the_active_task(make_bus: MakeBus) -> None:
    bus = make_bus(workers=1)
    release = anyio.Event()

    @bus.task("k:job")
    async def job(ctx: TaskContext) -> None:
        await release.wait()

    async with bus:
        one = await job.submit(key="nightly")
        two = await job.submit(key="nightly")
        assert one.id == two.id
        release.set()
        await one.result(timeout=5)
        three = await job.submit(key="nightly")
        assert three.id != one.id
        await three.result(timeout=5)


async def test_list_and_stats(make_bus: MakeBus) -> None:
    bus = make_bus()
    register_build(bus)

    @bus.task("other:fail", retry={"max_attempts": 1})
    async def fail(ctx: TaskContext) -> None:
        raise ValueError("no")

    async with bus:
        a = await bus.submit("reports:build", {"year": 1}, owner="alice")
        b = await bus.submit("reports:build", {"year": 2}, owner="bob")
        c = await fail.submit(owner="alice")
        for handle in (a, b, c):
            await handle.wait(timeout=5)
        assert [s.id for s in await bus.list(owner="alice")] == [a.id, c.id]
        assert [s.id for s in await bus.list(type_prefix="reports:")] == [a.id, b.id]
        assert [s.id for s in await bus.list(state="failed")] == [c.id]
        assert [s.id for s in await bus.list(limit=1, offset=1)] == [b.id]
        with pytest.raises(InvalidSubmission, match="state"):
            await bus.list(state="exploded")
        stats = await bus.stats()
    assert stats.by_state == {TaskState.COMPLETED: 2, TaskState.FAILED: 1}
    assert stats.by_type["other:fail"] == {TaskState.FAILED: 1}
    assert stats.running == 0 and stats.workers == 2


async def test_stats_count_the_queued_by_type_and_priority(make_bus: MakeBus) -> None:
    bus = make_bus()
    register_build(bus)

    @bus.task("mail:send", priority=3)
    async def send(ctx: TaskContext) -> None:
        return None

    async with bus:
        for year in (1, 2):
            await bus.submit("reports:build", {"year": year}, priority=8, delay=3600)
        await send.submit(delay=3600)  # at the type's priority
        await bus.submit("mail:send", priority=10, delay=3600)
        await (await send.submit()).wait(timeout=5)
        stats = await bus.stats()
    assert stats.queued_by_priority == {"reports:build": {8: 2}, "mail:send": {3: 1, 10: 1}}
    assert stats.by_state == {TaskState.QUEUED: 4, TaskState.COMPLETED: 1}


class FlakyStatsStore(MemoryStore):
    """A memory store whose counts cannot be read while `down` is set."""

    down = False

    async def stats(self) -> StoreStats:
        if self.down:
            raise StoreError("the counts are out of reach")
        return await super().stats()


async def test_stats_during_a_store_outage_answer_the_last_counts_and_the_outage(
    make_bus: MakeBus,
) -> None:
    store = FlakyStatsStore()
    bus = make_bus(store=store)
    register_build(bus)
    async with bus:
        await (await bus.submit("reports:build", {"year": 1})).wait(timeout=5)
        before = await bus.stats()
        store.down = True
        first = await bus.stats()
        await (await bus.submit("reports:build", {"year": 2})).wait(timeout=5)
        second = await bus.stats()
        store.down = False
        after = await bus.stats()
    assert before.store_outage is None
    assert first.by_state == second.by_state == {TaskState.COMPLETED: 1}, "the last read"
    assert first.store_outage is not None and second.store_outage is not None
    assert first.store_outage.error == "stats: the counts are out of reach"
    assert second.store_outage.since == first.store_outage.since, "one outage, not two"
    assert (after.by_state, after.store_outage) == ({TaskState.COMPLETED: 2}, None)


def test_an_outage_lasts_while_any_path_fails() -> None:
    from taskbus.stores._outage import OutageWatch

    watch = OutageWatch()
    assert watch.current is None
    watch.lost("write", ConnectionError("refused"))
    since = watch.current.since if watch.current else None
    watch.lost("read", TimeoutError("slow"))
    assert watch.current is not None
    assert (watch.current.since, watch.current.error) == (since, "read: TimeoutError: slow")
    watch.reached("read")
    assert watch.current is not None and watch.current.error == "write: ConnectionError: refused"
    watch.reached("write")
    assert watch.current is None


async def test_subscribe_to_one_task_ends_after_its_final_event(make_bus: MakeBus) -> None:
    bus = make_bus()
    register_build(bus)
    async with bus:
        handle = await bus.submit("reports:build", {"year": 3})
        async with bus.subscribe(task_id=handle.id) as events:
            with anyio.fail_after(5):
                names = [event.name async for event in events]
        assert names[-1] == "task-completed"
        async with bus.subscribe(task_id=handle.id) as events:
            with anyio.fail_after(5):
                replay = [event async for event in events]
        assert [e.name for e in replay] == ["task-completed"], "a finished task replays its end"
        assert replay[0].result == Report(rows=3)


async def test_a_task_ending_while_subscribe_reads_it_is_still_heard_to_end(
    make_bus: MakeBus,
) -> None:
    bus = make_bus(workers=1)
    gate = anyio.Event()

    @bus.task("reports:gated")
    async def gated(ctx: TaskContext) -> str:
        await gate.wait()
        return "done"

    async with bus:
        handle = await bus.submit("reports:gated")
        read = bus._replay._record

        async def read_then_finish(task_id: str) -> Any:
            # The task is read unfinished, then ends before the read returns: the
            # race a subscriber lost when it read before listening.
            record = await read(task_id)
            assert not record.state.is_final
            gate.set()
            await bus.wait(handle.id, timeout=5)
            return _unfinished_copy(record)

        bus._replay._record = read_then_finish
        async with bus.subscribe(task_id=handle.id) as events:
            with anyio.fail_after(5):
                names = [event.name async for event in events]
    assert names[-1] == "task-completed"


def _unfinished_copy(record: Any) -> Any:
    """The record as it was read, running (the memory store's is live: it ended since)."""
    copy = TaskRecord(record.id, record.type, None, record.priority, record.created_at)
    copy.state = TaskState.RUNNING
    return copy


async def test_a_crashing_listener_never_affects_the_task(make_bus: MakeBus) -> None:
    bus = make_bus()
    register_build(bus)

    def broken(event: object) -> None:
        raise RuntimeError("bad listener")

    bus.on("task-started", broken)
    bus.on("task-completed", broken)
    async with bus:
        handle = await bus.submit("reports:build", {"year": 4})
        assert await handle.result(timeout=5) == Report(rows=4)
        assert (await bus.stats()).listener_errors == 2


async def test_a_result_that_breaks_the_return_annotation_fails_the_task(
    make_bus: MakeBus,
) -> None:
    bus = make_bus()

    @bus.task("out:liar")
    async def liar(ctx: TaskContext) -> int:
        return "not an int"  # type: ignore[return-value]

    @bus.task("out:model")
    async def model(ctx: TaskContext) -> Report:
        return {"rows": "7"}  # type: ignore[return-value]

    async with bus:
        with pytest.raises(TaskFailedError, match="does not match its return annotation"):
            await (await liar.submit()).result(timeout=5)
        assert await (await model.submit()).result(timeout=5) == Report(rows=7)


async def test_the_cause_of_a_failure_is_in_its_message(make_bus: MakeBus) -> None:
    bus = make_bus()

    @bus.task("cause:wrap", retry={"max_attempts": 1})
    async def wrap(ctx: TaskContext) -> None:
        try:
            raise OSError("disk on fire")
        except OSError as exc:
            raise RuntimeError("could not write the report") from exc

    async with bus:
        snap = await (await wrap.submit()).wait(timeout=5)
    assert snap.error is not None
    assert snap.error.message == ("could not write the report (caused by OSError: disk on fire)")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, "workers"),
        ({"workers": "many"}, "workers"),
        ({"shutdown_grace": -1}, "shutdown_grace"),
        ({"progress_interval": -0.1}, "progress interval"),
        ({"aging": 0}, "aging"),
        ({"store": "postgres://localhost/0"}, "unsupported store"),
        ({"store": 42}, "store must be"),
    ],
    ids=["zero-workers", "text-workers", "grace", "interval", "aging", "postgres", "store-type"],
)
def test_bad_configuration_raises_at_construction(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        TaskBus(**kwargs)


async def test_a_bus_cannot_be_entered_twice(make_bus: MakeBus) -> None:
    bus = make_bus()
    async with bus:
        with pytest.raises(RuntimeError, match="already running"):
            await bus.__aenter__()


class _BrokenPurge(MemoryStore):
    async def purge(self, finished_before: float | None = None, keep: int | None = None) -> int:
        raise StoreError("disk on fire")


class _BrokenRecovery(MemoryStore):
    async def recover(self) -> list:  # type: ignore[type-arg]
        raise StoreError("cannot read the store")


async def test_a_failing_purge_is_logged_and_the_bus_goes_on(
    make_bus: MakeBus, caplog: pytest.LogCaptureFixture
) -> None:
    bus = make_bus(store=_BrokenPurge())
    register_build(bus)
    async with bus:
        assert await (await bus.submit("reports:build", {"year": 5})).result(timeout=5)
    assert "retention could not purge" in caplog.text


async def test_a_store_error_at_start_reaches_the_caller_unwrapped(make_bus: MakeBus) -> None:
    with pytest.raises(StoreError, match="cannot read the store"):
        async with make_bus(store=_BrokenRecovery()):
            pass


async def test_cancelling_a_delayed_task_lets_the_queue_forget_it(make_bus: MakeBus) -> None:
    bus = make_bus()
    register_build(bus)
    async with bus:
        handles = [await bus.submit("reports:build", {"year": n}, delay=3600) for n in range(3)]
        assert len(bus.queue) == 3
        for handle in handles:
            assert await bus.cancel(handle.id)
        assert len(bus.queue) == 0
        assert all(entry[2] is None for entry in bus.queue._delayed)


async def test_the_memory_store_keeps_a_bounded_number_of_finished_tasks(
    make_bus: MakeBus,
) -> None:
    store = MemoryStore(max_finished=1_000)
    bus = make_bus(store=store)

    @bus.task("t:noop")
    async def noop(ctx: TaskContext) -> None:
        return None

    async with bus:
        first = await bus.submit("t:noop")
        for _ in range(5):
            handles = [await bus.submit("t:noop") for _ in range(1_000)]
            for handle in handles:
                await handle.result(timeout=5)
        await (await bus.submit("t:noop")).result(timeout=5)  # trims as it arrives
        assert len(store) <= 1_001
        last = await bus.get(handles[-1].id)  # the newest finished are the ones kept
        with pytest.raises(TaskNotFound):
            await bus.get(first.id)
        assert await bus.store.purge(keep=10) >= 990  # retention still applies
        assert len(store) == 10
        await (await bus.submit("t:noop")).result(timeout=5)  # the log survived the purge
        assert len(store) == 11
    assert last.state is TaskState.COMPLETED
    with pytest.raises(ValueError, match="max_finished"):
        MemoryStore(max_finished=-1)
