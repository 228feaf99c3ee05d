"""`TaskBus`: the registry, queue, executor, store and event bus, composed.

Longer than most modules: it is the public surface, one documented method per
operation, each handing the work to a helper (`Intake`, `TaskAccess`,
`ScheduleBook`, ...); `chain`'s typed overloads alone take 60 lines.
"""

from __future__ import annotations

import builtins
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, overload

from ._access import TaskAccess
from ._background import make_background
from ._batch import BatchSummary, BatchTracker, TaskBatch
from ._bus import EventBus, Listener
from ._chain import ChainStep, submit_chain
from ._clock import Clock, SystemClock
from ._dependencies import ParentFailurePolicy, ParentWatch, RecentFinals, check_after
from ._errors import BusNotRunning, InvalidSubmission
from ._events import Event
from ._executor import TaskExecutor, default_thread_limit
from ._handle import TaskHandle
from ._held import HeldTasks
from ._intake import Intake
from ._leasing import DEFAULT_LEASE, LeaseKeeper
from ._lifecycle import Lifecycle
from ._query import task_query
from ._queue import TaskQueue
from ._registry import TaskDefinition, TaskRegistry, _Decorator
from ._replay import EventReplay
from ._reports import BusStats, ShutdownReport, StatsReader
from ._rerun import check_retryable, rerun_input, rerun_metadata
from ._respond import InputDesk
from ._retention import RetentionPolicy
from ._retire import TypeChanges
from ._running import BusRun
from ._schedule import MisfirePolicy, Schedule
from ._scheduler import Scheduler
from ._schedules import ScheduleBook
from ._snapshot import TaskSnapshot
from ._states import TaskState
from ._timers import Timers
from .stores import Store, open_store
from .stores._base import ScheduleStore

if TYPE_CHECKING:
    from ._threaded import ThreadedTaskBus

__all__ = ["BusStats", "ShutdownReport", "TaskBus", "default_thread_limit", "default_workers"]

logger = logging.getLogger("taskbus.bus")
#: What an untraced submit runs under.
_UNTRACED: AbstractContextManager[object] = nullcontext()

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
D = TypeVar("D")


#: Tasks running at once when `workers` is not given: async handlers are cheap.
DEFAULT_WORKERS = 100


def default_workers() -> int:
    """Tasks running at once when `workers` is not given: 100.

    A worker costs a few kilobytes while it waits; sync and process handlers
    are bounded by their own limits (`default_thread_limit`, the CPU count).
    """
    return DEFAULT_WORKERS


class TaskBus:
    """An event-bus task runtime: register types, submit work, watch events.

    ``async with TaskBus() as bus:`` starts the workers; leaving the block stops
    intake, gives running tasks `shutdown_grace` seconds, then cancels them.
    """

    def __init__(
        self,
        *,
        store: Store | str | None = None,
        workers: int | None = None,
        thread_limit: int | None = None,
        registry: TaskRegistry | None = None,
        clock: Clock | None = None,
        progress_interval: float = 0.1,
        aging: float | None = None,
        shutdown_grace: float = 10.0,
        listener_buffer: int = 1000,
        event_history: int = 1000,
        retention: RetentionPolicy | None = RetentionPolicy(),  # noqa: B008 - frozen
        unknown_type_grace: float | None = 300.0,
    ) -> None:
        if workers is not None and (
            not isinstance(workers, int) or isinstance(workers, bool) or workers < 0
        ):
            raise ValueError(f"workers must be an int >= 0, not {workers!r}")
        if thread_limit is not None and (
            not isinstance(thread_limit, int) or isinstance(thread_limit, bool) or thread_limit < 1
        ):
            raise ValueError(f"thread_limit must be an int >= 1, not {thread_limit!r}")
        if shutdown_grace < 0:
            raise ValueError(f"shutdown_grace must be >= 0, not {shutdown_grace}")
        self.store = open_store(store)
        self.registry = registry if registry is not None else TaskRegistry()
        self.events = EventBus(listener_buffer=listener_buffer, history=event_history)
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.shutdown_grace = shutdown_grace
        self.retention = retention
        self.queue = TaskQueue(aging=aging, monotonic=self.clock.monotonic)
        self.timers = Timers(self.clock)
        self._held = HeldTasks(unknown_type_grace)
        self.lifecycle = Lifecycle(
            self.store, self.events, self.clock, self.timers, progress_interval=progress_interval
        )
        self.executor = TaskExecutor(
            queue=self.queue,
            registry=self.registry,
            lifecycle=self.lifecycle,
            timers=self.timers,
            clock=self.clock,
            workers=workers if workers is not None else default_workers(),
            thread_limit=thread_limit,
            held=self._held,
        )
        self.shutdown_report: ShutdownReport | None = None
        self._stats = StatsReader(self.store)
        self._batches = BatchTracker(
            self,
            interval=progress_interval,
            keep_for=retention.max_age if retention is not None else None,
        )
        self._types = TypeChanges(
            registry=self.registry,
            queue=self.queue,
            held=self._held,
            executor=self.executor,
            lifecycle=self.lifecycle,
            store=self.store,
            monotonic=self.clock.monotonic,
        )
        self._leases: LeaseKeeper | None = None
        if self.lifecycle.leases is not None:
            self._leases = LeaseKeeper(
                self.lifecycle.leases,
                queue=self.queue,
                executor=self.executor,
                registry=self.registry,
                lifecycle=self.lifecycle,
                clock=self.clock,
                timers=self.timers,
                aging=aging,
                lease=_store_lease(self.lifecycle.leases),
            )
            self.executor.on_idle = self._leases.capacity_freed
            self.executor.on_deferred = self._leases.wake_after
            self.lifecycle.on_work = self._leases.work_queued
            self.lifecycle.on_slot_freed = self._leases.capacity_freed
        elif workers == 0:
            raise ValueError(
                "workers=0 makes a client of a store that processes share (SQLite, say); "
                f"{type(self.store).__name__} keeps tasks in this process, so it needs workers"
            )
        self._intake = Intake(
            registry=self.registry,
            store=self.store,
            lifecycle=self.lifecycle,
            queue=self.queue,
            executor=self.executor,
            clock=self.clock,
            leases=self._leases,
            batches=self._batches,
        )
        self._access = TaskAccess(
            lifecycle=self.lifecycle,
            executor=self.executor,
            queue=self.queue,
            held=self._held,
            registry=self.registry,
            leases=self._leases,
            accepting=lambda: self._intake.open,
        )
        self.lifecycle.on_cancel_request = self._access.cancel_requested
        if self._leases is not None:
            watch = ParentWatch(self._leases.wake)
            self.lifecycle.finals = RecentFinals()
            self.lifecycle.on_children = watch.children_queued
            self.lifecycle.on_final = watch.final
        scheduler = None
        if isinstance(self.store, ScheduleStore):
            scheduler = Scheduler(
                store=self.store,
                intake=self._intake,
                registry=self.registry,
                clock=self.clock,
                accepting=lambda: self._intake.open,
            )
        self._schedules = ScheduleBook(
            store=self.store,
            registry=self.registry,
            clock=self.clock,
            scheduler=scheduler,
            running=lambda: self._intake.open,
        )
        self._inputs = InputDesk(
            lifecycle=self.lifecycle,
            access=self._access,
            queue=self.queue,
            executor=self.executor,
            clock=self.clock,
            timers=self.timers,
        )
        self._replay = EventReplay(
            events=self.events, lifecycle=self.lifecycle, record=self._access.record
        )
        self._run = BusRun(
            store=self.store,
            registry=self.registry,
            lifecycle=self.lifecycle,
            queue=self.queue,
            executor=self.executor,
            events=self.events,
            timers=self.timers,
            clock=self.clock,
            held=self._held,
            fail_expired=self._types.fail_unregistered,
            leases=self._leases,
            waiting=self._intake.waits.take_all,
            scheduler=scheduler,
            background=(self._inputs.run,),
        )
        self.registry.submitter = self
        for definition in self.registry.definitions():
            self.queue.set_limit(definition.name, definition.concurrency)
            self.queue.set_key_limit(definition.name, definition.key_limit)
        self.registry.watch(self._types.changed)

    async def fail_unknown_types(self, *, reason: str | None = None) -> int:
        """Fail now the tasks held because their type is not registered; return how many.

        Tasks of an unknown type (stored by an earlier run, say, before a plugin has
        registered it again) are held, not failed, for `unknown_type_grace` seconds.
        """
        return await self._types.fail_held(reason)

    def add_service(self, service: Callable[[], Awaitable[None]]) -> None:
        """Run the async function `service` while the bus runs: from each start until
        its stop (cancelled then), beginning now if the bus is running.

        For work that lives beside the tasks, such as a poller or a figures sampler.
        If `service` raises, the error is logged and the bus runs on without it.
        """
        if not _is_async_callable(service):
            raise TypeError(f"a service is an async function, not {service!r}")
        self._run.add_service(service)

    def background(
        self,
        target: str | TaskDefinition[Any, Any] | Callable[..., Any],
        *,
        inline_for: float = 2.0,
        priority: int | None = None,
        owner: str | None = None,
    ) -> Callable[..., Awaitable[Any]]:
        """Wrap slow work for an IPC handler, REST endpoint or MCP tool.

        The returned async callable takes the function's own arguments (or, for a
        task type or definition, its input payload). It returns the result when the
        work finishes within `inline_for` seconds (raising `TaskFailedError` /
        `TaskCancelledError` as `result()` would), otherwise a `Queued` answer with
        the task id at once; the work goes on either way, exactly once.
        ``inline_for=0`` always answers `Queued`. A plain function is registered as
        task type ``background:<module>.<qualname>`` (its arguments are its input).
        """
        return make_background(
            self.registry,
            self.submit,
            target,
            inline_for=inline_for,
            priority=priority,
            owner=owner,
        )

    @classmethod
    def start_threaded(
        cls,
        *,
        dispatcher: Callable[..., Any] | None = None,
        backend: str = "asyncio",
        **kwargs: Any,
    ) -> ThreadedTaskBus:
        """Run a bus on a thread of its own, behind a blocking facade for sync hosts.

        Takes the same keywords as `TaskBus`. With `dispatcher`, listeners are called
        as ``dispatcher(fn, event)`` so a GUI can run them on its own thread;
        `backend` is "asyncio" or "trio".
        """
        from ._threaded import ThreadedTaskBus

        return ThreadedTaskBus.start(cls(**kwargs), dispatcher=dispatcher, backend=backend)

    @property
    def shares_store(self) -> bool:
        """Whether several processes can share this bus's store (it holds the claims:
        any bus on it may run its tasks, and ``workers=0`` makes a client)."""
        return self._leases is not None

    @property
    def worker_id(self) -> str:
        """Who this bus is in a shared store's leases: ``host:pid:token``."""
        return self.lifecycle.worker_id

    @property
    def running(self) -> bool:
        """True between start and the beginning of shutdown."""
        return self._intake.open

    # -- registration and events -------------------------------------------------

    def task(self, name: str, **options: Any) -> _Decorator:
        """Register the decorated handler as task type `name` (see `TaskOptions`)."""
        return self.registry.task(name, **options)

    def on(self, event: str | type[Event], listener: Listener | None = None) -> Any:
        """Listen to an event by name or class; sync or async listener."""
        if listener is None:
            return self.events.on(event)
        return self.events.on(event, listener)

    def off(self, event: str | type[Event], listener: Listener) -> None:
        self.events.off(event, listener)

    @asynccontextmanager
    async def subscribe(
        self,
        *,
        task_id: str | None = None,
        task_type: str | None = None,
        events: list[str | type[Event]] | None = None,
        buffer: int = 1000,
        after: str | None = None,
    ) -> AsyncIterator[Any]:
        """Iterate events as they happen (see `EventBuffer` for the overflow policy).

        With `task_id`, iteration ends after that task's final event; if the task
        has already finished, its final event is replayed at once. With `after` (an
        `Event.id`), the events since that one are replayed first, each once (see
        `events_after`), so a subscriber that reconnects misses nothing.
        """
        async with self._replay.subscribe(
            task_id=task_id, task_type=task_type, events=events, buffer=buffer, after=after
        ) as stream:
            yield stream

    async def flush_events(self) -> None:
        """Wait until every event published so far is logged and delivered (a store
        with an event log delivers events once they are committed)."""
        await self._replay.flush()

    async def events_after(self, after: str | None = None, *, limit: int = 1000) -> list[Event]:
        """Up to `limit` published events after the one with id `after` (None: from the
        oldest kept), oldest first.

        A store with an event log (SQLite) answers from it: ids and events survive
        restarts, and the log keeps the newest ``keep_events``. Otherwise the bus keeps
        the last `event_history` events it published (those someone listened to).
        """
        return await self._replay.events_after(after, limit=limit)

    # -- submitting and reading --------------------------------------------------

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
    ) -> TaskHandle[Any]:
        """Queue one task and return its handle at once.

        `delay` (seconds) or `run_at` (a timezone-aware datetime; a time past runs
        now) holds it back until then. Raises `UnknownTaskType`, `InvalidTaskInput`
        or `InvalidSubmission` for bad input (nothing is stored), `BusNotRunning`
        outside ``async with``. With `key`, a queued or running task submitted with
        the same key is returned instead of a new one.

        With `after` (task ids or handles, at most 1,000, of this `owner`), the task
        waits, holding no worker, until every one of them is final; then it runs,
        its parents' snapshots in `TaskContext.parents`, unless one failed or was
        cancelled: `on_parent_failure` says whether it is then cancelled ("cancel"),
        failed ("fail") or run anyway ("run"). An unknown parent is
        `InvalidSubmission`.
        """
        intake = self._intake
        # A traced bus submits under a span (`taskbus.otel`); nullcontext costs less
        # than a coroutine of its own on this hot path.
        tracing = intake.tracing
        with _UNTRACED if tracing is None else tracing.submitting(task_type):
            parents = None
            if after is not None or on_parent_failure != "cancel":  # not on the common path
                parents = check_after(after, on_parent_failure)
                if parents and (delay is not None or run_at is not None):
                    raise InvalidSubmission("after cannot be combined with delay or run_at")
            record, definition, queued = intake.take(
                task_type, input, priority, owner, metadata, delay, key, run_at, parents
            )
            if parents:
                await intake.link_parents(record, parents, on_parent_failure)
            if key is not None:
                record = await intake.add_keyed(record, definition, key)
            elif not queued:
                await intake.enqueue(record, definition)
            return TaskHandle(self, record.id, record.type)

    async def retry(
        self,
        task_id: str,
        *,
        priority: int | None = None,
        delay: float | None = None,
        run_at: datetime | None = None,
        key: str | None = None,
    ) -> TaskHandle[Any]:
        """Run a failed or cancelled task again, as a new task; return its handle.

        The new task has the old one's type, input (validated again against the
        type's input model), owner, priority (unless `priority` is given) and
        metadata, plus ``metadata["retry_of"]``: the old task's id
        (`TaskSnapshot.retry_of`). The old task stays as it is. `delay`, `run_at`
        and `key` are as in `submit`: with `key`, retrying again while the first
        re-run is queued or running returns that re-run instead of a new task.

        Raises `TaskNotFound`, `TaskNotRetryable` (the task is queued, running or
        completed), `UnknownTaskType` (its type is no longer registered),
        `InvalidTaskInput` (its input no longer validates), `InvalidSubmission`,
        `BusNotRunning` outside ``async with``. Nothing is stored when it raises.
        """
        if not self._intake.open:
            raise BusNotRunning("the bus is not running: retry inside `async with bus:`")
        old = await self.get(task_id)
        check_retryable(old)
        definition = self.registry.get(old.type)  # raises UnknownTaskType
        return await self.submit(
            old.type,
            rerun_input(definition, old),
            priority=old.priority if priority is None else priority,
            owner=old.owner,
            metadata=rerun_metadata(old),
            delay=delay,
            key=key,
            run_at=run_at,
        )

    async def get(self, task_id: str) -> TaskSnapshot:
        """The task as it is now; raises `TaskNotFound`.

        A final state shows once the store holds it (order of truth).
        """
        return await self._access.get(task_id)

    async def wait(self, task_id: str, *, timeout: float | None = None) -> TaskSnapshot:
        """Wait until the task is final and return its snapshot.

        Raises `TimeoutError` after `timeout` seconds (the task goes on).
        """
        return await self._access.wait(task_id, timeout)

    async def result(self, task_id: str, *, timeout: float | None = None) -> Any:
        """The task's result; raises `TaskFailedError` / `TaskCancelledError`."""
        return await self._access.result(task_id, timeout)

    async def submit_batch(
        self,
        items: Iterable[tuple[str, Any]],
        *,
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> TaskBatch:
        """Submit many ``(task_type, input)`` tasks as one batch.

        Every input is validated first: one bad item raises and nothing is stored.
        A failing task does not stop the others. Follow the batch with
        `bus.batch(id)`, batch-progress / batch-finished events, or `batch.wait()`.
        """
        return await self._intake.add_batch(
            items, priority=priority, owner=owner, metadata=metadata
        )

    @overload
    async def chain(
        self,
        s1: ChainStep[A],
        /,
        *,
        after: Iterable[str | TaskHandle[Any]] | None = None,
        on_parent_failure: ParentFailurePolicy = "cancel",
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[TaskHandle[A]]: ...
    @overload
    async def chain(
        self,
        s1: ChainStep[A],
        s2: ChainStep[B],
        /,
        *,
        after: Iterable[str | TaskHandle[Any]] | None = None,
        on_parent_failure: ParentFailurePolicy = "cancel",
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[TaskHandle[A], TaskHandle[B]]: ...
    @overload
    async def chain(
        self,
        s1: ChainStep[A],
        s2: ChainStep[B],
        s3: ChainStep[C],
        /,
        *,
        after: Iterable[str | TaskHandle[Any]] | None = None,
        on_parent_failure: ParentFailurePolicy = "cancel",
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[TaskHandle[A], TaskHandle[B], TaskHandle[C]]: ...
    @overload
    async def chain(
        self,
        s1: ChainStep[A],
        s2: ChainStep[B],
        s3: ChainStep[C],
        s4: ChainStep[D],
        /,
        *,
        after: Iterable[str | TaskHandle[Any]] | None = None,
        on_parent_failure: ParentFailurePolicy = "cancel",
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[TaskHandle[A], TaskHandle[B], TaskHandle[C], TaskHandle[D]]: ...
    @overload
    async def chain(
        self,
        *steps: ChainStep[Any] | tuple[str, Any],
        after: Iterable[str | TaskHandle[Any]] | None = None,
        on_parent_failure: ParentFailurePolicy = "cancel",
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[TaskHandle[Any], ...]: ...
    async def chain(
        self,
        *steps: ChainStep[Any] | tuple[str, Any],
        after: Iterable[str | TaskHandle[Any]] | None = None,
        on_parent_failure: ParentFailurePolicy = "cancel",
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> tuple[TaskHandle[Any], ...]:
        """Submit steps that run one after the other, each `after` the one before
        (the first after `after`); return their handles in order, typed step by step
        for ``defn.step(input)`` steps. Steps are `ChainStep`s or ``(task_type,
        input)`` pairs. With the default ``on_parent_failure="cancel"``, a step that
        fails cancels the steps after it. Every input is validated first: one bad
        step raises and nothing is stored.
        """
        handles = await submit_chain(
            self.submit,
            self._check_step,
            steps,
            after=after,
            on_parent_failure=on_parent_failure,
            priority=priority,
            owner=owner,
            metadata=metadata,
        )
        return tuple(handles)

    def _check_step(self, task_type: str, payload: Any) -> None:
        """Raise for a chain step of an unknown type, or with a bad input."""
        definition = self.registry.get(task_type)
        if payload is not None or definition.takes_input:
            definition.validate_input(payload)

    async def batch(self, batch_id: str) -> BatchSummary:
        """Where a batch stands; raises `BatchNotFound`.

        A batch this bus submitted is followed in memory; any other (submitted by
        another process on a shared store, or released here once finished) is read
        back from the store, where its tasks carry ``metadata["batch_id"]``, for as
        long as retention keeps them. `BatchNotFound` when the store holds none of
        its tasks. The `TaskBatch` handle keeps its own final summary.
        """
        return await self._batches.find(batch_id)

    async def cancel_batch(self, batch_id: str, *, reason: str | None = None) -> int:
        """Cancel every task of the batch that has not finished, in whichever process
        runs it; return how many. `BatchNotFound` as `batch`."""
        unfinished = await self._batches.find_unfinished(batch_id)
        cancelled = 0
        # Queued ones first, so none of them starts while a running one winds down.
        for wanted in (TaskState.QUEUED, TaskState.WAITING, TaskState.RUNNING):
            for record in unfinished:
                if record.state is wanted and await self.cancel(record.id, reason=reason):
                    cancelled += 1
        return cancelled

    async def retire_types(
        self, names: list[str], *, reason: str, cancel_running: bool = False
    ) -> None:
        """Settle the tasks of removed types: queued ones fail now with `reason`;
        running ones finish, or are cancelled and awaited if `cancel_running`."""
        await self._types.retire(names, reason=reason, cancel_running=cancel_running)

    async def cancel(self, task_id: str, *, reason: str | None = None) -> bool:
        """Cancel a queued or running task; False if it had already finished.

        A queued task never starts; a running one has its handler cancelled
        (see the README for threads and processes), in whichever process runs
        it. Never retried.
        """
        return await self._access.cancel(task_id, reason)

    async def respond(self, task_id: str, value: Any) -> TaskSnapshot:
        """Answer the question a waiting task asked (``ctx.ask``), from any process on
        its store; returns its snapshot, queued again (its handler runs from the top
        and gets the answer).

        `value` is checked against the question's model (or its stored JSON schema).
        Raises `TaskNotFound`, `TaskNotWaiting` (it asks nothing now, or was answered
        already) or `InvalidAnswer`; nothing is stored then.
        """
        return await self._inputs.respond(task_id, value)

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
    ) -> builtins.list[TaskSnapshot]:
        """Snapshots of matching tasks, oldest first, or newest first (`created_*`:
        datetime or epoch). ``dead_letter=True`` lists only dead letters: failed
        tasks, whatever the reason (`TaskSnapshot.dead_letter` says which)."""
        query = task_query(
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
        return [record.snapshot() for record in await self.store.list(query)]

    async def stats(self) -> BusStats:
        """Counts by state and by type, and the queued tasks by type and priority
        (`BusStats.queued_by_priority`). While the store cannot be reached (Redis down),
        `BusStats.store_outage` says since when and why, and the counts are the last
        ones read."""
        counts, outage = await self._stats.read()
        return BusStats(
            by_state=counts.by_state,
            by_type=counts.by_type,
            queued_by_priority=counts.queued_by_priority,
            workers=self.executor.workers,
            running=len(self.executor.running_ids),
            listener_errors=self.events.listener_errors,
            store_outage=outage,
        )

    # -- schedules ---------------------------------------------------------------

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
    ) -> Schedule:
        """Store a schedule that fires `task_type` with `input` on a `cron` expression
        (read in time zone `tz`; needs ``taskbus[cron]``) or `every` interval, and
        return it. Each fire is a normal task whose metadata names the schedule
        (``schedule_id``, ``scheduled_for``); each fires once, across every process
        on the store.

        `id` defaults to the task type (``owner/type`` with an owner). Storing an id
        again replaces the schedule, keeping its next fire time when the timing
        (cron, every, tz) is unchanged, and its paused state unless `paused` is
        given: every process may call this at start-up. `jitter` adds up to that
        many seconds of random delay to each fire. After a downtime, `misfire`
        says what to do with the fires missed: ``skip`` them (only a fire at most
        `misfire_grace` late runs), fire ``once`` for them all, or fire ``all`` (the
        latest `misfire_limit`). Raises `UnknownTaskType`, `InvalidTaskInput`, or
        `InvalidSchedule` (bad cron, time zone, interval or option); nothing is
        stored then. `BusNotRunning` outside ``async with`` (as the other changes).
        """
        return await self._schedules.add(
            task_type,
            cron=cron,
            every=every,
            tz=tz,
            input=input,
            schedule_id=id,
            jitter=jitter,
            misfire=misfire,
            misfire_limit=misfire_limit,
            misfire_grace=misfire_grace,
            priority=priority,
            owner=owner,
            metadata=metadata,
            paused=paused,
        )

    async def schedules(self, *, owner: str | None = None) -> builtins.list[Schedule]:
        """Every stored schedule (of `owner`, if given), by id."""
        return await self._schedules.list(owner)

    async def get_schedule(self, schedule_id: str) -> Schedule:
        """The stored schedule; raises `ScheduleNotFound`."""
        return await self._schedules.get(schedule_id)

    async def pause_schedule(self, schedule_id: str) -> Schedule:
        """Stop a schedule firing (in every process) until resumed; `ScheduleNotFound`."""
        return await self._schedules.pause(schedule_id)

    async def resume_schedule(self, schedule_id: str) -> Schedule:
        """Let a paused schedule fire again, from its next time after now (the fires
        missed while paused are not caught up); `ScheduleNotFound`."""
        return await self._schedules.resume(schedule_id)

    async def remove_schedule(self, schedule_id: str) -> None:
        """Delete a schedule (the tasks it fired stay); `ScheduleNotFound`."""
        await self._schedules.remove(schedule_id)

    # -- lifecycle ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._run.start(self.retention)
        self._intake.open = True
        self.shutdown_report = None
        logger.info("taskbus started with %d workers", self.executor.workers)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._intake.open = False
        try:
            await self._run.stop(self.shutdown_grace)
        finally:
            self.shutdown_report = self._run.report
        return None


def _store_lease(store: object) -> float:
    """The lease a store asks its claims to have (its ``lease`` attribute), else the
    default: 30 s, renewed every third of it."""
    lease = getattr(store, "lease", None)
    return DEFAULT_LEASE if lease is None else float(lease)


def _is_async_callable(obj: object) -> bool:
    """An async function, a partial of one, or an object whose ``__call__`` is one."""
    call = type(obj).__call__ if callable(obj) and not inspect.isroutine(obj) else None
    return inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(call)
