"""`TaskContext`: what a running handler gets to talk back to the runtime."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Generator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, TypeVar, overload

import anyio.from_thread
from pydantic import TypeAdapter

from ._errors import InputTimeout, TaskCancellation
from ._input import AwaitingInput, InputQuestion
from ._validation import check_count, check_text

if TYPE_CHECKING:
    from ._dependencies import Parents
    from ._lifecycle import Lifecycle
    from ._record import TaskRecord
    from ._snapshot import TaskSnapshot

__all__ = ["TaskContext", "current_context"]

_current: ContextVar[TaskContext | None] = ContextVar("taskbus_current_task", default=None)


def current_context() -> TaskContext | None:
    """The context of the task running in this (async or thread) context, if any."""
    return _current.get()


class _Done:
    """An already-finished awaitable, so `await ctx.progress(...)` and a bare
    `ctx.progress(...)` (in a sync handler) both work."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return
        yield


_DONE = _Done()

T = TypeVar("T")


class _Ready(Awaitable[T]):
    """An awaitable that is already done with a value (a recorded answer)."""

    __slots__ = ("_value",)

    def __init__(self, value: T) -> None:
        self._value = value

    def __await__(self) -> Generator[Any, None, T]:
        return self._value
        yield


class TaskContext:
    """Handed to a handler as its first argument.

    In an async handler, ``await ctx.progress(...)``; in a sync (thread) handler,
    call ``ctx.progress(...)`` without await. Both check for cancellation with
    ``ctx.raise_if_cancelled()``.
    """

    __slots__ = (
        "_asked",
        "_cancel_reason",
        "_in_thread",
        "_lifecycle",
        "_logger",
        "_parents",
        "_record",
    )

    def __init__(
        self,
        lifecycle: Lifecycle,
        record: TaskRecord,
        in_thread: bool,
        parents: Parents | None = None,
    ) -> None:
        self._lifecycle = lifecycle
        self._record = record
        self._in_thread = in_thread
        self._parents = parents
        self._cancel_reason: str | None = None
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None
        self._asked = 0

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger (``taskbus.task``) whose records carry task_id, task_type and attempt."""
        if self._logger is None:
            record = self._record
            self._logger = logging.LoggerAdapter(
                logging.getLogger("taskbus.task"),
                {"task_id": record.id, "task_type": record.type, "attempt": record.attempt},
            )
        return self._logger

    @property
    def task_id(self) -> str:
        return self._record.id

    @property
    def task_type(self) -> str:
        return self._record.type

    @property
    def attempt(self) -> int:
        """1 for the first attempt, 2 for the first retry, ..."""
        return self._record.attempt

    @property
    def owner(self) -> str | None:
        return self._record.owner

    @property
    def metadata(self) -> dict[str, Any]:
        return self._record.metadata or {}

    @property
    def parents(self) -> list[TaskSnapshot]:
        """The snapshots of the tasks this one was submitted `after`, in that order,
        as they ended (state, result, error), read as this task started; empty for a
        task without parents. A parent purged before then is left out."""
        return [] if self._parents is None else self._parents.snapshots()

    @property
    def cancelled(self) -> bool:
        """True once cancellation (or the timeout) was requested for this attempt."""
        return self._cancel_reason is not None

    def raise_if_cancelled(self) -> None:
        """Raise `TaskCancellation` if this attempt should stop; for long loops.

        It is a `BaseException`: a handler's ``except Exception:`` does not catch it.
        """
        if self._cancel_reason is not None:
            raise TaskCancellation(self._record.id, self._cancel_reason)

    def progress(
        self,
        percent: float | None = None,
        message: str | None = None,
        *,
        current: int | None = None,
        total: int | None = None,
    ) -> Awaitable[None]:
        """Report progress: a percent (0-100) or `current` of `total`, and a message.

        Updates the task at once; task-progress events are debounced.
        """
        percent = _checked(percent, message, current, total)
        if self._cancel_reason is not None:
            return _DONE  # the attempt is over; nothing it reports is published
        if self._in_thread:
            anyio.from_thread.run_sync(
                self._lifecycle.progress, self._record, percent, message, current, total
            )
        else:
            self._lifecycle.progress(self._record, percent, message, current, total)
        return _DONE

    @overload
    def ask(
        self, prompt: str, *, timeout: float | None = None, key: str | None = None
    ) -> Awaitable[str]: ...
    @overload
    def ask(
        self, prompt: str, model: type[T], *, timeout: float | None = None, key: str | None = None
    ) -> Awaitable[T]: ...
    def ask(
        self,
        prompt: str,
        model: Any = str,
        *,
        timeout: float | None = None,
        key: str | None = None,
    ) -> Awaitable[Any]:
        """Ask the task's caller for input: ``answer = await ctx.ask("Which branch?",
        model=BranchChoice, timeout=600)``.

        With an answer recorded for this question, returns it (validated into
        `model`) at once. Otherwise the handler's run ends here: the task waits,
        holding no worker, its question (`prompt`, the JSON schema of `model`, the
        deadline) stored and published as task-input-required. `TaskBus.respond`
        records the answer and queues the task again; the handler then runs **from
        the top**, and this call returns the answer. Steps before an ask therefore
        run again: make them idempotent. Questions are told apart by `key`, by
        default their order within the run (``"ask-1"``, ``"ask-2"``, ...).

        Raises `InputTimeout` once `timeout` seconds passed without an answer (fatal
        unless the type lists it in ``retry_on``). Async handlers only: a sync or
        process handler gets `TypeError`.
        """
        check_text(prompt, "prompt", ValueError)
        if timeout is not None and (
            not isinstance(timeout, int | float)
            or isinstance(timeout, bool)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if key is None:
            self._asked += 1
            key = f"ask-{self._asked}"
        else:
            check_text(key, "key", ValueError)
        if self._in_thread:
            raise TypeError(
                "ctx.ask needs an async handler: a sync handler's thread cannot be "
                "set aside while the task waits for its answer"
            )
        adapter: TypeAdapter[Any] = TypeAdapter(model)
        record = self._record
        asks = record.asks
        answer = asks.answers.get(key) if asks is not None else None
        if answer is not None:
            if answer.timed_out:
                assert asks is not None
                record.asks = asks.without(key)  # a retry asks again
                raise InputTimeout(f"no answer to {prompt!r} ({key}) in time")
            return _Ready(adapter.validate_python(answer.value))
        self.raise_if_cancelled()
        lifecycle = self._lifecycle
        now = lifecycle.clock.now()
        question = InputQuestion(
            key=key,
            prompt=prompt,
            json_schema=adapter.json_schema(),
            asked_at=now,
            deadline=None if timeout is None else now + timeout,
        )
        lifecycle.asked_models[record.id] = (key, adapter)
        raise AwaitingInput(question)

    def _request_cancel(self, reason: str) -> None:
        if self._cancel_reason is None:
            self._cancel_reason = reason


def _checked(
    percent: float | None, message: str | None, current: int | None, total: int | None
) -> float | None:
    """The percent to record; raises ValueError naming a bad argument."""
    if current is not None:
        check_count(current, "current")
    if total is not None:
        check_count(total, "total")
    if message is not None:
        check_text(message, "message", ValueError)
    if percent is None and current is not None and total:
        percent = 100.0 * current / total
    if percent is not None and (
        not isinstance(percent, int | float) or isinstance(percent, bool) or not 0 <= percent <= 100
    ):
        raise ValueError(f"progress must be a number between 0 and 100, not {percent!r}")
    return percent
