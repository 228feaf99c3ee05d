import logging
from datetime import UTC, datetime

import anyio
import pytest

from taskbus import ALL_EVENTS, EventBus, TaskCompleted, TaskEvent, TaskProgress, TaskStarted

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def started(task: str = "a") -> TaskStarted:
    return TaskStarted(task_id=task, task_type="t", timestamp=NOW, attempt=1)


def completed(task: str = "a") -> TaskCompleted:
    return TaskCompleted(task_id=task, task_type="t", timestamp=NOW, result=1, duration=0)


def test_listeners_by_name_and_by_class() -> None:
    bus = EventBus()
    by_name: list[str] = []
    by_class: list[str] = []
    everything: list[str] = []
    bus.on("task-started", lambda e: by_name.append(e.name))
    bus.on(TaskStarted, lambda e: by_class.append(e.name))
    bus.on(ALL_EVENTS, lambda e: everything.append(e.name))
    bus.publish(started())
    bus.publish(completed())
    assert by_name == ["task-started"]
    assert by_class == ["task-started"]
    assert everything == ["task-started", "task-completed"]


def test_wants_tracks_listeners() -> None:
    bus = EventBus()
    assert not bus.wants("task-progress")

    def listener(event: TaskEvent) -> None: ...

    bus.on(TaskProgress, listener)
    assert bus.wants("task-progress") and not bus.wants("task-started")
    assert bus.listener_count(TaskProgress) == 1 and bus.listener_count() == 0
    bus.off(TaskProgress, listener)
    assert not bus.wants("task-progress")
    bus.on(ALL_EVENTS, listener)
    assert bus.wants("task-started")


def test_decorator_form() -> None:
    bus = EventBus()
    seen: list[str] = []

    @bus.on("task-completed")
    def on_done(event: TaskEvent) -> None:
        seen.append(event.task_id)

    bus.publish(completed("z"))
    assert seen == ["z"]


def test_a_raising_listener_is_logged_counted_and_isolated(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus()
    after: list[str] = []

    def broken(event: TaskEvent) -> None:
        raise RuntimeError("listener bug")

    bus.on("task-started", broken)
    bus.on("task-started", lambda e: after.append(e.task_id))
    with caplog.at_level(logging.ERROR, logger="taskbus.bus"):
        bus.publish(started("x"))
    assert after == ["x"]
    assert bus.listener_errors == 1
    assert "listener bug" in caplog.text


def test_unknown_names_and_bad_listeners_are_rejected() -> None:
    bus = EventBus()
    with pytest.raises(ValueError, match="unknown event name"):
        bus.on("task-exploded", lambda e: None)
    with pytest.raises(TypeError, match="callable"):
        bus.on("task-started", 42)  # type: ignore[call-overload]
    with pytest.raises(KeyError):
        bus.off("task-started", print)


@pytest.mark.anyio
async def test_async_listener_that_hangs_does_not_block_others() -> None:
    bus = EventBus(listener_buffer=5)
    quick: list[str] = []
    first_seen = anyio.Event()
    all_seen = anyio.Event()
    never = anyio.Event()

    async def hangs(event: TaskEvent) -> None:
        first_seen.set()
        await never.wait()

    async def ok(event: TaskEvent) -> None:
        quick.append(event.task_id)
        if len(quick) == 20:
            all_seen.set()

    bus.on(ALL_EVENTS, hangs)
    bus.on(ALL_EVENTS, ok)
    with anyio.fail_after(3):
        async with anyio.create_task_group() as tg:
            bus.attach(tg)
            for n in range(20):
                bus.publish(started(f"t{n}"))
            await first_seen.wait()
            await all_seen.wait()
            tg.cancel_scope.cancel()
    assert quick == [f"t{n}" for n in range(20)]


@pytest.mark.anyio
async def test_async_listener_errors_are_counted() -> None:
    bus = EventBus()
    done = anyio.Event()

    async def broken(event: TaskEvent) -> None:
        done.set()
        raise ValueError("async listener bug")

    bus.on("task-completed", broken)
    with anyio.fail_after(3):
        async with anyio.create_task_group() as tg:
            bus.attach(tg)
            bus.publish(completed())
            await done.wait()
            await bus.drain(timeout=1)
            tg.cancel_scope.cancel()
    assert bus.listener_errors == 1


@pytest.mark.anyio
async def test_subscribe_filters_and_unsubscribes() -> None:
    bus = EventBus()
    async with bus.subscribe(task_id="a", events=[TaskCompleted]) as stream:
        assert bus.wants("task-started")
        bus.publish(started("a"))
        bus.publish(completed("b"))
        bus.publish(completed("a"))
        with anyio.fail_after(2):
            got = [(e.name, e.task_id) async for e in stream]
    assert got == [("task-completed", "a")]
    assert not bus.wants("task-started")


@pytest.mark.anyio
async def test_an_async_listener_that_falls_far_behind_is_told_not_the_bus(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = EventBus(listener_buffer=2)
    seen: list[str] = []
    resumed = anyio.Event()

    async def slow(event: TaskEvent) -> None:
        seen.append(event.task_id)
        if event.task_id == "late":
            resumed.set()

    bus.on(ALL_EVENTS, slow)
    with anyio.fail_after(3), caplog.at_level(logging.ERROR, logger="taskbus.bus"):
        async with anyio.create_task_group() as tg:
            bus.attach(tg)
            for n in range(25):  # past the hard limit (10 x 2) before the listener runs
                bus.publish(started(f"t{n}"))
            while bus.listener_errors == 0:  # bounded by fail_after
                await anyio.lowlevel.checkpoint()
            bus.publish(started("late"))
            await resumed.wait()
            tg.cancel_scope.cancel()
    assert seen[-1] == "late", "delivery goes on after an overflow"
    assert bus.listener_errors == 1
    assert "fell more than 20 events behind" in caplog.text


def test_the_same_listener_twice_is_called_twice_until_removed_once() -> None:
    bus = EventBus()
    calls: list[str] = []

    def listener(event: TaskEvent) -> None:
        calls.append(event.task_id)

    def broken(event: TaskEvent) -> None:
        raise RuntimeError("again")

    bus.on("task-started", listener)
    bus.on("task-started", listener)
    bus.on("task-started", broken)
    bus.on("task-started", broken)
    bus.publish(started("a"))
    bus.off("task-started", listener)
    bus.publish(started("b"))
    assert calls == ["a", "a", "b"]
    assert bus.listener_errors == 4


class ListenerBug(BaseException):
    """A custom BaseException, as a listener might raise by mistake."""


@pytest.mark.anyio
@pytest.mark.parametrize("raised", [KeyboardInterrupt, ListenerBug], ids=lambda e: e.__name__)
async def test_a_listener_raising_a_base_exception_does_not_crash_the_bus(
    raised: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    from taskbus import TaskBus

    bus = TaskBus(workers=1, shutdown_grace=1.0)

    @bus.task("t:ok")
    async def ok() -> int:
        return 1

    def sync_listener(event: TaskEvent) -> None:
        raise raised("sync listener bug")

    async def async_listener(event: TaskEvent) -> None:
        raise raised("async listener bug")

    bus.on(TaskStarted, sync_listener)
    bus.on(TaskStarted, async_listener)
    with caplog.at_level(logging.ERROR, logger="taskbus.bus"):
        async with bus:
            first = await bus.submit("t:ok")
            assert await first.result(timeout=5) == 1
            second = await bus.submit("t:ok")
            assert await second.result(timeout=5) == 1
            with anyio.fail_after(5):
                while bus.events.listener_errors < 4:  # noqa: ASYNC110 - a counter, no event
                    await anyio.sleep(0.01)
    assert "sync listener bug" in caplog.text and "async listener bug" in caplog.text
