"""What a bus does at start with the tasks a previous run left unfinished."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ._clock import Clock
from ._errors import ErrorType, InvalidTaskInput, TaskInterruptedError
from ._lifecycle import Lifecycle, error_info
from ._queue import TaskQueue
from ._record import TaskRecord
from ._states import TaskState

if TYPE_CHECKING:
    from ._registry import TaskRegistry

__all__ = ["recover"]

logger = logging.getLogger("taskbus.recovery")


async def recover(
    records: list[TaskRecord],
    *,
    registry: TaskRegistry,
    lifecycle: Lifecycle,
    queue: TaskQueue,
    clock: Clock,
) -> tuple[int, int]:
    """Queue again what can run; fail what cannot. Returns (requeued, failed).

    For a durable store that holds no claims (a `Store` that is not a `TaskStore`):
    one that does keeps its queue itself, and reaps what a dead worker left.

    A task left running is re-queued if attempts remain and its type says
    ``on_interrupt="retry"`` (the default), otherwise failed as interrupted.
    Stored inputs are validated again against the current input model.
    """
    requeued = failed = 0
    now = clock.now()
    for record in records:
        if record.state is TaskState.WAITING:
            continue  # its answer queues it again, not a restart
        definition = registry.find(record.type)
        if definition is not None and record.loaded:
            try:
                record.input = definition.validate_input(record.input)
            except InvalidTaskInput as exc:
                await _fail(lifecycle, record, exc, ErrorType.FATAL)
                failed += 1
                continue
        if record.state is TaskState.RUNNING:
            interrupted = TaskInterruptedError(
                f"interrupted: its process stopped during attempt {record.attempt}"
            )
            retry = definition is None or definition.options.on_interrupt == "retry"
            if not retry or record.attempt >= record.max_attempts:
                await _fail(lifecycle, record, interrupted, ErrorType.FATAL)
                failed += 1
                continue
            record.move(TaskState.QUEUED)
            record.queued_at = now
            record.error = error_info(interrupted, ErrorType.RETRYABLE)
            await lifecycle.store.update(record)
        wait = None if record.not_before is None else record.not_before - now
        queue.push(record, clock.monotonic(), wait)
        requeued += 1
    if records:
        logger.info(
            "recovered %d task(s): %d queued again, %d failed", len(records), requeued, failed
        )
    return requeued, failed


async def _fail(
    lifecycle: Lifecycle, record: TaskRecord, exc: BaseException, kind: ErrorType
) -> None:
    await lifecycle.failed(record, error_info(exc, kind))
