"""`TaskExecutor`: a fixed pool of workers that run handlers from the queue.

Each worker is one long-lived task holding a cancel scope across many jobs, so
a job costs no cancel scope and no timeout context of its own: timeouts are
entries in the shared `Timers` heap, and cancelling a running job cancels its
worker's scope, after which the worker settles the job and opens a new scope.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_process
import anyio.to_thread
from pydantic import ValidationError

from ._clock import Clock
from ._context import TaskContext, _current
from ._dependencies import AFTER_KEY, Parents, policy_of, read_parents
from ._errors import (
    ErrorType,
    FatalError,
    InvalidTaskInput,
    TaskCancellation,
    TaskTimeoutError,
    UnknownTaskType,
    UnstorableValue,
)
from ._held import HeldTasks
from ._input import AwaitingInput, InputQuestion
from ._lifecycle import Lifecycle, error_info
from ._process_run import run_in_process
from ._queue import TaskQueue
from ._rate_gate import RateGate, rate_reason
from ._record import TaskRecord
from ._retry import classify, next_delay
from ._snapshot import TaskSnapshot
from ._states import TaskState
from ._task_keys import concurrency_key_of
from ._thread_run import ThreadRun
from ._timers import TimerHandle, Timers
from ._tracing import Interruption, Tracing
from .stores._codec import check_storable

if TYPE_CHECKING:
    from ._registry import TaskDefinition, TaskRegistry

__all__ = ["TaskExecutor", "default_thread_limit"]

logger = logging.getLogger("taskbus.executor")

_YIELD_SLICE = 0.002
#: Seconds a task waits when its rate limit's storage could not be reached.
_RATE_CHECK_RETRY = 1.0


def default_thread_limit() -> int:
    """Sync handlers on threads at once when `thread_limit` is not given: CPUs + 4,
    between 4 and 32 (the formula of ``concurrent.futures.ThreadPoolExecutor``)."""
    return max(4, min(32, (os.cpu_count() or 1) + 4))


class _Interrupt:
    __slots__ = ("reason", "requeue", "timeout")

    def __init__(self, reason: str, timeout: float | None = None, *, requeue: bool = False) -> None:
        self.reason = reason
        self.timeout = timeout
        #: Hand the task back to the queue instead of settling it (a durable stop).
        self.requeue = requeue


class _Worker:
    __slots__ = ("ctx", "deadline", "interrupt", "job", "scope", "settling", "thread", "timeout")

    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None
        self.job: TaskRecord | None = None
        self.ctx: TaskContext | None = None
        self.interrupt: _Interrupt | None = None
        self.settling = False
        self.deadline = math.inf
        self.timeout: float | None = None
        self.thread: ThreadRun | None = None


class TaskExecutor:
    """Runs queued tasks on `workers` worker tasks until told to stop.

    Sync handlers run on at most `thread_limit` threads at once, counting threads
    that outlive a cancelled attempt; process handlers on anyio's process limiter.
    """

    def __init__(
        self,
        *,
        queue: TaskQueue,
        registry: TaskRegistry,
        lifecycle: Lifecycle,
        timers: Timers,
        clock: Clock,
        workers: int,
        thread_limit: int | None = None,
        held: HeldTasks | None = None,
    ) -> None:
        if workers < 0:
            raise ValueError(f"workers must be at least 0, not {workers}")
        if thread_limit is None:
            thread_limit = default_thread_limit()
        if type(thread_limit) is not int or thread_limit < 1:
            raise ValueError(f"thread_limit must be an int >= 1, not {thread_limit!r}")
        self.workers = workers
        self._queue = queue
        self._registry = registry
        self._lifecycle = lifecycle
        self._timers = timers
        self._clock = clock
        self._held = held if held is not None else HeldTasks(grace=None)
        self._idle: deque[anyio.Event] = deque()
        self._running: dict[str, _Worker] = {}
        self._stopping = False
        self._active = 0
        self._all_stopped = anyio.Event()
        #: Held from a sync handler's start until its thread really returns.
        self._thread_limiter = anyio.CapacityLimiter(thread_limit)
        #: anyio's own limiter for the calls: ours above already bounds them.
        self._thread_calls = anyio.CapacityLimiter(math.inf)
        self._watchdog: TimerHandle | None = None
        self._due_timer: TimerHandle | None = None
        #: Called when a worker becomes idle (a shared store's claims follow it).
        self.on_idle: Callable[[], None] | None = None
        #: Retries wait in the store, not here (it hands them to any worker).
        self.requeue_locally = lifecycle.leases is None
        #: Takes a rate slot for each task of a type with a rate, before it starts.
        self.rates = RateGate(lifecycle.store)
        #: Told the seconds until a task handed back to a shared store for its rate
        #: may start (the store's claims wake then).
        self.on_deferred: Callable[[float], None] | None = None
        #: Wraps each attempt in a span (`taskbus.otel`); None costs one check a task.
        self.tracing: Tracing | None = None

    @property
    def running_ids(self) -> list[str]:
        return list(self._running)

    @property
    def idle_workers(self) -> int:
        """Workers waiting for work now."""
        return len(self._idle)

    def resize(self, workers: int) -> None:
        """Run `workers` workers from the next start on (0: run nothing)."""
        if type(workers) is not int or workers < 0:
            raise ValueError(f"workers must be an int >= 0, not {workers!r}")
        if self._active:
            raise RuntimeError("cannot change the number of workers while they run")
        self.workers = workers

    @property
    def thread_limit(self) -> int:
        """Sync handlers running on threads at once, at most."""
        return int(self._thread_limiter.total_tokens)

    def prepare(self) -> None:
        """Reset for a (re)start; call before `run` is scheduled."""
        self._stopping = False
        self._all_stopped = anyio.Event()
        self._active = self.workers
        if not self.workers:  # a client of a shared store: it runs nothing
            self._all_stopped.set()

    async def run(self) -> None:
        """Serve the queue until `stop_intake()`; returns when every worker is done."""
        async with anyio.create_task_group() as tg:
            for _ in range(self.workers):
                tg.start_soon(self._work, _Worker())

    def notify(self, count: int = 1) -> None:
        """Wake up to `count` idle workers: work may be ready."""
        idle = self._idle
        while count > 0 and idle:
            idle.popleft().set()
            count -= 1

    def stop_intake(self) -> None:
        """Workers finish their current task and take no new one."""
        self._stopping = True
        self.notify(len(self._idle))

    async def wait_stopped(self) -> None:
        await self._all_stopped.wait()

    def cancel_running(self, task_id: str, reason: str, *, requeue: bool = False) -> bool:
        """Interrupt a running task; False if it is not running here or already settling.

        With `requeue`, the task goes back to the queue in the store, its attempt not
        counted, instead of ending cancelled (a graceful stop on a durable store).
        """
        worker = self._running.get(task_id)
        if worker is None:
            return False
        return self._interrupt(worker, _Interrupt(reason, requeue=requeue))

    def _interrupt(self, worker: _Worker, interrupt: _Interrupt) -> bool:
        if worker.settling:
            return False
        pending = worker.interrupt
        if pending is not None:
            # A cancel that lands while the attempt times out wins: never retried.
            if pending.timeout is not None and interrupt.timeout is None:
                worker.interrupt = interrupt
                return True
            return False
        if worker.scope is None:
            return False
        worker.interrupt = interrupt
        if worker.ctx is not None:
            worker.ctx._request_cancel(interrupt.reason)
        worker.scope.cancel()
        return True

    # One timer entry watches every running task's deadline: arming a timer per
    # task cost more than the task itself.
    def _arm_watchdog(self, deadline: float) -> None:
        watchdog = self._watchdog
        if watchdog is None or watchdog.cancelled or deadline < watchdog.when:
            if watchdog is not None:
                watchdog.cancel()
            self._watchdog = self._timers.call_at(deadline, self._watch)

    def _watch(self) -> None:
        self._watchdog = None
        now = self._clock.monotonic()
        earliest = math.inf
        for worker in list(self._running.values()):
            if worker.deadline <= now and worker.timeout is not None:
                timeout = worker.timeout
                self._interrupt(worker, _Interrupt(f"timed out after {timeout:g}s", timeout))
            elif worker.deadline < earliest:
                earliest = worker.deadline
        if earliest < math.inf:
            self._arm_watchdog(earliest)

    def schedule_delayed(self) -> None:
        """Make sure a timer is armed for the queue's earliest not-before time."""
        due = self._queue.next_due()
        if due is None:
            return
        timer = self._due_timer
        if timer is None or timer.cancelled or due < timer.when:
            if timer is not None:
                timer.cancel()
            self._due_timer = self._timers.call_at(due, self._on_due)

    def _on_due(self) -> None:
        self._due_timer = None
        self.notify(self._queue.promote_due(self._clock.monotonic()))
        self.schedule_delayed()

    async def _work(self, worker: _Worker) -> None:
        try:
            while True:
                with anyio.CancelScope() as scope:
                    worker.scope = scope
                    await self._serve(worker)
                worker.scope = None
                if worker.job is not None:
                    await self._settle_interrupted(worker, worker.job)
                elif self._stopping:
                    return
        finally:
            self._active -= 1
            if self._active == 0:
                self._all_stopped.set()

    async def _serve(self, worker: _Worker) -> None:
        pop = self._queue.pop  # delayed tasks are promoted by the due timer
        last_yield = time.monotonic()
        while not self._stopping:
            record = pop()
            if record is None:
                await self._wait_for_work()
                last_yield = time.monotonic()
                continue
            worker.job = record
            rated = self._registry.find(record.type)
            if (
                rated is not None
                and rated.rate_item is not None
                and not await self._admitted(worker, record, rated)
            ):
                continue  # its rate's window is full: back in the queue, unstarted
            if self.tracing is None:
                await self._execute(worker, record)
            else:
                await self._traced(worker, record, self.tracing)
            if worker.interrupt is not None:
                return
            # Handlers that never suspend would otherwise starve the loop; yielding
            # after each of them costs as much as the task itself, so yield once
            # the worker has held the loop for a slice.
            if time.monotonic() - last_yield > _YIELD_SLICE:
                await anyio.lowlevel.checkpoint()
                last_yield = time.monotonic()

    async def _traced(self, worker: _Worker, record: TaskRecord, tracing: Tracing) -> None:
        with tracing.attempt(record):
            try:
                await self._execute(worker, record)
            finally:
                interrupt = worker.interrupt
                if interrupt is not None:
                    kind: Interruption = (
                        "handed-back"
                        if interrupt.requeue
                        else "cancelled"
                        if interrupt.timeout is None
                        else "timeout"
                    )
                    tracing.interrupted(record, kind, interrupt.reason)

    async def _wait_for_work(self) -> None:
        event = anyio.Event()
        self._idle.append(event)
        if self.on_idle is not None:
            self.on_idle()
        try:
            await event.wait()
        finally:
            if not event.is_set():
                self._idle.remove(event)

    async def _execute(self, worker: _Worker, record: TaskRecord) -> None:
        definition = self._registry.find(record.type)
        parents = None
        if definition is None or record.metadata is not None:
            ready = await self._prepare(worker, record, definition)
            if ready is None:  # held, failed, or settled by its parents' outcome
                return
            definition, parents = ready
        self._running[record.id] = worker
        lifecycle = self._lifecycle
        if lifecycle.live:
            lifecycle.mark_started(record)
        else:
            await lifecycle.started(record)
        ctx = worker.ctx = TaskContext(lifecycle, record, definition.run_in == "thread", parents)
        self._watch_deadline(worker, record, definition.timeout)
        failure: Exception | None = None
        asked: InputQuestion | None = None
        result: Any = None
        token = _current.set(ctx)
        try:
            if definition.on_loop_with_context_only and not record.loaded:
                result = await definition.handler(ctx)  # the common case, without a helper
            else:
                result = await self._call(definition, ctx, record)
        except Exception as exc:  # noqa: BLE001 - the executor boundary: every failure is settled
            failure = exc
        except (TaskCancellation, AwaitingInput) as exc:
            failure, asked = self._signalled(worker, definition, exc)
        except anyio.get_cancelled_exc_class():
            failure = self._stray_cancellation(worker, definition)
            if failure is None:
                raise  # a real cancellation: ours, or the bus shutting down
        finally:
            _current.reset(token)
        worker.deadline = math.inf
        if worker.interrupt is not None or asked is not None:
            await self._set_aside(worker, record, asked)
            return
        if failure is None and (definition.checks_output or not lifecycle.live):
            result, failure = self._checked_result(definition, record, result)
        worker.settling = True
        if failure is not None:
            await self._settle_failure(record, definition, failure)
        elif lifecycle.live:
            lifecycle.mark_completed(record, result)
        else:
            await lifecycle.completed(record, result)
        self._release(worker, record)

    def _call(
        self, definition: TaskDefinition[Any, Any], ctx: TaskContext, record: TaskRecord
    ) -> Awaitable[Any]:
        """The handler's awaitable (a plain call: no coroutine frame of its own)."""
        if record.loaded and definition.takes_input:
            record.input = _stored_input(definition, record)
        if definition.run_in != "loop":
            return self._invoke_off_loop(definition, ctx, record)
        handler = definition.handler
        if definition.context_only:
            return handler(ctx)  # type: ignore[no-any-return]
        if definition.takes_context:
            if definition.takes_input:
                return handler(ctx, record.handler_input())  # type: ignore[no-any-return]
            return handler(ctx)  # type: ignore[no-any-return]
        return handler(record.handler_input()) if definition.takes_input else handler()  # type: ignore[no-any-return]

    async def _admitted(
        self, worker: _Worker, record: TaskRecord, definition: TaskDefinition[Any, Any]
    ) -> bool:
        """Take the task's rate slot; if its window is full, put it back unstarted
        (attempt not counted, no task-started) until the window has room: False."""
        reason = rate_reason(definition, record)
        try:
            wait = await self.rates.admit(definition, record)
        except Exception as exc:  # noqa: BLE001 - its storage failed: the task waits, the worker goes on
            wait = _RATE_CHECK_RETRY
            reason = f"{reason}: the limit could not be checked ({type(exc).__name__}: {exc})"
            logger.error("%s %s: %s; trying again in %gs", record.id, record.type, reason, wait)
        if wait is not None and record.state is TaskState.QUEUED:
            record.not_before = self._clock.now() + wait
            record.waiting_for = reason
            logger.info(
                "%s %s: %s; not before %.3fs from now",
                record.id,
                record.type,
                record.waiting_for,
                wait,
            )
            self._release(worker, record)
            if self.requeue_locally:
                self._queue.push(record, self._clock.monotonic(), wait)
                self.schedule_delayed()
            else:
                await self._lifecycle.hand_back_unstarted(record)
                if self.on_deferred is not None:
                    self.on_deferred(wait)
            return False
        if record.state is not TaskState.QUEUED:  # cancelled while it waited for the slot
            self._release(worker, record)
            return False
        return True

    def _signalled(
        self,
        worker: _Worker,
        definition: TaskDefinition[Any, Any],
        exc: TaskCancellation | AwaitingInput,
    ) -> tuple[Exception | None, InputQuestion | None]:
        """(failure, question) of a handler that stopped by a signal: it asked for input
        (`ctx.ask`), or it stopped as cancelled."""
        if isinstance(exc, AwaitingInput):
            return None, exc.question
        if worker.interrupt is not None:
            return None, None  # settled as the interrupt says
        return FatalError(f"{definition.name} raised {exc!r} without being cancelled"), None

    async def _set_aside(
        self, worker: _Worker, record: TaskRecord, asked: InputQuestion | None
    ) -> None:
        """End a run that was interrupted (settled by `_work`), or that asked for input:
        the task waits in the store, holding no worker, until its answer queues it
        again (see `_input`)."""
        if worker.interrupt is not None or asked is None:
            return
        worker.settling = True
        await self._lifecycle.waiting(record, asked)
        self._release(worker, record)

    async def _prepare(
        self,
        worker: _Worker,
        record: TaskRecord,
        definition: TaskDefinition[Any, Any] | None,
    ) -> tuple[TaskDefinition[Any, Any], Parents | None] | None:
        """What a task of an unknown type, or with metadata, needs before it starts:
        None if it does not start (held or failed as unknown, or settled by its
        parents' outcome); else its definition and, for a child, its parents. Until
        it starts, a cancel finds it queued and cancels it as such."""
        if definition is None:
            await self._unknown_type(worker, record)
            return None
        metadata = record.metadata
        if metadata is None or AFTER_KEY not in metadata:
            return definition, None
        parents = await self._parents_or_settle(worker, record)
        return None if parents is None else (definition, parents)

    async def _parents_or_settle(self, worker: _Worker, record: TaskRecord) -> Parents | None:
        """The parents of a child about to start; or, if one did not complete and the
        child's policy says so, None once the child is cancelled or failed."""
        lifecycle = self._lifecycle
        parents = await read_parents(
            lifecycle.store, record, self._parent_snapshot, lifecycle.finals
        )
        if record.state is not TaskState.QUEUED:  # cancelled while its parents were read
            self._release(worker, record, running=False)
            return None
        policy = policy_of(record)
        if parents.blocker is None or policy == "run":
            return parents
        worker.settling = True
        if policy == "cancel":
            await lifecycle.cancelled(record, parents.blocker)
        else:
            exc = FatalError(parents.blocker)
            await lifecycle.failed(record, error_info(exc, ErrorType.FATAL))
        self._release(worker, record, running=False)
        return None

    def _parent_snapshot(self, record: TaskRecord) -> TaskSnapshot:
        """A parent's snapshot, its result in its handler's type when read back."""
        snapshot = record.snapshot()
        definition = self._registry.find(record.type)
        if (
            record.loaded
            and record.state is TaskState.COMPLETED
            and definition is not None
            and definition.checks_output
        ):
            try:
                result = definition.output_adapter.validate_python(record.result)
            except ValidationError:  # stored by another version of the type: as JSON
                return snapshot
            snapshot = snapshot.model_copy(update={"result": result})
        return snapshot

    async def _unknown_type(self, worker: _Worker, record: TaskRecord) -> None:
        if record.type in self._held.removed:
            await self._fail_unknown(worker, record)
        else:
            self._hold_unknown(worker, record)

    def _checked_result(
        self, definition: TaskDefinition[Any, Any], record: TaskRecord, result: Any
    ) -> tuple[Any, Exception | None]:
        if definition.checks_output:
            result, failure = _checked_output(definition, result)
            if failure is not None:
                return None, failure
        if not self._lifecycle.live:
            # A result the store cannot encode fails this task alone, with a clear error.
            try:
                check_storable(result, f"the result of task {record.id} ({record.type})")
            except UnstorableValue as exc:
                return None, FatalError(str(exc))
        return result, None

    async def _fail_unknown(self, worker: _Worker, record: TaskRecord) -> None:
        worker.settling = True
        exc = UnknownTaskType(record.type, self._registry.types())
        await self._lifecycle.failed(record, error_info(exc, ErrorType.FATAL))
        self._release(worker, record)

    def _hold_unknown(self, worker: _Worker, record: TaskRecord) -> None:
        self._held.hold(record, self._clock.monotonic())
        self._release(worker, record)

    def _watch_deadline(self, worker: _Worker, record: TaskRecord, timeout: float | None) -> None:
        if timeout is None:
            return
        worker.timeout = timeout
        started = record.run_clock  # set as the attempt started
        worker.deadline = deadline = (
            started if started is not None else self._clock.monotonic()
        ) + timeout
        watchdog = self._watchdog
        if watchdog is None or deadline < watchdog.when:
            self._arm_watchdog(deadline)

    def _stray_cancellation(
        self, worker: _Worker, definition: TaskDefinition[Any, Any]
    ) -> Exception | None:
        """A failure for a cancellation nobody requested, or None for a real one."""
        if worker.interrupt is not None or anyio.current_effective_deadline() == -math.inf:
            return None
        # asyncio lets a handler leak the CancelledError of something it awaited;
        # that is the handler's failure, not a reason to stop the worker.
        return FatalError(f"{definition.name} raised a cancellation nobody requested")

    async def _invoke_off_loop(
        self, definition: TaskDefinition[Any, Any], ctx: TaskContext, record: TaskRecord
    ) -> Any:
        args = _arguments(definition, ctx, record)
        if definition.run_in == "thread":
            run = self._track_thread(ctx)
            await self._thread_limiter.acquire_on_behalf_of(run)
            run.holds_thread = True
            return await anyio.to_thread.run_sync(
                partial(_call_in_thread, definition, ctx, args, run),
                abandon_on_cancel=True,
                limiter=self._thread_calls,
            )
        handler = definition.handler
        if self.tracing is not None:  # the handler runs in its attempt's trace context
            handler = self.tracing.in_process(handler)
        if definition.takes_context:
            return await run_in_process(handler, ctx, args[1:])
        return await anyio.to_process.run_sync(handler, *args, cancellable=True)

    def _track_thread(self, ctx: TaskContext) -> ThreadRun:
        worker = self._running[ctx.task_id]
        worker.thread = run = ThreadRun()
        return run

    async def _settle_failure(
        self, record: TaskRecord, definition: TaskDefinition[Any, Any], exc: BaseException
    ) -> None:
        options = definition.options
        error_type = classify(exc, retry_on=options.retry_on, fatal_on=options.fatal_on)
        info = error_info(exc, error_type)
        delay = next_delay(definition.retrying, record.attempt, exc)
        if self.tracing is not None:
            self.tracing.failed(record, exc, delay)
        if delay is None:
            await self._lifecycle.failed(record, info)
            return
        await self._lifecycle.retrying(record, delay, info)
        if self.requeue_locally:
            self._queue.push(record, self._clock.monotonic(), delay)
            self.schedule_delayed()

    async def _settle_interrupted(self, worker: _Worker, record: TaskRecord) -> None:
        interrupt = worker.interrupt
        assert interrupt is not None
        worker.settling = True
        definition = self._registry.find(record.type)
        if interrupt.requeue:
            await self._lifecycle.handed_back(record, interrupt.reason)
        elif interrupt.timeout is not None and definition is not None:
            await self._settle_failure(record, definition, TaskTimeoutError(interrupt.reason))
        else:
            await self._lifecycle.cancelled(record, interrupt.reason)
        thread = worker.thread
        if thread is not None and thread.abandon():
            # Settled, but the thread still runs: hold the worker and the type's slot.
            self._forget_running(worker, record)
            await thread.returned.wait()
            self._release(worker, record, running=False)
            return
        self._release(worker, record)

    def _forget_running(self, worker: _Worker, record: TaskRecord) -> None:
        # A retry of the same task may be running on another worker by now.
        if self._running.get(record.id) is worker:
            del self._running[record.id]

    def _release(self, worker: _Worker, record: TaskRecord, *, running: bool = True) -> None:
        if running:
            self._running.pop(record.id, None)
        thread = worker.thread
        if thread is not None and thread.holds_thread:
            thread.holds_thread = False
            self._thread_limiter.release_on_behalf_of(thread)
        worker.thread = None
        worker.job = None
        worker.ctx = None
        worker.interrupt = None
        worker.settling = False
        worker.deadline = math.inf
        worker.timeout = None
        unblocked = self._queue.release(record.type, concurrency_key_of(record))
        if unblocked:
            self.notify(unblocked)


def _checked_output(
    definition: TaskDefinition[Any, Any], result: Any
) -> tuple[Any, Exception | None]:
    try:
        return definition.validate_output(result), None
    except ValidationError as exc:
        return None, FatalError(
            f"{definition.name} returned a value that does not match its return annotation: {exc}"
        )


def _stored_input(definition: TaskDefinition[Any, Any], record: TaskRecord) -> Any:
    """Input read back from a store, validated into the handler's model (once)."""
    try:
        value = definition.validate_input(record.input)
    except InvalidTaskInput as exc:
        raise FatalError(
            f"the stored input of task {record.id} does not fit {definition.name}'s "
            f"input model: {exc}"
        ) from None
    return value


def _arguments(
    definition: TaskDefinition[Any, Any], ctx: TaskContext, record: TaskRecord
) -> tuple[Any, ...]:
    if definition.takes_context:
        return (ctx, record.handler_input()) if definition.takes_input else (ctx,)
    return (record.handler_input(),) if definition.takes_input else ()


def _call_in_thread(
    definition: TaskDefinition[Any, Any], ctx: TaskContext, args: Any, run: ThreadRun
) -> Any:
    if not run.begin():  # cancelled before the thread picked it up
        return None
    token = _current.set(ctx)
    try:
        return definition.handler(*args)
    finally:
        _current.reset(token)
        run.finished()
        if ctx.cancelled:
            logger.info(
                "thread of task %s (%s) returned after it was %s; its outcome is discarded",
                ctx.task_id,
                ctx.task_type,
                ctx._cancel_reason,
            )
