"""What a bus does at start with the tasks a previous run left unfinished."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._errors import ErrorType, InvalidTaskInput, TaskInterruptedError
from ._lifecycle import error_info
from ._record import TaskRecord
from ._states import TaskState

if TYPE_CHECKING:
    from ._taskbus import TaskBus

__all__ = ["recover"]

logger = logging.getLogger("taskbus.recovery")


async def recover(bus: TaskBus, records: list[TaskRecord]) -> tuple[int, int]:
    """Queue again what can run; fail what cannot. Returns (requeued, failed).

    A task left running is re-queued if attempts remain and its type says
    ``on_interrupt="retry"`` (the default), otherwise failed as interrupted.
    Stored inputs are validated again against the current input model.
    """
    requeued = failed = 0
    now = bus.clock.now()
    for record in records:
        definition = bus.registry.find(record.type)
        if definition is not None and record.loaded:
            try:
                record.input = definition.validate_input(record.input)
            except InvalidTaskInput as exc:
                await _fail(bus, record, exc, ErrorType.FATAL)
                failed += 1
                continue
        if record.state is TaskState.RUNNING:
            interrupted = TaskInterruptedError(
                f"interrupted: its process stopped during attempt {record.attempt}"
            )
            retry = definition is None or definition.options.on_interrupt == "retry"
            if not retry or record.attempt >= record.max_attempts:
                await _fail(bus, record, interrupted, ErrorType.FATAL)
                failed += 1
                continue
            record.move(TaskState.QUEUED)
            record.queued_at = now
            record.error = error_info(interrupted, ErrorType.RETRYABLE)
            await bus.store.update(record)
        wait = None if record.not_before is None else record.not_before - now
        bus.queue.push(record, bus.clock.monotonic(), wait)
        requeued += 1
    if records:
        logger.info(
            "recovered %d task(s): %d queued again, %d failed", len(records), requeued, failed
        )
    return requeued, failed


async def _fail(bus: TaskBus, record: TaskRecord, exc: BaseException, kind: ErrorType) -> None:
    await bus.lifecycle.failed(record, error_info(exc, kind))
