"""Starting and stopping a bus: open the store, recover, run the background tasks;
at the end, shut down and close them all."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskGroup

from ._bus import EventBus
from ._clock import Clock
from ._executor import TaskExecutor
from ._held import HeldTasks, expire_held
from ._leasing import LeaseKeeper
from ._lifecycle import Lifecycle
from ._queue import TaskQueue
from ._record import TaskRecord
from ._recovery import recover
from ._reports import ShutdownReport
from ._retention import RetentionPolicy, retain
from ._scheduler import Scheduler
from ._shutdown import shut_down
from ._timers import Timers
from .stores import LiveRecordStore, Store

if TYPE_CHECKING:
    from ._registry import TaskRegistry

__all__ = ["BusRun"]


class BusRun:
    """The background tasks of one bus between start and stop, and the store's session."""

    def __init__(
        self,
        *,
        store: Store,
        registry: TaskRegistry,
        lifecycle: Lifecycle,
        queue: TaskQueue,
        executor: TaskExecutor,
        events: EventBus,
        timers: Timers,
        clock: Clock,
        held: HeldTasks,
        fail_expired: Callable[[TaskRecord], Awaitable[object]],
        leases: LeaseKeeper | None,
        waiting: Callable[[], list[TaskRecord]] | None = None,
        scheduler: Scheduler | None = None,
        background: tuple[Callable[[], Coroutine[Any, Any, None]], ...] = (),
    ) -> None:
        self._store = store
        self._registry = registry
        self._lifecycle = lifecycle
        self._queue = queue
        self._executor = executor
        self._events = events
        self._timers = timers
        self._clock = clock
        self._held = held
        self._fail_expired = fail_expired
        self._leases = leases
        self._waiting = waiting
        self._scheduler = scheduler
        #: More tasks to run between start and stop (the input desk's deadlines).
        self._background = background
        self._durable = not isinstance(store, LiveRecordStore)  # keeps tasks for the next start
        self._exit_stack: AsyncExitStack | None = None
        self._task_group: TaskGroup | None = None
        #: What the last stop did; None until a stop has shut the tasks down.
        self.report: ShutdownReport | None = None

    def keep_running(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `task` from each start to its stop, beginning now if the bus runs."""
        self._background += (task,)
        if self._task_group is not None:
            self._task_group.start_soon(task)

    async def start(self, retention: RetentionPolicy | None) -> None:
        """Open the store, recover what a previous run left, start the background tasks."""
        if self._exit_stack is not None:
            raise RuntimeError("this TaskBus is already running")
        async with AsyncExitStack() as stack:
            await self._store.open()
            stack.push_async_callback(self._store.close)
            # Recovery happens before the task group exists, so a store error
            # reaches the caller as itself, not wrapped in an exception group.
            await self._recover()
            tg = await stack.enter_async_context(anyio.create_task_group())
            if self._leases is not None:
                tg.start_soon(self._leases.run)
            tg.start_soon(self._timers.run)
            self._executor.prepare()
            tg.start_soon(self._executor.run)
            self._events.attach(tg)
            self._executor.schedule_delayed()
            if retention is not None:
                tg.start_soon(retain, self._store, self._clock, retention)
            tg.start_soon(expire_held, self._held, self._clock, self._fail_expired)
            if self._scheduler is not None:
                tg.start_soon(self._scheduler.run)
            for task in self._background:
                tg.start_soon(task)
            self._task_group = tg
            self._exit_stack = stack.pop_all()
        self.report = None

    async def _recover(self) -> None:
        if self._leases is not None:
            if self._leases.claiming:  # what a crash left running here runs again
                await self._leases.reap_now()
            return
        await recover(
            await self._store.recover(),
            registry=self._registry,
            lifecycle=self._lifecycle,
            queue=self._queue,
            clock=self._clock,
        )

    async def stop(self, grace: float) -> None:
        """Shut down (see `shut_down`), keep the report, then close the tasks and the store."""
        stack, tg = self._exit_stack, self._task_group
        assert stack is not None and tg is not None
        if self._leases is not None:
            self._leases.stop_claiming()
        try:
            with anyio.CancelScope(shield=True):
                self.report = await shut_down(
                    self._executor,
                    self._queue,
                    self._held,
                    self._lifecycle,
                    self._events,
                    grace=grace,
                    durable=self._durable,
                    hand_back=self._hand_back if self._leases is not None else None,
                    waiting=self._waiting,
                )
            tg.cancel_scope.cancel()
        finally:
            self._exit_stack = self._task_group = None
            # The body's own exception is re-raised as it is (never wrapped in an
            # exception group); only failures of the bus's tasks come from here.
            await stack.__aexit__(None, None, None)

    async def _hand_back(self, records: list[TaskRecord]) -> None:
        """Give back to the store the tasks claimed here that never started."""
        for record in records:
            await self._lifecycle.hand_back_unstarted(record)
