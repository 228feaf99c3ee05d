"""`InputDesk`: answers to waiting tasks (`TaskBus.respond`) and their deadlines.

An answer is checked against the question's model when the question was asked in
this process, else against its stored JSON schema (the ``jsonschema`` package,
``taskbus[input]``); then one store step records it and queues the task again,
only while the task still waits for that very question. A deadline is watched by
every bus that hears of the question (each arms a timer; the first to fire
records the timeout, the others find the task no longer waiting), and at start
for the tasks a previous run left waiting.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import anyio
from pydantic import ValidationError

from ._asking import answer_waiting, input_received_event
from ._errors import InvalidAnswer, StoreError, TaskNotWaiting, UnstorableValue
from ._events import TaskInputRequired
from ._input import InputAnswer, InputQuestion
from ._states import TaskState
from .stores._base import TaskQuery
from .stores._codec import check_storable

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._access import TaskAccess
    from ._clock import Clock
    from ._executor import TaskExecutor
    from ._lifecycle import Lifecycle
    from ._queue import TaskQueue
    from ._record import TaskRecord
    from ._snapshot import TaskSnapshot
    from ._timers import Timers

__all__ = ["InputDesk"]

logger = logging.getLogger("taskbus.input")

_PAGE = 1000


class InputDesk:
    """Records answers and timeouts for one bus."""

    def __init__(
        self,
        *,
        lifecycle: Lifecycle,
        access: TaskAccess,
        queue: TaskQueue,
        executor: TaskExecutor,
        clock: Clock,
        timers: Timers,
    ) -> None:
        self._lifecycle = lifecycle
        self._access = access
        self._queue = queue
        self._executor = executor
        self._clock = clock
        self._timers = timers
        self._expiring: MemoryObjectSendStream[tuple[str, str]] | None = None
        lifecycle.on_input_required = self.watch

    async def respond(self, task_id: str, value: Any) -> TaskSnapshot:
        """Answer the question the task waits on; its snapshot, queued again."""
        record = await self._access.record(task_id)
        question = _pending(record)
        checked = self._checked(record, question, value)
        answer = InputAnswer(value=checked, answered_at=self._clock.now())
        answered = await self._settle(record, question.key, answer)
        if answered is None:  # answered (or cancelled) meanwhile
            raise TaskNotWaiting(task_id, (await self._access.record(task_id)).state.value)
        logger.info("answered %s %s (%s)", answered.id, answered.type, question.key)
        return self._access.snapshot(answered)

    def _checked(self, record: TaskRecord, question: InputQuestion, value: Any) -> Any:
        """`value` as JSON once it fits the question; `InvalidAnswer` if not."""
        local = self._lifecycle.asked_models.get(record.id)
        if local is not None and local[0] == question.key:
            adapter = local[1]
            try:
                value = adapter.dump_python(adapter.validate_python(value), mode="json")
            except ValidationError as exc:
                raise InvalidAnswer(record.id, _errors(exc)) from None
            _check_storable(record.id, value)
            return value
        _check_storable(record.id, value)
        problems = _schema_problems(question.json_schema, value)
        if problems:
            raise InvalidAnswer(record.id, problems)
        return value

    async def _settle(self, record: TaskRecord, key: str, answer: InputAnswer) -> TaskRecord | None:
        """Record the answer and queue the task again, in the store's one step."""
        lifecycle = self._lifecycle
        leases = lifecycle.leases
        timed_out = answer.timed_out
        if leases is not None:
            # A question asked here a moment ago may not be written yet: its release
            # goes first, so the answer finds the task waiting.
            await leases.flush()
            answered = await leases.answer_input(
                record.id,
                key,
                answer,
                now=answer.answered_at,
                event_for=lambda r: input_received_event(r, key, timed_out=timed_out),
            )
            if answered is not None:
                lifecycle.asked_models.pop(record.id, None)
            return answered
        if not answer_waiting(record, key, answer, answer.answered_at):
            return None
        lifecycle.asked_models.pop(record.id, None)
        event = input_received_event(record, key, timed_out=timed_out)
        if lifecycle.log is not None:
            await lifecycle.log.update(record, event=event)
        else:
            if not lifecycle.live:
                await lifecycle.store.update(record)
            if lifecycle.events.wants(event.name):
                lifecycle.events.publish(event)
        self._queue.push(record, self._clock.monotonic(), None)
        self._executor.notify()
        return record

    # -- deadlines ------------------------------------------------------------------------

    def watch(self, event: TaskInputRequired) -> None:
        """Arm a timer for the deadline of a question (heard of here or in the log)."""
        if event.deadline is not None:
            self._arm(event.task_id, event.key, event.deadline.timestamp())

    def _arm(self, task_id: str, key: str, deadline: float) -> None:
        clock = self._clock
        when = clock.monotonic() + max(deadline - clock.now(), 0.0)
        self._timers.call_at(when, lambda: self._due(task_id, key))

    def _due(self, task_id: str, key: str) -> None:
        if self._expiring is not None:
            try:
                self._expiring.send_nowait((task_id, key))
            except anyio.WouldBlock:  # pragma: no cover - the buffer is unbounded
                logger.error("cannot expire the question of %s now", task_id)

    async def run(self) -> None:
        """Expire questions as their deadlines pass, until cancelled; first arm the
        deadlines of the tasks a previous run left waiting."""
        send: MemoryObjectSendStream[tuple[str, str]]
        receive: MemoryObjectReceiveStream[tuple[str, str]]
        send, receive = anyio.create_memory_object_stream(math.inf)
        with send, receive:
            self._expiring = send
            try:
                await self._arm_stored()
                async for task_id, key in receive:
                    await self._expire(task_id, key)
            finally:
                self._expiring = None

    async def _arm_stored(self) -> None:
        if self._lifecycle.live:
            return  # nothing outlives the process
        store, offset = self._lifecycle.store, 0
        while True:
            try:
                page = await store.list(
                    TaskQuery(state=TaskState.WAITING, limit=_PAGE, offset=offset)
                )
            except StoreError as exc:
                logger.error("cannot read the waiting tasks to watch their deadlines: %s", exc)
                return
            for record in page:
                pending = record.asks.pending if record.asks is not None else None
                if pending is not None and pending.deadline is not None:
                    self._arm(record.id, pending.key, pending.deadline)
            if len(page) < _PAGE:
                return
            offset += _PAGE

    async def _expire(self, task_id: str, key: str) -> None:
        now = self._clock.now()
        answer = InputAnswer(answered_at=now, timed_out=True)
        try:
            record = await self._access.record(task_id)
            pending = record.asks.pending if record.asks is not None else None
            if record.state is not TaskState.WAITING or pending is None or pending.key != key:
                return
            if pending.deadline is None:
                return
            if pending.deadline > now:  # asked again since this timer was armed
                self._arm(task_id, key, pending.deadline)
                return
            if await self._settle(record, key, answer) is not None:
                logger.info("no answer to %s %s (%s) in time", record.id, record.type, key)
        except (StoreError, LookupError) as exc:
            logger.warning("cannot time out the question of %s: %s", task_id, exc)


def _pending(record: TaskRecord) -> InputQuestion:
    pending = record.asks.pending if record.asks is not None else None
    if record.state is not TaskState.WAITING or pending is None:
        raise TaskNotWaiting(record.id, record.state.value)
    return pending


def _check_storable(task_id: str, value: Any) -> None:
    """`InvalidAnswer` for an answer no store can hold (a lone surrogate, say)."""
    try:
        check_storable(value, f"the answer to task {task_id}")
    except UnstorableValue as exc:
        raise InvalidAnswer(task_id, [{"loc": (), "msg": str(exc)}]) from None


def _errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": tuple(error["loc"]), "msg": error["msg"], "type": error["type"]}
        for error in exc.errors(include_url=False)
    ]


def _schema_problems(schema: dict[str, Any], value: Any) -> list[dict[str, Any]]:
    """What keeps `value` from matching `schema` (JSON Schema 2020-12), in pydantic's form."""
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - an install without the extra
        raise RuntimeError(
            "checking an answer against a stored JSON schema needs the jsonschema "
            "package: pip install 'taskbus[input]'"
        ) from None
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in validator.iter_errors(value):
        where, message = tuple(error.absolute_path), error.message
        if error.validator == "required":  # named as pydantic names it: at the field
            missing = [
                name
                for name in error.validator_value
                if isinstance(error.instance, dict) and name not in error.instance
            ]
            found = next((name for name in missing if repr(name) in message), None)
            if found is not None:
                where, message = (*where, found), "Field required"
        problems.append({"loc": where, "msg": message, "type": str(error.validator)})
    return sorted(problems, key=lambda problem: [str(part) for part in problem["loc"]])
