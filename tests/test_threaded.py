"""`ThreadedTaskBus`: the blocking facade over a bus running on its own thread.

These tests are plain (sync) functions: the facade is for code without an
event loop. Every wait is bounded: `result(timeout=...)`, `Event.wait(timeout)`
and `Thread.join(timeout)`, each followed by an assertion.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, assert_type

import anyio
import pytest

from taskbus import (
    BusNotRunning,
    FatalError,
    InvalidSubmission,
    InvalidTaskDefinition,
    InvalidTaskInput,
    StoreError,
    TaskBus,
    TaskCancelledError,
    TaskCompleted,
    TaskContext,
    TaskDefinition,
    TaskFailedError,
    TaskNotFound,
    TaskNotRetryable,
    TaskProgress,
    TaskState,
    UnknownTaskType,
)
from taskbus._threaded import ThreadedHandle, ThreadedTaskBus

WAIT = 5.0  # seconds: an upper bound that only a bug reaches

Start = Callable[..., ThreadedTaskBus]


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def start(backend: str) -> Iterator[Start]:
    """Start threaded buses on `backend` (2 workers, short grace); closes them all."""
    started: list[ThreadedTaskBus] = []

    def make(dispatcher: Callable[..., object] | None = None, **kwargs: Any) -> ThreadedTaskBus:
        kwargs.setdefault("workers", 2)
        kwargs.setdefault("shutdown_grace", 0.5)
        tb = ThreadedTaskBus.start(TaskBus(**kwargs), dispatcher=dispatcher, backend=backend)
        started.append(tb)
        return tb

    yield make
    for tb in started:
        tb.close()


def loop_ident(tb: ThreadedTaskBus) -> int:
    """The bus's thread, as seen by an async handler (which runs on it)."""
    if "t:where" not in tb.bus.registry:

        @tb.task("t:where")
        async def where() -> int:
            return threading.get_ident()

    return int(tb.result(tb.submit("t:where").id, timeout=WAIT))


def register(tb: ThreadedTaskBus) -> None:
    @tb.task("t:double")
    def double(ctx: TaskContext, n: int) -> int:
        ctx.progress(50, "half way")
        return n * 2

    @tb.task("t:fail")
    def fail(n: int) -> int:
        raise FatalError(f"cannot take {n}")

    @tb.task("t:block")
    async def block() -> None:
        await anyio.sleep(30)


class ThreadDispatcher:
    """A dispatcher like a GUI's: queues each call for a thread of its own."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., object], tuple[Any, ...]] | None] = (
            queue.Queue()
        )
        self.called_on: set[int] = set()
        self.thread = threading.Thread(target=self._run, name="fake-gui")
        self.thread.start()

    def __call__(self, fn: Callable[..., object], *args: Any) -> None:
        self.called_on.add(threading.get_ident())
        self.calls.put((fn, args))

    def _run(self) -> None:
        while (call := self.calls.get()) is not None:
            fn, args = call
            fn(*args)

    def close(self) -> None:
        self.calls.put(None)
        self.thread.join(WAIT)
        assert not self.thread.is_alive()


@pytest.fixture
def gui() -> Iterator[ThreadDispatcher]:
    dispatcher = ThreadDispatcher()
    yield dispatcher
    dispatcher.close()


def test_submit_result_get_wait_list_stats(start: Start) -> None:
    tb = start()
    register(tb)
    handle = tb.submit("t:double", 21, owner="alice")
    assert handle.result(timeout=WAIT) == 42
    assert tb.result(handle.id, timeout=WAIT) == 42
    assert tb.get(handle.id).state is TaskState.COMPLETED
    assert handle.wait(timeout=WAIT).result == 42
    assert tb.wait(handle.id, timeout=WAIT).state is TaskState.COMPLETED
    assert [snap.id for snap in tb.list(owner="alice")] == [handle.id]
    assert tb.stats().by_state[TaskState.COMPLETED] == 1
    assert tb.bus.running
    assert handle.get().owner == "alice"


def test_a_service_added_through_the_facade_runs_on_the_loop_until_close(start: Start) -> None:
    tb = start()
    began: queue.Queue[int] = queue.Queue()
    ended = threading.Event()

    async def poller() -> None:
        began.put(threading.get_ident())
        try:
            await anyio.sleep_forever()
        finally:
            ended.set()

    tb.add_service(poller)
    loop_thread = began.get(timeout=WAIT)
    assert loop_thread != threading.get_ident()  # on the bus's thread, not the caller's
    assert not ended.is_set()
    tb.close()
    assert ended.is_set()


def test_dead_letters_are_listed_and_retried_through_the_facade(start: Start) -> None:
    tb = start()
    register(tb)
    failed = tb.submit("t:fail", 3, owner="alice")
    with pytest.raises(TaskFailedError):
        failed.result(timeout=WAIT)
    done = tb.submit("t:double", 1)
    assert done.result(timeout=WAIT) == 2
    assert [s.id for s in tb.list(dead_letter=True)] == [failed.id]
    again = tb.retry(failed.id, priority=9)
    assert_type(again, ThreadedHandle[Any])
    with pytest.raises(TaskFailedError, match="cannot take 3"):
        again.result(timeout=WAIT)
    rerun = again.get()
    assert (rerun.retry_of, rerun.owner, rerun.priority) == (failed.id, "alice", 9)
    with pytest.raises(TaskNotRetryable):
        tb.retry(done.id)
    with pytest.raises(TaskNotFound):
        tb.retry("no-such-id")


def test_task_returns_its_definition_and_registers_on_the_loop_thread(start: Start) -> None:
    tb = start()
    registered_on: list[int] = []
    tb.bus.registry.watch(lambda name, definition: registered_on.append(threading.get_ident()))

    @tb.task("t:square", priority=7)
    def square(n: int) -> int:
        return n * n

    assert_type(square, TaskDefinition[int, int])
    assert square.name == "t:square"
    assert square.priority == 7
    assert tb.bus.registry.find("t:square") is square
    handle = tb.submit(square, 7)  # by definition: a typed handle
    assert_type(handle, ThreadedHandle[int])
    assert handle.result(timeout=WAIT) == 49
    assert registered_on[0] == loop_ident(tb) != threading.get_ident()


def test_many_threads_at_once(start: Start) -> None:
    tb = start(workers=4)
    register(tb)

    def client(n: int) -> list[int]:
        handles = [tb.submit("t:double", n * 100 + i) for i in range(10)]
        assert tb.get(handles[0].id).type == "t:double"
        return [handle.result(timeout=WAIT) for handle in handles]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(client, range(8)))
    assert results == [[(n * 100 + i) * 2 for i in range(10)] for n in range(8)]
    assert tb.stats().by_state[TaskState.COMPLETED] == 80


def test_errors_reach_the_caller_unchanged(start: Start) -> None:
    tb = start()
    register(tb)
    with pytest.raises(UnknownTaskType) as unknown:
        tb.submit("t:nope", 1)
    assert "t:double" in str(unknown.value)
    with pytest.raises(InvalidTaskInput) as invalid:
        tb.submit("t:double", "not a number")
    assert invalid.value.errors()[0]["loc"] == ()
    with pytest.raises(InvalidSubmission):
        tb.submit("t:double", 1, priority=11)
    with pytest.raises(TaskNotFound):
        tb.get("no-such-id")
    with pytest.raises(InvalidTaskDefinition):
        tb.task("t:bad", priority=99)
    with pytest.raises(TaskFailedError) as failed:
        tb.submit("t:fail", 3).result(timeout=WAIT)
    assert "cannot take 3" in str(failed.value)

    blocked = tb.submit("t:block")
    with pytest.raises(TimeoutError) as timed_out:
        blocked.result(timeout=0.05)
    assert type(timed_out.value) is TimeoutError
    assert blocked.cancel(reason="enough") is True
    with pytest.raises(TaskCancelledError) as cancelled:
        blocked.result(timeout=WAIT)
    assert cancelled.value.reason == "enough"
    assert blocked.cancel() is False


def test_listeners_without_a_dispatcher_run_on_the_loop_thread(start: Start) -> None:
    tb = start()
    register(tb)
    seen: list[tuple[str, int]] = []
    tb.on("task-progress", lambda event: seen.append((event.name, threading.get_ident())))
    tb.on(TaskCompleted, lambda event: seen.append((event.name, threading.get_ident())))
    tb.submit("t:double", 1).result(timeout=WAIT)
    loop = loop_ident(tb)
    assert seen[:2] == [("task-progress", loop), ("task-completed", loop)]


def test_a_dispatcher_hands_sync_listeners_to_its_thread(
    start: Start, gui: ThreadDispatcher
) -> None:
    tb = start(dispatcher=gui)
    register(tb)
    ran_on: list[tuple[str, int]] = []
    done = threading.Event()
    async_done = threading.Event()

    def on_event(event: TaskProgress | TaskCompleted) -> None:
        ran_on.append((event.name, threading.get_ident()))
        if event.name == "task-completed":
            done.set()

    async def on_completed_async(event: TaskCompleted) -> None:
        ran_on.append(("async", threading.get_ident()))
        async_done.set()

    tb.on(TaskProgress, on_event)
    decorated = tb.on("task-completed")(on_event)
    assert decorated is on_event
    tb.on(TaskCompleted, on_completed_async)
    tb.submit("t:double", 1).result(timeout=WAIT)
    assert done.wait(WAIT)
    assert async_done.wait(WAIT)
    loop = loop_ident(tb)
    by_name = dict(ran_on)
    assert by_name["task-progress"] == by_name["task-completed"] == gui.thread.ident
    assert by_name["async"] == loop  # async listeners stay on the bus's loop
    assert gui.called_on == {loop}  # the dispatcher itself is called on the bus's thread


def test_a_dispatcher_that_raises_is_logged_and_the_bus_goes_on(
    start: Start, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(fn: Callable[..., object], *args: Any) -> None:
        raise RuntimeError("the GUI is gone")

    tb = start(dispatcher=broken)
    register(tb)
    tb.on(TaskCompleted, lambda event: None)
    with caplog.at_level(logging.ERROR, logger="taskbus"):
        assert tb.submit("t:double", 2).result(timeout=WAIT) == 4
        assert tb.submit("t:double", 3).result(timeout=WAIT) == 6
    assert tb.stats().listener_errors == 2
    assert "through dispatcher" in caplog.text
    assert "the GUI is gone" in caplog.text


def test_off_removes_a_listener_by_name_or_class(start: Start, gui: ThreadDispatcher) -> None:
    tb = start(dispatcher=gui)
    register(tb)
    calls: list[str] = []

    def listener(event: TaskCompleted) -> None:
        calls.append(event.task_id)

    tb.on(TaskCompleted, listener)
    tb.on("task-completed", listener)  # twice: called twice
    tb.off("task-completed", listener)
    tb.off(TaskCompleted, listener)
    with pytest.raises(KeyError):
        tb.off(TaskCompleted, listener)
    assert tb.bus.events.listener_count("task-completed") == 0
    tb.submit("t:double", 1).result(timeout=WAIT)
    gui_flushed = threading.Event()
    gui(gui_flushed.set)
    assert gui_flushed.wait(WAIT)
    assert calls == []


def test_subscribe_ends_after_the_tasks_final_event(start: Start) -> None:
    tb = start()
    gate = threading.Event()

    @tb.task("t:gated")
    def gated(ctx: TaskContext) -> str:
        assert gate.wait(WAIT)
        ctx.progress(100, "done")
        return "ok"

    handle = tb.submit(gated)
    with tb.subscribe(task_id=handle.id) as events:
        gate.set()
        names = [event.name for event in events]
    assert names[-2:] == ["task-progress", "task-completed"]
    with tb.subscribe(task_id=handle.id) as events:  # a late subscriber gets the final event
        assert [event.name for event in events] == ["task-completed"]
    with pytest.raises(RuntimeError, match=r"with tb\.subscribe"):
        next(tb.subscribe())


def test_a_subscription_ends_when_the_bus_closes(start: Start) -> None:
    tb = start()
    register(tb)
    received: list[str] = []
    subscribed = threading.Event()
    got_one = threading.Event()

    def read() -> None:
        with tb.subscribe(events=[TaskCompleted]) as events:
            subscribed.set()
            for event in events:
                received.append(event.name)
                got_one.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert subscribed.wait(WAIT)
    tb.submit("t:double", 1).result(timeout=WAIT)
    assert got_one.wait(WAIT)
    tb.close()  # the reader now blocks for a next event that never comes
    reader.join(WAIT)
    assert not reader.is_alive()
    assert received == ["task-completed"]


def test_close_is_idempotent_and_later_calls_raise_bus_not_running(start: Start) -> None:
    tb = start()
    register(tb)
    handle = tb.submit("t:double", 1)
    handle.result(timeout=WAIT)
    tb.close()
    tb.close()
    assert tb.closed
    assert not tb.bus.running
    calls: list[Callable[[], object]] = [
        lambda: tb.submit("t:double", 1),
        lambda: tb.get(handle.id),
        lambda: tb.result(handle.id),
        lambda: tb.wait(handle.id),
        lambda: tb.cancel(handle.id),
        lambda: tb.list(),
        lambda: tb.stats(),
        lambda: tb.on("task-queued", print),
        lambda: tb.task("t:late"),
        lambda: tb.subscribe(),
        handle.result,
    ]
    for call in calls:
        with pytest.raises(BusNotRunning):
            call()


def loop_threads() -> list[threading.Thread]:
    """Live event-loop threads of threaded buses (joined when one stops; the anyio
    worker threads of its sync handlers leave on their own, a moment later)."""
    return [thread for thread in threading.enumerate() if thread.name == "taskbus-loop"]


def test_the_with_block_stops_the_bus_and_its_thread(backend: str) -> None:
    before = loop_threads()
    with TaskBus.start_threaded(workers=1, shutdown_grace=0.5) as tb:
        assert isinstance(tb, ThreadedTaskBus)
        assert tb.bus.running
        assert len(loop_threads()) == len(before) + 1
    assert tb.closed
    assert not tb.bus.running
    assert tb.bus.shutdown_report is not None
    assert loop_threads() == before


def test_callers_still_waiting_get_bus_not_running_at_close(start: Start) -> None:
    tb = start()
    register(tb)
    later = tb.submit("t:double", 1, delay=60)  # stays queued: close leaves it
    outcome: list[BaseException] = []
    waiting = threading.Thread(target=lambda: _catch(outcome, later.result))
    waiting.start()
    # Whether the waiter is already blocked on the bus when it closes (it usually
    # is, after this) or calls just after, it gets the same error.
    waiting.join(0.05)
    tb.close()
    waiting.join(WAIT)
    assert not waiting.is_alive()
    assert [type(exc) for exc in outcome] == [BusNotRunning]


def _catch(into: list[BaseException], call: Callable[[], object]) -> None:
    try:
        call()
    except BaseException as exc:  # noqa: BLE001 - handed to the test to check
        into.append(exc)


def close_in_thread(tb: ThreadedTaskBus) -> None:
    """Close from another thread, and fail (rather than hang) if that blocks."""
    closer = threading.Thread(target=tb.close)
    closer.start()
    closer.join(WAIT)
    assert not closer.is_alive(), "close() hung"


def test_close_from_a_listener_on_the_loop_thread_does_not_deadlock(start: Start) -> None:
    tb = start()
    register(tb)
    returned = threading.Event()

    def close_now(event: TaskCompleted) -> None:
        tb.close()  # on the bus's own thread: starts the shutdown, returns at once
        returned.set()

    tb.on(TaskCompleted, close_now)
    tb.submit("t:double", 1)
    assert returned.wait(WAIT)
    assert tb.closed
    close_in_thread(tb)  # waits for the shutdown that the listener started
    assert not tb.bus.running


def test_close_from_a_dispatched_listener_does_not_deadlock(
    start: Start, gui: ThreadDispatcher
) -> None:
    tb = start(dispatcher=gui)
    register(tb)
    returned = threading.Event()

    def close_now(event: TaskCompleted) -> None:
        tb.close()  # on the GUI's thread: waits for the bus to stop
        returned.set()

    tb.on(TaskCompleted, close_now)
    tb.submit("t:double", 1)
    assert returned.wait(WAIT)
    assert not tb.bus.running


def test_close_from_a_task_handler_does_not_deadlock(start: Start) -> None:
    tb = start()
    completed: list[str] = []
    returned = threading.Event()
    tb.on(TaskCompleted, lambda event: completed.append(event.result))

    @tb.task("t:quit")
    def quit_bus() -> str:
        tb.close()  # on a worker thread of the bus: returns at once
        returned.set()
        return "closing"

    handle = tb.submit(quit_bus)
    assert returned.wait(WAIT)
    close_in_thread(tb)  # waits for the shutdown that the handler started
    assert completed == ["closing"]  # the handler finished within the grace
    assert tb.bus.shutdown_report is not None
    assert tb.bus.shutdown_report.cancelled == []
    with pytest.raises(BusNotRunning):
        handle.get()


def test_a_blocking_call_on_the_loop_thread_says_what_to_do(start: Start) -> None:
    tb = start()
    register(tb)
    errors: list[BaseException] = []
    tb.on(TaskCompleted, lambda event: _catch(errors, lambda: tb.submit("t:double", 1)))
    tb.submit("t:double", 1).result(timeout=WAIT)
    assert len(errors) == 1
    assert type(errors[0]) is RuntimeError
    assert "own thread" in str(errors[0])
    assert "dispatcher" in str(errors[0])


def test_a_bus_that_cannot_start_leaves_no_thread(tmp_path: Path, backend: str) -> None:
    before = loop_threads()
    with pytest.raises(StoreError):
        ThreadedTaskBus.start(
            TaskBus(store=f"sqlite:///{tmp_path}/missing/jobs.db"), backend=backend
        )
    assert loop_threads() == before


def test_a_dispatcher_must_be_callable() -> None:
    with pytest.raises(TypeError, match="dispatcher must be callable"):
        ThreadedTaskBus.start(TaskBus(), dispatcher="not callable")  # type: ignore[arg-type]


def test_handles_compare_by_id(start: Start) -> None:
    tb = start()
    register(tb)
    handle = tb.submit("t:double", 1)
    same = ThreadedHandle[int](tb, handle.id, "t:double")
    assert handle == same
    assert hash(handle) == hash(same)
    assert handle.id in repr(handle)
    assert "running" in repr(tb)
    handle.result(timeout=WAIT)
