"""`TaskRecord`: the runtime's own mutable view of one task.

Records are plain slotted objects, not pydantic models: the queue and the
executor touch them on every transition, and a store turns them into JSON at
its edge. Callers only ever see `TaskSnapshot` copies. A task that waits in a
long queue holds a simple model input as its field values (`compact`, see
`_compact`); ``record.input`` rebuilds it.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from typing import Any

from ._compact import is_compact, packers
from ._errors import InvalidTransition
from ._input import InputExchange
from ._snapshot import ErrorInfo, TaskSnapshot
from ._states import TRANSITIONS, TaskState

__all__ = ["AWAITING_PARENTS", "TaskRecord", "new_task_id"]

#: The not-before time of a task waiting for its parents (9999-12-31 UTC): no delay
#: reaches it (`MAX_DELAY` is 100 years), so no claim finds it due (`_dependencies`).
AWAITING_PARENTS = 253402214400.0

_ID_BYTES = 16
_ID_BATCH = 1024
_id_pool: list[str] = []
#: One string per task type, however many callers built equal ones.
_intern = sys.intern


def _forget_ids_after_fork() -> None:
    # A forked child inherits the pool: it must draw its own ids, not its parent's.
    _id_pool.clear()


if hasattr(os, "register_at_fork"):  # not on Windows, which cannot fork
    os.register_at_fork(after_in_child=_forget_ids_after_fork)


def new_task_id() -> str:
    """A 128-bit random id as 32 hex characters (OS randomness, drawn in batches)."""
    if not _id_pool:
        raw = os.urandom(_ID_BYTES * _ID_BATCH).hex()
        step = _ID_BYTES * 2
        _id_pool.extend(raw[i : i + step] for i in range(0, len(raw), step))
    return _id_pool.pop()


def _dt(stamp: float | None) -> datetime | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC)


class TaskRecord:
    """Everything the runtime knows about one task. Times are epoch seconds."""

    __slots__ = (
        "_input",
        "asks",
        "attempt",
        "cancel_reason",
        "created_at",
        "current",
        "delayed_entry",
        "error",
        "eta",
        "finished_at",
        "id",
        "key",
        "lease_until",
        "loaded",
        "max_attempts",
        "message",
        "metadata",
        "not_before",
        "owner",
        "priority",
        "progress",
        "queued_at",
        "result",
        "run_clock",
        "started_at",
        "state",
        "total",
        "type",
        "waiting_for",
        "worker",
    )

    def __init__(
        self,
        id: str,
        type: str,
        input: Any,
        priority: int,
        created_at: float,
        max_attempts: int = 1,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
        key: str | None = None,
        not_before: float | None = None,
    ) -> None:
        self.id = id
        try:
            self.type = _intern(type)
        except TypeError:  # a str subclass (a StrEnum member, say) stays as given
            self.type = type
        self._input = input
        self.priority = priority
        self.owner = owner
        self.metadata = metadata
        self.key = key
        self.state = TaskState.QUEUED
        self.attempt = 0
        self.max_attempts = max_attempts
        self.created_at = created_at
        self.queued_at = created_at
        self.not_before = not_before
        self.started_at: float | None = None
        #: The monotonic time the current attempt started (not stored), for ETAs.
        self.run_clock: float | None = None
        #: The queue's delayed-heap slot while the task waits out a delay (not stored).
        self.delayed_entry: list[Any] | None = None
        self.finished_at: float | None = None
        self.progress: float | None = None
        self.current: int | None = None
        self.total: int | None = None
        self.message: str | None = None
        self.eta: float | None = None
        self.result: Any = None
        self.error: ErrorInfo | None = None
        self.cancel_reason: str | None = None
        #: Why a queued task is not running yet (its parents, a rate limit), or, while
        #: it waits for input, the prompt; else None.
        self.waiting_for: str | None = None
        #: Its pending question and recorded answers (``ctx.ask``), if it ever asked.
        self.asks: InputExchange | None = None
        #: The worker holding the task's lease, and until when (epoch seconds); None
        #: for a task not leased (queued, final, or claimed by a single process).
        self.worker: str | None = None
        self.lease_until: float | None = None
        #: Input, metadata and result are plain JSON, read back from a store.
        self.loaded = False

    def __repr__(self) -> str:
        return f"<TaskRecord {self.id} {self.type} {self.state.value} attempt={self.attempt}>"

    @property
    def input(self) -> Any:
        """The validated input (or, read back from a store, its JSON).

        A compact input (see `_compact`) comes back as a new, equal model instance.
        """
        value = self._input
        return value[-1].unpack(value) if is_compact(value) else value

    @input.setter
    def input(self, value: Any) -> None:
        self._input = value

    def compact(self) -> None:
        """Hold a simple model input, just validated, as its field values (a task
        that waits in a long queue costs ~200 bytes less); others are kept whole."""
        value = self._input
        if value is None:
            return
        try:
            ref = packers.get(value.__class__)
        except TypeError:  # a class whose metaclass makes it unhashable
            return
        if ref is not None and (packer := ref()) is not None:
            self._input = packer.pack(value)

    def handler_input(self) -> Any:
        """The input to hand the handler: a compact one is rebuilt once, then kept,
        so every attempt (and every later read) gets the same instance."""
        if is_compact(self._input):
            self._input = self.input
        return self._input

    def move(self, new: TaskState) -> None:
        """Change state, enforcing the transition table."""
        if new not in TRANSITIONS[self.state]:
            raise InvalidTransition(self.id, self.state.value, new.value)
        self.state = new

    def snapshot(self) -> TaskSnapshot:
        """A frozen, validated copy for callers."""
        return TaskSnapshot(
            id=self.id,
            type=self.type,
            state=self.state,
            priority=self.priority,
            owner=self.owner,
            metadata=self.metadata or {},
            input=self.input,
            progress=self.progress,
            current=self.current,
            total=self.total,
            message=self.message,
            eta=self.eta,
            result=self.result,
            error=self.error,
            cancel_reason=self.cancel_reason,
            attempts=self.attempt,
            max_attempts=self.max_attempts,
            created_at=_dt(self.created_at),
            queued_at=_dt(self.queued_at),
            started_at=_dt(self.started_at),
            finished_at=_dt(self.finished_at),
            not_before=None if self.not_before == AWAITING_PARENTS else _dt(self.not_before),
            worker=self.worker if self.state is TaskState.RUNNING else None,
            waiting_for=self.waiting_for if self.state in _HELD_BACK else None,
            question=self.asks.pending
            if self.asks is not None and self.state is TaskState.WAITING
            else None,
        )


_HELD_BACK = frozenset({TaskState.QUEUED, TaskState.WAITING})
