"""`Lifecycle`: every state change of a task, in one place.

Each method changes the record (the transition table is enforced), tells the
store, wakes whoever awaits the task, and publishes the event only if someone
listens. Final transitions happen at most once per task.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from pydantic import TypeAdapter

from ._asking import input_required_event, start_waiting
from ._bus import EventBus
from ._clock import Clock
from ._dependencies import RecentFinals
from ._errors import ErrorType, StoreError, TaskError
from ._events import (
    CancelRequested,
    Event,
    TaskCancelled,
    TaskCompleted,
    TaskEvent,
    TaskFailed,
    TaskInputRequired,
    TaskProgress,
    TaskQueued,
    TaskRetrying,
    TaskStarted,
    build_trusted,
)
from ._figures import Figures
from ._input import InputQuestion
from ._progress import ProgressDebouncer, estimate_remaining
from ._record import TaskRecord, new_task_id
from ._snapshot import ErrorInfo
from ._states import FINAL_STATES, TaskState
from ._timers import Timers
from ._tracing import Tracing
from ._transition_log import (
    log_final,
    log_handed_back,
    log_queued,
    log_retrying,
    log_started,
    log_waiting,
)
from .stores._base import EventBroker, FinalStateWatcher, LiveRecordStore, TaskStore

if TYPE_CHECKING:
    from .stores import Store

__all__ = ["Lifecycle", "error_info", "final_event"]


class _Estimated(Protocol):
    """What task-queued says of a task's type (a `TaskDefinition` is one)."""

    @property
    def estimated_duration(self) -> float | None: ...


logger = logging.getLogger("taskbus.lifecycle")  # the transition lines: `_transition_log`

_TRACEBACK_LIMIT = 8192
_PROGRESS = "task-progress"


def error_info(exc: BaseException, error_type: ErrorType) -> ErrorInfo:
    """Describe an exception for a record: message, class, bounded traceback."""
    text = "".join(traceback.format_exception(exc))
    message = str(exc) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause) not in message:
        message = f"{message} (caused by {type(cause).__name__}: {cause})"
    return ErrorInfo(
        message=message,
        error_type=error_type,
        exception_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
        suggested_action=exc.suggested_action if isinstance(exc, TaskError) else None,
        traceback=text[-_TRACEBACK_LIMIT:],
    )


def final_event(record: TaskRecord) -> TaskEvent:
    """The final event of a finished record (also used to replay it)."""
    values: dict[str, Any] = {
        "task_id": record.id,
        "task_type": record.type,
        "owner": record.owner,
        "timestamp": record.finished_at,
    }
    if record.state is TaskState.COMPLETED:
        finished = record.finished_at or 0.0
        values["result"] = record.result
        values["duration"] = finished - (record.started_at or finished)
        return build_trusted(TaskCompleted, values)
    if record.state is TaskState.CANCELLED:
        values["reason"] = record.cancel_reason
        return build_trusted(TaskCancelled, values)
    if record.state is TaskState.FAILED and record.error is not None:
        error = record.error
        values["error"] = error.message
        values["error_type"] = error.error_type
        values["suggested_action"] = error.suggested_action
        values["retryable"] = error.retryable
        values["attempt_count"] = record.attempt
        return build_trusted(TaskFailed, values)
    raise ValueError(f"{record!r} has no final event")


class Lifecycle:
    """Moves records between states and tells the store, waiters and listeners."""

    def __init__(
        self,
        store: Store,
        events: EventBus,
        clock: Clock,
        timers: Timers,
        *,
        progress_interval: float = 0.1,
    ) -> None:
        self.store = store
        self.events = events
        self.clock = clock
        self.debouncer: ProgressDebouncer[TaskRecord] = ProgressDebouncer(
            clock, timers, self._publish_progress, interval=progress_interval
        )
        self._waiters: dict[str, list[anyio.Event]] = {}
        self._now = clock.now
        self._monotonic = clock.monotonic
        #: The store keeps the runtime's own record objects (`LiveRecordStore`):
        #: nothing to write on a transition, so the sync `mark_*` paths apply.
        self.live = isinstance(store, LiveRecordStore)
        self._finish_now = store.finish_now if isinstance(store, LiveRecordStore) else None
        #: Final states written but not yet durable, announced when the store says so.
        self._unannounced: dict[str, TaskRecord] = {}
        self._watcher = store if isinstance(store, FinalStateWatcher) else None
        if self._watcher is not None:
            self._watcher.watch_final(self._final_durable)
        #: A store that logs events numbers them as they commit, and delivers them.
        self.log = store if isinstance(store, EventBroker) else None
        #: A store that holds claims (leases): this bus claims from it as `worker_id`.
        self.leases = store if isinstance(store, TaskStore) else None
        self.worker_id = new_worker_id()
        #: Called with (task_id, reason) when a cancel request reaches the log.
        self.on_cancel_request: Callable[[str, str | None], None] | None = None
        #: Called when the log says a task was queued (work may be ready).
        self.on_work: Callable[[str], None] | None = None
        #: Called when the log says a task ended (a per-type slot may be free).
        self.on_slot_freed: Callable[[], None] | None = None
        #: Called with a task's id once its final state is announced (here, or by the
        #: log for any process): children waiting for it may be ready.
        self.on_final: Callable[[str], None] | None = None
        #: Keeps the final records announced here, for the children that read them.
        self.finals: RecentFinals | None = None
        #: Called with the parent ids of a child whose task-queued the log delivers.
        self.on_children: Callable[[list[Any]], None] | None = None
        #: The model of each question asked here (task id: key, adapter), so that an
        #: answer given in this process is validated by it, not only its JSON schema.
        self.asked_models: dict[str, tuple[str, TypeAdapter[Any]]] = {}
        #: Called with each task-input-required (of any process on a logged store).
        self.on_input_required: Callable[[TaskInputRequired], None] | None = None
        #: Whether an event of that name must be built (a log keeps every event).
        self.wants: Callable[[str], bool] = events.wants
        #: Publish an event that changes no task (progress, a batch's).
        self.emit: Callable[[Event], None] = events.publish
        #: Told of each (debounced) progress report, for the attempt's span (`taskbus.otel`).
        self.tracing: Tracing | None = None
        #: Counts attempts and outcomes, when metrics are on (`taskbus._figures`).
        self.figures: Figures | None = None
        if self.log is not None:
            events.numbering = False
            self.log.deliver_events(self._logged)
            self.wants = _always
            self.emit = self.log.log_event

    def _children_queued(self, event: Event) -> None:
        """A task-queued from the log: if it names parents, tell the parents' watch."""
        assert isinstance(event, TaskQueued) and self.on_children is not None
        after = event.metadata.get("after")
        if after and isinstance(after, list):
            self.on_children(after)

    def _logged(self, event: Event) -> None:
        """An event the store's log delivers (of this process or another), in id order."""
        name = event.name
        if name == "cancel-requested":
            if self.on_cancel_request is not None:
                assert isinstance(event, CancelRequested)
                self.on_cancel_request(event.task_id, event.reason)
            return
        if event.final and isinstance(event, TaskEvent):
            self._wake(event.task_id)  # a task another process ran, say
            if self.on_final is not None:
                self.on_final(event.task_id)
        if name == "task-queued" and self.on_children is not None:
            self._children_queued(event)
        if name in _WORK_NAMES:
            if self.on_work is not None:
                assert isinstance(event, TaskEvent)
                self.on_work(event.task_id)
        elif name == "task-input-required":
            if self.on_input_required is not None:
                assert isinstance(event, TaskInputRequired)
                self.on_input_required(event)
            if self.on_slot_freed is not None:  # a waiting task holds no per-type slot
                self.on_slot_freed()
        elif name == "task-input-received" and self.asked_models:
            assert isinstance(event, TaskEvent)
            self.asked_models.pop(event.task_id, None)  # answered, here or elsewhere
        elif event.final and self.on_slot_freed is not None:
            self.on_slot_freed()
        self.events.publish(event)

    async def queued(self, record: TaskRecord, definition: _Estimated) -> None:
        if self.log is not None:
            # Logged first: a worker may claim and start it before the add returns.
            log_queued(record)
            await self.log.add(record, event=_queued_event(record, definition))
            return
        await self.store.add(record)
        self.announce_queued(record, definition)

    def queued_event(self, record: TaskRecord, definition: _Estimated) -> Event:
        """The task-queued event of a record a store is about to add with it (logged)."""
        log_queued(record)
        return _queued_event(record, definition)

    def announce_queued(self, record: TaskRecord, definition: _Estimated) -> None:
        """Publish task-queued (the record is already stored)."""
        log_queued(record)
        if self.events.wants("task-queued"):
            self.events.publish(_queued_event(record, definition))

    async def started(self, record: TaskRecord) -> None:
        if self.leases is not None:  # claimed already, by `acquire`
            self.mark_started(record, publish=False)
            self.leases.log_event(_started_event(record))
            return
        if self.log is None:
            self.mark_started(record)
            await self.store.claim(record)
            return
        self.mark_started(record, publish=False)
        await self.log.claim(record, event=_started_event(record))

    def mark_started(self, record: TaskRecord, *, publish: bool = True) -> None:
        """Move to running and publish task-started (unless a store's log does; the
        store is told by `started`)."""
        record.move(TaskState.RUNNING)
        record.attempt += 1
        record.started_at = self._now()
        record.run_clock = self._monotonic()
        if self.figures is not None:
            self.figures.started(record)
        record.not_before = record.waiting_for = None
        log_started(record)
        if publish and self.events.wants("task-started"):
            self.events.publish(_started_event(record))

    def progress(
        self,
        record: TaskRecord,
        percent: float | None,
        message: str | None,
        current: int | None,
        total: int | None,
    ) -> None:
        """Record a progress report; the event goes through the debouncer."""
        if record.state is not TaskState.RUNNING:
            return
        if percent is not None:
            record.progress = percent
        if message is not None:
            record.message = message
        if current is not None:
            record.current = current
        if total is not None:
            record.total = total
        if record.progress is not None:
            record.eta = estimate_remaining(record.progress, record.run_clock, self._monotonic())
        if self.wants(_PROGRESS) or self.tracing is not None:
            self.debouncer.update(record)

    def _publish_progress(self, record: TaskRecord) -> None:
        if record.state is not TaskState.RUNNING:
            return
        if self.tracing is not None:
            self.tracing.progress(record)
        if not self.wants(_PROGRESS):
            return
        event = _progress_event(record, self.clock.now())
        if self.leases is not None:
            self.leases.report_progress(self.worker_id, record, event)
        else:
            self.emit(event)

    async def retrying(self, record: TaskRecord, delay: float, info: ErrorInfo) -> None:
        now = self._requeue(record)
        if self.figures is not None:
            self.figures.stopped(record, now)
            self.figures.retried(record, info.error_type.value)
        record.not_before = now + delay
        record.error = info
        event = None
        if self.wants("task-retrying"):
            event = build_trusted(
                TaskRetrying,
                {
                    "task_id": record.id,
                    "task_type": record.type,
                    "owner": record.owner,
                    "timestamp": now,
                    "attempt": record.attempt,
                    "delay": delay,
                    "error": info.message,
                    "error_type": info.error_type,
                },
            )
        if self.leases is not None:
            self._release_soon(record, event, partial(self._retry_released, record))
        elif self.log is not None:
            await self.log.update(record, event=event)
        else:
            await self.store.update(record)
            if event is not None:
                self.events.publish(event)
        log_retrying(record, delay, info)

    def _requeue(self, record: TaskRecord) -> float:
        """Move a running record back to queued, its progress cleared; return now."""
        self.debouncer.finish(record.id)
        record.move(TaskState.QUEUED)
        record.queued_at = now = self._now()
        record.progress = record.current = record.total = record.eta = None
        record.message = None
        return now

    async def handed_back(self, record: TaskRecord, reason: str) -> None:
        """Put a running task back in the store's queue, its attempt not counted (the
        bus is stopping; a durable store runs it again on the next start)."""
        now = self._requeue(record)
        if self.figures is not None:
            self.figures.stopped(record, now, counted=False)
        record.attempt -= 1
        record.started_at = record.run_clock = None
        if self.leases is not None:
            await self._release(record, None)
        else:
            await self.store.update(record)
        log_handed_back(record, reason)

    async def waiting(self, record: TaskRecord, question: InputQuestion) -> None:
        """Move a running task to waiting for input, its question stored and its
        worker (and lease) let go; publish task-input-required."""
        self.debouncer.finish(record.id)
        if self.figures is not None:
            self.figures.stopped(record, self._now())
        start_waiting(record, question)
        event = input_required_event(record, question)
        log_waiting(record, question.key)
        if self.leases is not None:
            self._release_soon(record, event, partial(self._retry_released, record))
            return
        if self.log is not None:
            await self.log.update(record, event=event)
            return
        if not self.live:
            await self.store.update(record)
        if self.on_input_required is not None:
            self.on_input_required(event)
        if self.events.wants(event.name):
            self.events.publish(event)

    async def hand_back_unstarted(self, record: TaskRecord) -> None:
        """Release a task claimed from a shared store that never started here."""
        if self.leases is not None and record.state is TaskState.QUEUED:
            await self._release(record, None)

    async def completed(self, record: TaskRecord, result: Any) -> bool:
        if not self.mark_completed(record, result, announce=self.live):
            return False
        if not self.live:
            await self._store_final(record)
        return True

    def mark_completed(self, record: TaskRecord, result: Any, *, announce: bool = True) -> bool:
        """The sync half of `completed`; False if the record was already final."""
        if record.state in FINAL_STATES:
            return False
        if self.debouncer.active:
            self.debouncer.finish(record.id)
        record.result = result
        record.error = None
        if record.progress is not None:
            record.progress = 100.0
            record.eta = 0.0
        self._mark_final(record, TaskState.COMPLETED, announce)
        return True

    async def failed(self, record: TaskRecord, info: ErrorInfo) -> bool:
        if record.state in FINAL_STATES:
            return False
        self.debouncer.finish(record.id)
        record.error = info
        return await self._finish(record, TaskState.FAILED)

    async def cancelled(self, record: TaskRecord, reason: str | None) -> bool:
        if record.state in FINAL_STATES:
            return False
        self.debouncer.finish(record.id)
        record.cancel_reason = reason
        return await self._finish(record, TaskState.CANCELLED)

    async def _finish(self, record: TaskRecord, state: TaskState) -> bool:
        self._mark_final(record, state, self.live)
        if not self.live:
            await self._store_final(record)
        return True

    async def _store_final(self, record: TaskRecord) -> None:
        """Write a final state; announce it once the store says it is durable.

        Order of truth: nobody hears of a final state (event, waiter) before the
        store holds it, so a task whose final event was seen never runs again.
        """
        if self.leases is not None:
            # Not waited for: the worker goes on while a group commit carries this;
            # the final state is announced once committed (`_final_released`).
            self._unannounced[record.id] = record
            self._release_soon(record, final_event(record), partial(self._final_released, record))
            return
        if self._watcher is not None:
            self._unannounced[record.id] = record
        try:
            if self.log is not None:
                await self.log.finish(record, event=final_event(record))
            else:
                await self.store.finish(record)
        except BaseException:
            self._final_durable(record.id)  # nothing will say so later
            raise
        if self._watcher is None:  # this store's finish is durable when it returns
            self._announce_final(record)

    def _release_soon(
        self, record: TaskRecord, event: Event | None, done: Callable[[bool | None], None]
    ) -> None:
        assert self.leases is not None
        try:
            self.leases.release_soon(self.worker_id, record, event=event, done=done)
        except StoreError as exc:
            self._log_unreleased(record, exc)
            done(None)

    def _final_released(self, record: TaskRecord, released: bool | None) -> None:
        """The store answered a final release: announce it, or let the task go."""
        self._unannounced.pop(record.id, None)
        if self._released(record, released):
            self._announce_final(record)
        else:
            self._wake(record.id)  # waiters look again: it runs elsewhere, or again

    def _retry_released(self, record: TaskRecord, released: bool | None) -> None:
        self._released(record, released)

    def _released(self, record: TaskRecord, released: bool | None) -> bool:
        """Whether the store took the outcome (None: it could not be written)."""
        if released:
            record.worker = record.lease_until = None
            return True
        if released is None:
            self._log_unreleased(record, None)
        else:
            logger.warning(
                "%s %s: this worker's lease on it expired and another took it over; "
                "this attempt's outcome (%s) is discarded",
                record.id,
                record.type,
                record.state.value,
            )
        record.worker = record.lease_until = None  # not renewed: it runs again
        return False

    def _log_unreleased(self, record: TaskRecord, exc: BaseException | None) -> None:
        logger.error(
            "%s %s: cannot record its outcome (%s)%s; it runs again after its lease",
            record.id,
            record.type,
            record.state.value,
            f": {exc}" if exc is not None else "",
        )

    async def _release(self, record: TaskRecord, event: Event | None) -> bool:
        """`_release_soon`, waited for (a hand-back at a stop)."""
        assert self.leases is not None
        try:
            released: bool | None = await self.leases.release(self.worker_id, record, event=event)
        except StoreError as exc:
            self._log_unreleased(record, exc)
            released = None
        return self._released(record, released)

    def _final_durable(self, task_id: str) -> None:
        """The store holds the final state of `task_id` (or never will): announce it."""
        record = self._unannounced.pop(task_id, None)
        if record is not None:
            self._announce_final(record)

    def _mark_final(self, record: TaskRecord, state: TaskState, announce: bool = True) -> None:
        record.move(state)
        if self.asked_models:
            self.asked_models.pop(record.id, None)
        record.finished_at = self._now()
        if self.figures is not None:
            self.figures.stopped(record, record.finished_at)
        if self._finish_now is not None:
            self._finish_now(record)
        if announce:
            self._announce_final(record)

    def announced_elsewhere(self, record: TaskRecord) -> None:
        """A final state the store wrote with its event (a queued task cancelled in the
        store, say): wake its waiters and log its end; the log delivers the event."""
        self._announce_final(record)

    def _wake(self, task_id: str) -> None:
        if self._waiters:
            waiters = self._waiters.pop(task_id, None)
            if waiters:
                for waiter in waiters:
                    waiter.set()

    def _announce_final(self, record: TaskRecord) -> None:
        """Wake the task's waiters, log its end, publish its final event."""
        self._wake(record.id)
        log_final(record)
        if self.figures is not None:
            self.figures.ended(record)
        if self.finals is not None:
            self.finals.add(record)
        if self.log is None:
            if self.on_final is not None:
                self.on_final(record.id)
            if self.events.wants(_FINAL_NAMES[record.state]):
                self.events.publish(final_event(record))

    def settled(self, record: TaskRecord) -> bool:
        """Whether `record` is final and that has been announced (it is durable)."""
        return record.state.is_final and record.id not in self._unannounced

    async def flush_final(self) -> None:
        """Announce every final state written so far, once durable (at shutdown)."""
        if self._watcher is not None and self._unannounced:
            try:
                await self._watcher.flush()
            except StoreError as exc:  # the waiters left get BusNotRunning instead
                logger.warning("final states not yet durable at shutdown: %s", exc)

    def release_waiters(self) -> None:
        """Wake everyone waiting for a task (the bus is stopping)."""
        waiters, self._waiters = self._waiters, {}
        for events in waiters.values():
            for waiter in events:
                waiter.set()

    @contextmanager
    def watching(self, task_id: str) -> Iterator[anyio.Event]:
        """An event set when `task_id` becomes final (here, or as the store's log
        says), or when the bus stops."""
        waiter = anyio.Event()
        self._waiters.setdefault(task_id, []).append(waiter)
        try:
            yield waiter
        finally:
            waiters = self._waiters.get(task_id)
            if waiters and waiter in waiters:
                waiters.remove(waiter)
                if not waiters:
                    del self._waiters[task_id]

    async def wait_final(self, record: TaskRecord) -> None:
        """Return once `record` is final, and durably so."""
        if self.settled(record):
            return
        with self.watching(record.id) as woken:
            await woken.wait()


def new_worker_id() -> str:
    """``host:pid:token``: whose leases these are (see `_leasing` for who checks)."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_task_id()[:12]}"


def _always(name: str) -> bool:
    return True


def _queued_event(record: TaskRecord, definition: _Estimated) -> TaskQueued:
    return build_trusted(
        TaskQueued,
        {
            "task_id": record.id,
            "task_type": record.type,
            "owner": record.owner,
            "timestamp": record.created_at,
            "priority": record.priority,
            "estimated_duration": definition.estimated_duration,
            "metadata": record.metadata or {},
        },
    )


def _progress_event(record: TaskRecord, now: float) -> TaskProgress:
    return build_trusted(
        TaskProgress,
        {
            "task_id": record.id,
            "task_type": record.type,
            "owner": record.owner,
            "timestamp": now,
            "progress": record.progress or 0.0,
            "current": record.current,
            "total": record.total,
            "message": record.message,
            "estimated_time_remaining": record.eta,
        },
    )


def _started_event(record: TaskRecord) -> TaskStarted:
    return build_trusted(
        TaskStarted,
        {
            "task_id": record.id,
            "task_type": record.type,
            "owner": record.owner,
            "timestamp": record.started_at,
            "attempt": record.attempt,
            "worker": record.worker,
        },
    )


#: Logged events after which a task may be ready to claim.
_WORK_NAMES = frozenset({"task-queued", "task-input-received"})

_FINAL_NAMES: dict[TaskState, str] = {
    state: f"task-{state.value}"
    for state in (TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELLED)
}
