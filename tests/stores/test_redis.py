"""What only the Redis store does: open by URL, refuse trio and bad arguments
clearly, share one server between buses, and recover from scripts the server
forgot. Everything else it promises is in the contract suites it joins."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import anyio
import pytest
import redis.asyncio
import redis.exceptions
from _redis import URL, prefix_for, redis_store
from anyio.abc import Process

from taskbus import StoreError, TaskBus, TaskContext, TaskState
from taskbus._asking import start_waiting
from taskbus._events import TaskQueued, build_trusted
from taskbus._input import InputAnswer, InputQuestion
from taskbus.abc import KeyInUse
from taskbus.stores import TaskQuery, _redis_claims, open_store
from taskbus.stores._codec import row_from_record
from taskbus.stores._redis_items import item
from taskbus.stores.redis import RedisStore

from .test_contract import make_record

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_a_redis_url_opens_a_redis_store() -> None:
    store = open_store("redis://127.0.0.1:6379/3")
    assert isinstance(store, RedisStore) and store.url == "redis://127.0.0.1:6379/3"
    assert TaskBus(store="redis://127.0.0.1:6379/3").shares_store


def test_its_repr_never_shows_a_password() -> None:
    store = RedisStore("redis://alice:s3cret@db.example:6379/0")
    assert "s3cret" not in repr(store) and "alice:***@db.example" in repr(store)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"url": "localhost:6379"}, "looks like 'redis://"),
        ({"prefix": ""}, "prefix must be non-empty"),
        ({"keep_events": 0}, "keep_events must be a positive integer"),
        ({"keep_events": True}, "keep_events must be a positive integer"),
        ({"lease": 0.5}, "lease must be a number of seconds from 1"),
        ({"lease": float("nan")}, "lease must be a number of seconds from 1"),
        ({"lease": "30"}, "lease must be a number of seconds from 1"),
    ],
)
def test_bad_arguments_are_refused_at_construction(kwargs: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"url": URL, **kwargs}
    with pytest.raises(ValueError, match=message):
        RedisStore(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_on_trio_open_says_the_store_needs_asyncio(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"runs on asyncio.*not on trio"):
        await redis_store(tmp_path).open()


async def test_a_server_that_does_not_answer_is_a_clear_error_at_open() -> None:
    store = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(StoreError, match=r"cannot open: ConnectionError"):
        await store.open()
    with pytest.raises(StoreError, match="is not open"):
        await store.get("anything")


async def test_a_store_reloads_scripts_the_server_forgot(tmp_path: Path) -> None:
    store = redis_store(tmp_path)
    await store.open()
    try:
        client = redis.asyncio.Redis.from_url(URL)
        await client.script_flush()  # as a restarted server without them would
        await client.aclose()
        record = make_record()
        await store.add(record)
        assert (await store.get(record.id)) is not None
    finally:
        await store.close()


async def test_two_buses_on_one_server_share_the_work_and_each_task_runs_once(
    tmp_path: Path,
) -> None:
    ran: list[str] = []

    def build(workers: int) -> TaskBus:
        bus = TaskBus(store=RedisStore(URL, prefix=prefix_for(tmp_path)), workers=workers)

        @bus.task("jobs:count")
        async def count(ctx: TaskContext) -> str:
            ran.append(ctx.task_id)
            await anyio.lowlevel.checkpoint()
            return ctx.task_id

        return bus

    client = build(0)
    heard: list[str] = []
    client.on("task-completed", lambda event: heard.append(event.task_id))
    async with build(2), build(2), client:
        handles = [await client.submit("jobs:count") for _ in range(40)]
        results = [await handle.result(timeout=10) for handle in handles]
        with anyio.fail_after(10):
            while len(heard) < len(handles):  # noqa: ASYNC110 - events come from the others
                await anyio.sleep(0.01)
        states = [(await client.get(handle.id)).state for handle in handles]
    assert results == [handle.id for handle in handles]
    assert states == [TaskState.COMPLETED] * 40
    assert sorted(ran) == sorted(heard) == sorted(handle.id for handle in handles)


async def test_stores_with_other_prefixes_never_see_each_others_tasks(tmp_path: Path) -> None:
    first = RedisStore(URL, prefix=prefix_for(tmp_path / "a"))
    second = RedisStore(URL, prefix=prefix_for(tmp_path / "b"))
    await first.open()
    await second.open()
    try:
        record = make_record()
        await first.add(record)
        assert await second.get(record.id) is None
        assert (await second.stats()).total == 0
        assert await second.acquire("w", 10, 5.0) == []
    finally:
        await first.close()
        await second.close()


class PrivateServer:
    """A redis-server of the test's own (AOF on every write), to kill and restart."""

    def __init__(self, place: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.place = place
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = await anyio.open_process(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.place),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.asyncio.Redis.from_url(self.url)
        try:
            with anyio.fail_after(10):
                while True:
                    try:
                        await client.ping()
                        return
                    except redis.exceptions.ConnectionError:
                        await anyio.sleep(0.02)
        finally:
            await client.aclose()

    async def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            with anyio.fail_after(10):
                await self.process.wait()
            self.process = None


async def test_a_redis_restart_mid_run_loses_no_acknowledged_task(tmp_path: Path) -> None:
    server = PrivateServer(tmp_path)
    await server.start()
    try:
        bus = TaskBus(store=RedisStore(server.url), workers=4)

        @bus.task("jobs:double")
        async def double(ctx: TaskContext, n: int) -> int:
            return 2 * n

        async with bus:
            before = [await bus.submit("jobs:double", n) for n in range(30)]
            assert [await h.result(timeout=10) for h in before] == [2 * n for n in range(30)]
            assert (await bus.stats()).store_outage is None
            await server.kill()
            during = await bus.stats()  # no exception: the last counts, and the outage
            answered: list[int] = []

            async def submit_meanwhile() -> None:
                handle = await bus.submit("jobs:double", 100)  # waits for the server
                answered.append(await handle.result(timeout=20))

            async with anyio.create_task_group() as tg:
                tg.start_soon(submit_meanwhile)
                await anyio.sleep(0.3)
                await server.start()  # the same files: every acknowledged task is there
            after = [await bus.submit("jobs:double", n) for n in range(30)]
            assert [await h.result(timeout=20) for h in after] == [2 * n for n in range(30)]
            assert answered == [200]
            stats = await bus.stats()
        assert stats.by_state == {TaskState.COMPLETED: 61}
        assert stats.store_outage is None, "reads, writes and the event log work again"
        assert during.by_state == {TaskState.COMPLETED: 30}
        assert during.store_outage is not None
        assert during.store_outage.error.startswith(("read: ConnectionError", "event log:"))
    finally:
        await server.kill()


async def test_a_row_write_sent_twice_is_written_and_logged_once(tmp_path: Path) -> None:
    """What makes resending a round trip whose reply was lost safe."""
    store = redis_store(tmp_path)
    await store.open()
    try:
        record = make_record()
        queued = build_trusted(
            TaskQueued,
            {
                "task_id": record.id,
                "task_type": record.type,
                "owner": None,
                "timestamp": record.created_at,
                "priority": record.priority,
                "estimated_duration": None,
                "metadata": {},
            },
        )
        written = item(record.id, state="", row=row_from_record(record), events=[queued])
        first = await store._write(written)
        again = await store._write(written)
        assert len(first[0]) == 1 and again == [[]]
        assert [event.name for event in await store.events_after(None)] == ["task-queued"]
        assert (await store.stats()).total == 1
    finally:
        await store.close()


async def test_an_add_whose_key_a_live_task_holds_is_refused_with_that_task(
    tmp_path: Path,
) -> None:
    store = redis_store(tmp_path)
    await store.open()
    try:
        first = make_record(key="k", owner="alice")
        await store.add(first)
        with pytest.raises(KeyInUse) as taken:
            await store.add(make_record(key="k", owner="alice"))
        assert taken.value.task_id == first.id
        await store.add(make_record(key="k", owner="bob"))  # another owner's scope
        (claimed,) = await store.acquire("w", 1, 30.0)
        claimed.move(TaskState.COMPLETED)
        claimed.finished_at = claimed.started_at
        assert await store.release("w", claimed)
        await store.add(make_record(key="k", owner="alice"))  # the holder ended
    finally:
        await store.close()


async def test_two_buses_submitting_one_key_at_once_make_one_task(tmp_path: Path) -> None:
    gate = anyio.Event()

    def build() -> TaskBus:
        bus = TaskBus(store=RedisStore(URL, prefix=prefix_for(tmp_path)), workers=1)

        @bus.task("jobs:clone")
        async def clone(ctx: TaskContext, repo: str) -> str:
            await gate.wait()
            return repo

        return bus

    first, second = build(), build()
    stores = [bus.store for bus in (first, second)]
    for store in stores:  # as if each looked before the other added: only the add decides
        store.find_by_key = _nothing  # type: ignore[method-assign]
    async with first, second:
        handles: list[str] = []

        async def submit(bus: TaskBus) -> None:
            handles.append((await bus.submit("jobs:clone", "r", key="clone-r")).id)

        for _ in range(5):  # each round, both at once
            async with anyio.create_task_group() as tg:
                tg.start_soon(submit, first)
                tg.start_soon(submit, second)
        gate.set()
        assert len(set(handles)) == 1
        assert await first.result(handles[0], timeout=10) == "r"
        assert sum((await first.stats()).by_state.values()) == 1


async def _nothing(*args: object, **kwargs: object) -> None:
    return None


async def test_next_due_after_an_acquire_sees_a_delayed_task_this_store_adds(
    tmp_path: Path,
) -> None:
    store = redis_store(tmp_path)
    await store.open()
    try:
        assert await store.acquire("w", 1, 30.0) == []
        assert await store.next_due() is None  # as that acquire saw it
        later = make_record()
        later.not_before = later.created_at + 60
        await store.add(later)
        assert await store.next_due() == later.not_before
    finally:
        await store.close()


async def test_writes_sent_in_one_round_trip_each_get_their_own_outcome(tmp_path: Path) -> None:
    """Consecutive writes go out as one script call; each caller still gets its own."""
    store = redis_store(tmp_path)
    await store.open()
    try:
        records = [make_record() for _ in range(3)]
        outcomes: list[object] = []
        store._write_soon(
            item(records[0].id, state="", row=row_from_record(records[0])),
            item(records[1].id, state="", row=row_from_record(records[1])),
            then=outcomes.append,
        )
        store._write_soon(
            item(records[0].id, state="running", row=row_from_record(records[0])),
            then=outcomes.append,
        )
        last = await store._write(item(records[2].id, state="", row=row_from_record(records[2])))
        assert outcomes == [[[], []], [0]] and last == [[]]
        assert (await store.stats()).total == 3
    finally:
        await store.close()


async def test_the_lease_a_store_asks_for_is_the_one_its_bus_claims_with(
    tmp_path: Path,
) -> None:
    bus = TaskBus(store=RedisStore(URL, prefix=prefix_for(tmp_path), lease=5), workers=1)
    gate = anyio.Event()
    started = anyio.Event()

    @bus.task("jobs:hold")
    async def hold(ctx: TaskContext) -> None:
        started.set()
        await gate.wait()

    async with bus:
        await bus.submit("jobs:hold")
        with anyio.fail_after(10):
            await started.wait()
        (running,) = await bus.store.list(TaskQuery(state=TaskState.RUNNING))
        gate.set()
    assert running.lease_until is not None and running.started_at is not None
    assert running.lease_until - running.started_at == pytest.approx(5, abs=0.5)


async def test_an_acquire_sent_again_answers_what_it_claimed_and_claims_no_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What makes resending an acquire whose reply was lost safe."""
    store = redis_store(tmp_path)
    await store.open()
    try:
        first, second = make_record(), make_record()
        await store.add(first)
        await store.add(second)
        monkeypatch.setattr(_redis_claims, "token", lambda: "one-call")
        (claimed,) = await store.acquire("w", 1, 30.0)
        (again,) = await store.acquire("w", 1, 30.0)  # the same call, sent again
        assert claimed.id == again.id == first.id and again.attempt == 1
        assert (await store.get(second.id)).state is TaskState.QUEUED  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_an_answer_is_written_only_while_the_question_is_the_one_read(
    tmp_path: Path,
) -> None:
    store = redis_store(tmp_path)
    await store.open()
    try:
        record = make_record()
        question = InputQuestion(key="ask-1", prompt="?", json_schema={}, asked_at=1.0)
        await store.add(record)
        record.move(TaskState.RUNNING)
        start_waiting(record, question)
        await store.update(record)
        asked = record.asks.model_dump_json() if record.asks is not None else ""
        later = question.model_copy(update={"asked_at": 2.0})
        row = row_from_record(record)
        stale = item(record.id, state="waiting", row=row, same=("asks", asked + " "))
        assert await store._write(stale) == [0]
        current = item(record.id, state="waiting", row=row, same=("asks", asked))
        assert await store._write(current) == [[]]
        # A new ask rewrote the question: an answer read before it is refused.
        start_again = record.asks.asking(later) if record.asks is not None else None
        record.asks = start_again
        await store.update(record)
        assert await store._write(current) == [0]
        answer = InputAnswer(value=1, answered_at=3.0)
        answered = await store.answer_input(record.id, "ask-1", answer, now=3.0)
        assert answered is not None and answered.state is TaskState.QUEUED
    finally:
        await store.close()
