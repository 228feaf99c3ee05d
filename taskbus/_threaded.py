"""`ThreadedTaskBus`: a `TaskBus` on a thread of its own, for synchronous hosts.

A Qt or Tk application, or a plain script, has no event loop for the bus to
run in. `TaskBus.start_threaded()` starts one on a new thread (anyio's
`BlockingPortal`), enters the bus there with ``async with``, and returns this
facade: the bus's methods as plain blocking calls, safe from any thread. Every
call runs on the bus's thread through the portal and returns (or raises) what
the bus returned (or raised), unchanged.

Listeners added with `on` are called on the bus's thread, unless the facade
has a `dispatcher`: then each sync listener is called as
``dispatcher(listener, event)``, so a GUI can move it to its own thread (see
`taskbus.integrations.qt.QtDispatcher`). Async listeners always run on the
bus's loop.

`close()` stops intake, gives running tasks the bus's `shutdown_grace`, then
stops the loop; callers still blocked on the bus (say, in `result()` of a task
left queued) get `BusNotRunning`, and subscriptions stop iterating. Called from
the bus's own thread (a listener without a dispatcher, a task's handler),
`close()` cannot wait for the bus to stop without waiting for itself: it starts
the shutdown on a helper thread and returns at once.

(Longer than most modules: it is one facade, and most of its lines are the
bus's signatures and overloads repeated as blocking calls.)
"""

from __future__ import annotations

import atexit
import builtins
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import CancelledError
from contextlib import AbstractAsyncContextManager, ExitStack, suppress
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar, cast, overload

from anyio.from_thread import BlockingPortal, start_blocking_portal

from ._bus import _event_name
from ._context import current_context
from ._errors import BusNotRunning, TaskbusError
from ._events import Event
from ._registry import TaskDefinition
from ._snapshot import TaskSnapshot
from ._states import TaskState

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager
    from datetime import datetime, timedelta
    from types import TracebackType

    from ._bus import EventBus, Listener
    from ._chain import ChainStep
    from ._context import TaskContext
    from ._dependencies import ParentFailurePolicy
    from ._handle import TaskHandle
    from ._registry import TaskRegistry, _Decorator
    from ._reports import BusStats, ShutdownReport
    from ._schedule import MisfirePolicy, Schedule
    from ._subscription import EventBuffer

__all__ = [
    "AsyncTaskBus",
    "Dispatcher",
    "ThreadedHandle",
    "ThreadedSubscription",
    "ThreadedTaskBus",
]

logger = logging.getLogger("taskbus.threaded")

T = TypeVar("T")
InT = TypeVar("InT")
OutT = TypeVar("OutT")
ResultT_co = TypeVar("ResultT_co", covariant=True)

#: Called as ``dispatcher(listener, event)``; it must call ``listener(event)``
#: soon, on whatever thread it likes, and return without waiting for it.
Dispatcher = Callable[..., object]
_EventKey = str | type[Event]


class AsyncTaskBus(Protocol):
    """The bus a `ThreadedTaskBus` runs: a `TaskBus` (what the facade calls of it)."""

    registry: TaskRegistry
    events: EventBus
    shutdown_report: ShutdownReport | None

    @property
    def running(self) -> bool: ...
    async def __aenter__(self) -> Self: ...
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...
    def task(self, name: str, **options: Any) -> _Decorator: ...
    def add_service(self, service: Callable[[], Awaitable[None]]) -> None: ...
    def on(self, event: str | type[Event], listener: Listener | None = None) -> Any: ...
    def off(self, event: str | type[Event], listener: Listener) -> None: ...
    def subscribe(
        self,
        *,
        task_id: str | None = None,
        task_type: str | None = None,
        events: builtins.list[str | type[Event]] | None = None,
        buffer: int = 1000,
        after: str | None = None,
    ) -> AbstractAsyncContextManager[Any]: ...
    async def submit(
        self,
        task_type: str,
        input: Any = None,
        *,
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
        delay: float | None = None,
        key: str | None = None,
        run_at: datetime | None = None,
        after: Iterable[str | TaskHandle[Any]] | None = None,
        on_parent_failure: ParentFailurePolicy = "cancel",
    ) -> TaskHandle[Any]: ...
    async def chain(
        self,
        *steps: ChainStep[Any] | tuple[str, Any],
        after: Iterable[str | TaskHandle[Any]] | None = None,
        on_parent_failure: ParentFailurePolicy = "cancel",
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[TaskHandle[Any], ...]: ...
    async def get(self, task_id: str) -> TaskSnapshot: ...
    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskSnapshot: ...
    async def result(self, task_id: str, *, timeout: float | None = None) -> Any: ...
    async def cancel(self, task_id: str, *, reason: str | None = None) -> bool: ...
    async def retry(
        self,
        task_id: str,
        *,
        priority: int | None = None,
        delay: float | None = None,
        run_at: datetime | None = None,
        key: str | None = None,
    ) -> TaskHandle[Any]: ...
    async def respond(self, task_id: str, value: Any) -> TaskSnapshot: ...
    async def list(
        self,
        *,
        state: TaskState | str | None = None,
        owner: str | None = None,
        type_prefix: str | None = None,
        created_after: datetime | float | None = None,
        created_before: datetime | float | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = False,
        dead_letter: bool = False,
    ) -> builtins.list[TaskSnapshot]: ...
    async def stats(self) -> BusStats: ...
    async def schedule(
        self,
        task_type: str,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        tz: str = "UTC",
        input: Any = None,
        id: str | None = None,
        jitter: timedelta | float | None = None,
        misfire: MisfirePolicy = "once",
        misfire_limit: int = 100,
        misfire_grace: timedelta | float = 60.0,
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
        paused: bool | None = None,
    ) -> Schedule: ...
    async def schedules(self, *, owner: str | None = None) -> builtins.list[Schedule]: ...
    async def get_schedule(self, schedule_id: str) -> Schedule: ...
    async def pause_schedule(self, schedule_id: str) -> Schedule: ...
    async def resume_schedule(self, schedule_id: str) -> Schedule: ...
    async def remove_schedule(self, schedule_id: str) -> None: ...


class ThreadedHandle(Generic[ResultT_co]):
    """A task submitted through a `ThreadedTaskBus`: its id and blocking accessors."""

    __slots__ = ("_tb", "id", "type")

    def __init__(self, tb: ThreadedTaskBus, task_id: str, task_type: str) -> None:
        self._tb = tb
        self.id = task_id
        self.type = task_type

    def __repr__(self) -> str:
        return f"<ThreadedHandle {self.id} {self.type}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ThreadedHandle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def result(self, timeout: float | None = None) -> ResultT_co:
        """Block until the task is final; its result, or `TaskFailedError` /
        `TaskCancelledError`; `TimeoutError` after `timeout` seconds."""
        return cast(ResultT_co, self._tb.result(self.id, timeout=timeout))

    def wait(self, timeout: float | None = None) -> TaskSnapshot:
        """Block until the task is final and return its snapshot, whatever the outcome."""
        return self._tb.wait(self.id, timeout=timeout)

    def get(self) -> TaskSnapshot:
        """The task as it is now."""
        return self._tb.get(self.id)

    def cancel(self, reason: str | None = None) -> bool:
        """Cancel the task; False if it had already finished."""
        return self._tb.cancel(self.id, reason=reason)


class ThreadedSubscription:
    """``with tb.subscribe(...) as events: for event in events: ...``

    A blocking iterator of events. It ends after the task's final event when
    subscribed with `task_id`, and in any case when the bus closes.
    """

    def __init__(
        self, tb: ThreadedTaskBus, source: AbstractAsyncContextManager[EventBuffer]
    ) -> None:
        self._tb = tb
        self._blocking = tb._portal.wrap_async_context_manager(source)
        self._stream: EventBuffer | None = None
        self._entered = False

    def __enter__(self) -> Self:
        tb = self._tb
        tb._check_thread("subscribe")
        try:
            self._stream = self._blocking.__enter__()
        except BaseException as exc:
            # Closing stops the portal (RuntimeError) or cancels the subscribing
            # task (the loop's own cancellation, seen from here as an error).
            if tb.closed and not isinstance(exc, TaskbusError | KeyboardInterrupt | SystemExit):
                raise BusNotRunning("ThreadedTaskBus.subscribe(): the bus closed") from None
            raise
        self._entered = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stream = None
        if self._tb.closed:
            # The portal cancelled the subscription when the bus closed (or is
            # about to): there may be nothing left to leave.
            with suppress(RuntimeError, CancelledError):
                self._blocking.__exit__(exc_type, exc, tb)
            return
        self._blocking.__exit__(exc_type, exc, tb)

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> Event:
        stream = self._stream
        if stream is None:
            if not self._entered:
                raise RuntimeError("use `with tb.subscribe(...) as events:` to iterate")
            raise StopIteration
        try:
            event = self._tb._call(partial(_next_event, stream), "subscribe")
        except BusNotRunning:
            event = None
        if event is None:
            self._stream = None
            raise StopIteration
        return event


async def _next_event(stream: EventBuffer) -> Event | None:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


async def _invoke(func: Callable[[], T]) -> T:
    return func()


class _Dispatched:
    """The bus-side listener for a sync listener that a dispatcher hands on."""

    __slots__ = ("dispatcher", "listener")

    def __init__(self, dispatcher: Dispatcher, listener: Listener) -> None:
        self.dispatcher = dispatcher
        self.listener = listener

    def __call__(self, event: Event) -> None:
        # Runs on the bus's thread. If the dispatcher raises, the event bus logs
        # it as this listener's error and counts it; delivery goes on.
        self.dispatcher(self.listener, event)

    def __repr__(self) -> str:
        return f"{self.listener!r} through dispatcher {self.dispatcher!r}"


class _ThreadedDecorator:
    """`ThreadedTaskBus.task(...)`: registers the handler on the bus's thread."""

    def __init__(self, tb: ThreadedTaskBus, decorator: _Decorator) -> None:
        self._tb = tb
        self._decorator = decorator

    @overload
    def __call__(
        self, handler: Callable[[TaskContext, InT], Awaitable[OutT]]
    ) -> TaskDefinition[InT, OutT]: ...
    @overload
    def __call__(
        self, handler: Callable[[TaskContext], Awaitable[OutT]]
    ) -> TaskDefinition[None, OutT]: ...
    @overload
    def __call__(
        self, handler: Callable[[TaskContext, InT], OutT]
    ) -> TaskDefinition[InT, OutT]: ...
    @overload
    def __call__(self, handler: Callable[[TaskContext], OutT]) -> TaskDefinition[None, OutT]: ...
    @overload
    def __call__(self, handler: Callable[[InT], OutT]) -> TaskDefinition[InT, OutT]: ...
    @overload
    def __call__(self, handler: Callable[[], OutT]) -> TaskDefinition[None, OutT]: ...
    def __call__(self, handler: Callable[..., Any]) -> TaskDefinition[Any, Any]:
        # Registry watchers touch the queue, which belongs to the bus's thread.
        return self._tb._call_sync(partial(self._decorator, handler), "task")


class ThreadedTaskBus:
    """A running `TaskBus` behind blocking, thread-safe calls.

    Get one from ``TaskBus.start_threaded(...)`` (or `ThreadedTaskBus.start`)
    and stop it with `close()` or a ``with`` block. `bus` is the `TaskBus`
    itself, for code that runs on its loop.
    """

    def __init__(
        self,
        bus: AsyncTaskBus,
        portal: BlockingPortal,
        stack: ExitStack,
        loop_thread: int,
        dispatcher: Dispatcher | None,
    ) -> None:
        self._bus = bus
        self._portal = portal
        self._stack: ExitStack | None = stack
        self._loop_thread = loop_thread
        self._dispatcher = dispatcher
        self._dispatched: dict[tuple[str, Listener], builtins.list[_Dispatched]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._stopped = threading.Event()
        atexit.register(self._close_at_exit)

    @classmethod
    def start(
        cls, bus: AsyncTaskBus, *, dispatcher: Dispatcher | None = None, backend: str = "asyncio"
    ) -> ThreadedTaskBus:
        """Start `bus` on a new thread, on a `backend` ("asyncio" or "trio") event loop.

        Raises what starting the bus raises (a `StoreError`, say), with no
        thread left behind.
        """
        if dispatcher is not None and not callable(dispatcher):
            raise TypeError(f"dispatcher must be callable, not {dispatcher!r}")
        with ExitStack() as stack:
            portal = stack.enter_context(start_blocking_portal(backend, name="taskbus-loop"))
            stack.callback(_cancel_remaining, portal)
            stack.enter_context(portal.wrap_async_context_manager(bus))
            loop_thread = portal.call(threading.get_ident)
            threaded = cls(bus, portal, stack.pop_all(), loop_thread, dispatcher)
        logger.info("taskbus running on its own thread (%s)", backend)
        return threaded

    # -- the bus's thread ----------------------------------------------------------

    @property
    def bus(self) -> AsyncTaskBus:
        """The underlying `TaskBus`; use it only from its own loop (async code)."""
        return self._bus

    @property
    def dispatcher(self) -> Dispatcher | None:
        return self._dispatcher

    @property
    def closed(self) -> bool:
        """True once `close()` has been called (the bus may still be stopping)."""
        return self._closed

    def _on_own_thread(self) -> bool:
        """On the loop's thread, or on a thread running one of its tasks' handlers."""
        return threading.get_ident() == self._loop_thread or current_context() is not None

    def _check_thread(self, method: str) -> None:
        if threading.get_ident() == self._loop_thread:
            raise RuntimeError(
                f"ThreadedTaskBus.{method}() blocks until the bus answers, so it cannot be "
                "called on the bus's own thread (from a sync listener added without a "
                "dispatcher, or from an async handler); there, use the TaskBus itself "
                f"(`await tb.bus.{method}(...)`), or give start_threaded() a dispatcher"
            )

    def _call(self, func: Callable[[], Awaitable[T]], method: str) -> T:
        """Run `func()` on the bus's loop and return its result, or raise its error."""
        if self._closed:
            raise BusNotRunning(f"ThreadedTaskBus.{method}(): the bus is closed")
        self._check_thread(method)
        try:
            return self._portal.call(func)
        except CancelledError:
            # The portal cancelled what still waited when the bus closed.
            raise BusNotRunning(f"ThreadedTaskBus.{method}(): the bus closed") from None
        except RuntimeError as exc:
            if self._closed and not isinstance(exc, TaskbusError):  # the portal has stopped
                raise BusNotRunning(f"ThreadedTaskBus.{method}(): the bus closed") from None
            raise

    def _call_sync(self, func: Callable[[], T], method: str) -> T:
        return self._call(partial(_invoke, func), method)

    # -- registration and events ---------------------------------------------------

    def task(self, name: str, **options: Any) -> _ThreadedDecorator:
        """Decorator: register a handler as task type `name`; returns its `TaskDefinition`.

        Same options as `TaskBus.task`; raises `InvalidTaskDefinition` at once
        for bad ones. Submit with ``tb.submit(definition, input)``.
        """
        decorator = self._call_sync(partial(self._bus.task, name, **options), "task")
        return _ThreadedDecorator(self, decorator)

    @overload
    def on(self, event: _EventKey) -> Callable[[Listener], Listener]: ...
    @overload
    def on(self, event: _EventKey, listener: Listener) -> Listener: ...
    def on(
        self, event: _EventKey, listener: Listener | None = None
    ) -> Listener | Callable[[Listener], Listener]:
        """Call `listener(event)` for each event of that name or class (or ``"*"``).

        A sync listener goes through the dispatcher when there is one, and
        otherwise runs on the bus's thread (keep it quick; it cannot call this
        facade's blocking methods). Returns the listener, so it decorates too.
        """
        if listener is None:
            return partial(self._on, event)
        return self._on(event, listener)

    def _on(self, event: _EventKey, listener: Listener) -> Listener:
        if not callable(listener):
            raise TypeError(f"listener must be callable, not {listener!r}")
        if self._dispatcher is None or _is_async(listener):
            self._call_sync(partial(self._bus.on, event, listener), "on")
            return listener
        wrapper = _Dispatched(self._dispatcher, listener)
        self._call_sync(partial(self._bus.on, event, wrapper), "on")
        # `event` may be a name or a class: key the wrapper the way the bus does.
        key = (_event_name(event), listener)
        with self._lock:
            self._dispatched.setdefault(key, []).append(wrapper)
        return listener

    def off(self, event: _EventKey, listener: Listener) -> None:
        """Remove a listener added with `on`; raises KeyError if it was not added."""
        key = (_event_name(event), listener)
        with self._lock:
            wrappers = self._dispatched.get(key)
            wrapper = wrappers.pop() if wrappers else None
            if wrappers == []:
                del self._dispatched[key]
        try:
            self._call_sync(partial(self._bus.off, event, wrapper or listener), "off")
        except KeyError:
            if wrapper is not None:  # put it back: the bus did not have it after all
                with self._lock:
                    self._dispatched.setdefault(key, []).append(wrapper)
            raise

    def add_service(self, service: Callable[[], Awaitable[None]]) -> None:
        """Run the async function `service` on the bus's loop from now until the bus
        stops (see `TaskBus.add_service`)."""
        self._call_sync(partial(self._bus.add_service, service), "add_service")

    def subscribe(
        self,
        *,
        task_id: str | None = None,
        task_type: str | None = None,
        events: builtins.list[_EventKey] | None = None,
        buffer: int = 1000,
    ) -> ThreadedSubscription:
        """``with tb.subscribe(task_id=...) as events: for event in events: ...``

        Same filters and buffer policy as `TaskBus.subscribe`; iteration blocks
        for the next event and ends after the task's final event (with
        `task_id`) or when the bus closes.
        """
        if self._closed:
            raise BusNotRunning("ThreadedTaskBus.subscribe(): the bus is closed")
        source = self._bus.subscribe(
            task_id=task_id, task_type=task_type, events=events, buffer=buffer
        )
        return ThreadedSubscription(self, source)

    # -- submitting and reading ----------------------------------------------------

    @overload
    def submit(
        self,
        task_type: TaskDefinition[InT, OutT],
        input: InT | None = None,
        *,
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
        delay: float | None = None,
        key: str | None = None,
        run_at: datetime | None = None,
        after: Iterable[str | ThreadedHandle[Any]] | None = None,
        on_parent_failure: ParentFailurePolicy = "cancel",
    ) -> ThreadedHandle[OutT]: ...
    @overload
    def submit(
        self,
        task_type: str,
        input: Any = None,
        *,
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
        delay: float | None = None,
        key: str | None = None,
        run_at: datetime | None = None,
        after: Iterable[str | ThreadedHandle[Any]] | None = None,
        on_parent_failure: ParentFailurePolicy = "cancel",
    ) -> ThreadedHandle[Any]: ...
    def submit(
        self,
        task_type: str | TaskDefinition[Any, Any],
        input: Any = None,
        *,
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
        delay: float | None = None,
        key: str | None = None,
        run_at: datetime | None = None,
        after: Iterable[str | ThreadedHandle[Any]] | None = None,
        on_parent_failure: ParentFailurePolicy = "cancel",
    ) -> ThreadedHandle[Any]:
        """Queue one task (by type name or `TaskDefinition`); returns at once.

        Raises what `TaskBus.submit` raises (`UnknownTaskType`,
        `InvalidTaskInput`, `InvalidSubmission`), unchanged. `after` takes task ids
        or handles (see `TaskBus.submit`).
        """
        name = task_type.name if isinstance(task_type, TaskDefinition) else task_type
        parents: list[Any] | None = None  # ids; anything else fails in `check_after`
        if after is not None:
            parents = [p.id if isinstance(p, ThreadedHandle) else p for p in after]
        handle = self._call(
            partial(
                self._bus.submit,
                name,
                input,
                priority=priority,
                owner=owner,
                metadata=metadata,
                delay=delay,
                key=key,
                run_at=run_at,
                after=parents,
                on_parent_failure=on_parent_failure,
            ),
            "submit",
        )
        return ThreadedHandle(self, handle.id, handle.type)

    def chain(
        self,
        *steps: ChainStep[Any] | tuple[str, Any],
        after: Iterable[str | ThreadedHandle[Any]] | None = None,
        on_parent_failure: ParentFailurePolicy = "cancel",
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[ThreadedHandle[Any], ...]:
        """Submit steps that run one after the other (see `TaskBus.chain`); returns
        their handles in order at once."""
        parents: list[Any] | None = None  # ids; anything else fails in `check_after`
        if after is not None:
            parents = [p.id if isinstance(p, ThreadedHandle) else p for p in after]
        handles = self._call(
            partial(
                self._bus.chain,
                *steps,
                after=parents,
                on_parent_failure=on_parent_failure,
                priority=priority,
                owner=owner,
                metadata=metadata,
            ),
            "chain",
        )
        return tuple(ThreadedHandle(self, handle.id, handle.type) for handle in handles)

    def get(self, task_id: str) -> TaskSnapshot:
        """The task as it is now; raises `TaskNotFound`."""
        return self._call(partial(self._bus.get, task_id), "get")

    def wait(self, task_id: str, timeout: float | None = None) -> TaskSnapshot:
        """Block until the task is final; its snapshot. `TimeoutError` after `timeout`."""
        return self._call(partial(self._bus.wait, task_id, timeout=timeout), "wait")

    def result(self, task_id: str, timeout: float | None = None) -> Any:
        """Block until the task is final; its result, or `TaskFailedError` /
        `TaskCancelledError`; `TimeoutError` after `timeout` seconds."""
        return self._call(partial(self._bus.result, task_id, timeout=timeout), "result")

    def cancel(self, task_id: str, reason: str | None = None) -> bool:
        """Cancel a queued or running task; False if it had already finished."""
        return self._call(partial(self._bus.cancel, task_id, reason=reason), "cancel")

    def retry(
        self,
        task_id: str,
        *,
        priority: int | None = None,
        delay: float | None = None,
        run_at: datetime | None = None,
        key: str | None = None,
    ) -> ThreadedHandle[Any]:
        """Run a failed or cancelled task again as a new task (see `TaskBus.retry`);
        returns at once. Raises what `TaskBus.retry` raises, unchanged."""
        handle = self._call(
            partial(
                self._bus.retry, task_id, priority=priority, delay=delay, run_at=run_at, key=key
            ),
            "retry",
        )
        return ThreadedHandle(self, handle.id, handle.type)

    def respond(self, task_id: str, value: Any) -> TaskSnapshot:
        """Answer the question a waiting task asked (see `TaskBus.respond`)."""
        return self._call(partial(self._bus.respond, task_id, value), "respond")

    def list(
        self,
        *,
        state: TaskState | str | None = None,
        owner: str | None = None,
        type_prefix: str | None = None,
        created_after: datetime | float | None = None,
        created_before: datetime | float | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = False,
        dead_letter: bool = False,
    ) -> builtins.list[TaskSnapshot]:
        """Snapshots of matching tasks, oldest (or newest) first (see `TaskBus.list`)."""
        query = partial(
            self._bus.list,
            state=state,
            owner=owner,
            type_prefix=type_prefix,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
            offset=offset,
            newest_first=newest_first,
            dead_letter=dead_letter,
        )
        return self._call(query, "list")

    def stats(self) -> BusStats:
        """Counts by state and by type."""
        return self._call(self._bus.stats, "stats")

    def schedule(self, task_type: str, **options: Any) -> Schedule:
        """Store a schedule (the keywords of `TaskBus.schedule`) and return it."""
        return self._call(partial(self._bus.schedule, task_type, **options), "schedule")

    def schedules(self, *, owner: str | None = None) -> builtins.list[Schedule]:
        """Every stored schedule (of `owner`, if given), by id."""
        return self._call(partial(self._bus.schedules, owner=owner), "schedules")

    def get_schedule(self, schedule_id: str) -> Schedule:
        """The stored schedule; raises `ScheduleNotFound`."""
        return self._call(partial(self._bus.get_schedule, schedule_id), "get_schedule")

    def pause_schedule(self, schedule_id: str) -> Schedule:
        """Stop a schedule firing until resumed; raises `ScheduleNotFound`."""
        return self._call(partial(self._bus.pause_schedule, schedule_id), "pause_schedule")

    def resume_schedule(self, schedule_id: str) -> Schedule:
        """Let a paused schedule fire again, from its next time after now."""
        return self._call(partial(self._bus.resume_schedule, schedule_id), "resume_schedule")

    def remove_schedule(self, schedule_id: str) -> None:
        """Delete a schedule; raises `ScheduleNotFound`."""
        self._call(partial(self._bus.remove_schedule, schedule_id), "remove_schedule")

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        """Stop the bus and its thread; idempotent.

        Blocks until the bus has stopped (running tasks get the bus's
        `shutdown_grace`). From the bus's own thread it only starts the
        shutdown (on a helper thread) and returns.
        """
        with self._lock:
            stack, self._stack = self._stack, None
            self._closed = True
        own_thread = self._on_own_thread()
        if stack is None:  # closed already, or closing on another thread
            if not own_thread:
                self._stopped.wait()
            return
        if own_thread:
            logger.info("taskbus: close() called on the bus's own thread; stopping it on another")
            threading.Thread(target=self._stop_logged, args=(stack,), name="taskbus-close").start()
            return
        self._stop(stack)

    def _stop(self, stack: ExitStack) -> None:
        try:
            stack.close()
        finally:
            atexit.unregister(self._close_at_exit)
            self._stopped.set()
            logger.info("taskbus stopped its thread")

    def _stop_logged(self, stack: ExitStack) -> None:
        try:
            self._stop(stack)
        except Exception:  # nobody waits on this thread: log it
            logger.exception("taskbus: stopping the bus failed")

    def _close_at_exit(self) -> None:
        if not self._closed:
            logger.warning("taskbus: ThreadedTaskBus was not closed; closing it at exit")
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"<ThreadedTaskBus {state}>"


def _cancel_remaining(portal: BlockingPortal) -> None:
    """Stop the portal cancelling what still waits (a `result()` of a task left
    queued, an open subscription), so that closing never hangs on them."""
    with suppress(RuntimeError):  # the portal has stopped already
        portal.call(portal.stop, True)


def _is_async(listener: Listener) -> bool:
    return inspect.iscoroutinefunction(listener) or inspect.iscoroutinefunction(
        getattr(listener, "__call__", None)  # noqa: B004
    )
