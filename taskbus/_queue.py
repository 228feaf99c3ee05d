"""`TaskQueue`: which task runs next.

Priorities run from 10 (most urgent) to 1, first in first out within a level.
A type at its concurrency limit is set aside so it never blocks other types;
tasks with a not-before time wait in a separate heap and hold no worker. With
`aging`, a task gains one priority level per `aging` seconds it waits, so low
priorities cannot starve: the ordering key is ``queued_at - priority * aging``,
fixed at push, so the heap never needs re-sorting.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

from ._record import TaskRecord
from ._states import TaskState

__all__ = ["MAX_PRIORITY", "MIN_PRIORITY", "TaskQueue"]

MIN_PRIORITY = 1
MAX_PRIORITY = 10

_Entry = tuple[float, int, TaskRecord]
#: [due, seq, record]: a list, so a cancelled task's record can be let go at once
#: (set to None) while its slot waits to leave the heap.
_Delayed = list[Any]
_COMPACT_MIN = 64
_QUEUED = TaskState.QUEUED


class TaskQueue:
    """Ready and delayed tasks, per-type concurrency counts, and the pick rule.

    Entries whose record has left the queued state (cancelled, say) are
    dropped when they reach the front, so removal costs nothing up front.
    """

    def __init__(
        self, *, aging: float | None = None, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if aging is not None and aging <= 0:
            raise ValueError(f"aging must be a positive number of seconds, not {aging!r}")
        self.aging = aging
        self._monotonic = monotonic
        self._ready: list[_Entry] = []
        self._delayed: list[_Delayed] = []
        self._delayed_stale = 0
        self._held: defaultdict[str, deque[_Entry]] = defaultdict(deque)
        self._seq = itertools.count()
        self._limits: dict[str, int] = {}
        self._running: defaultdict[str, int] = defaultdict(int)

    def __len__(self) -> int:
        """Entries waiting, ready, delayed or held (stale ones until dropped)."""
        delayed = len(self._delayed) - self._delayed_stale
        return len(self._ready) + delayed + sum(map(len, self._held.values()))

    def set_limit(self, task_type: str, limit: int | None) -> None:
        """Run at most `limit` tasks of `task_type` at once (None: no limit)."""
        if limit is None:
            self._limits.pop(task_type, None)
        else:
            self._limits[task_type] = limit
        self._release_held(task_type)

    def running(self, task_type: str) -> int:
        return self._running.get(task_type, 0)

    def push(
        self, record: TaskRecord, now: float | None = None, delay: float | None = None
    ) -> None:
        """Queue `record` at monotonic time `now` (None: the queue's clock, read only if
        needed); with a positive `delay` (seconds) it waits in the delayed heap until
        ``now + delay``."""
        if record.state is not _QUEUED:  # cancelled while it was being re-queued
            return
        if delay is not None and delay > 0:
            due = (self._monotonic() if now is None else now) + delay
            entry: _Delayed = [due, next(self._seq), record]
            heapq.heappush(self._delayed, entry)
            record.delayed_entry = entry
            return
        key: float
        if self.aging is None:
            key = -record.priority
        else:
            key = (self._monotonic() if now is None else now) - record.priority * self.aging
        heapq.heappush(self._ready, (key, next(self._seq), record))

    def _key(self, record: TaskRecord, now: float) -> float:
        if self.aging is None:
            return -record.priority
        return now - record.priority * self.aging

    def next_due(self) -> float | None:
        """When the earliest delayed task becomes ready, if any is delayed."""
        delayed = self._delayed
        while delayed and delayed[0][2] is None:
            heapq.heappop(delayed)
            self._delayed_stale -= 1
        return delayed[0][0] if delayed else None

    def promote_due(self, now: float) -> int:
        """Move delayed tasks whose time has come to the ready heap; return how many."""
        delayed = self._delayed
        moved = 0
        while delayed and delayed[0][0] <= now:
            _, seq, record = heapq.heappop(delayed)
            if record is None:
                self._delayed_stale -= 1
                continue
            record.delayed_entry = None
            if record.state is TaskState.QUEUED:
                heapq.heappush(self._ready, (self._key(record, now), seq, record))
                moved += 1
        return moved

    def discard(self, record: TaskRecord) -> None:
        """Let go of a delayed task that will not run (cancelled) before its time comes.

        Ready and held entries leave at the next pop; a delayed one could wait for
        hours, so its record is released now and its slot compacted away later.
        """
        entry = record.delayed_entry
        if entry is None:
            return
        record.delayed_entry = entry[2] = None
        self._delayed_stale += 1
        if self._delayed_stale > _COMPACT_MIN and self._delayed_stale * 2 > len(self._delayed):
            self._delayed[:] = [e for e in self._delayed if e[2] is not None]
            heapq.heapify(self._delayed)
            self._delayed_stale = 0

    def pop(self, now: float | None = None) -> TaskRecord | None:
        """Take the next runnable task and count it as running, or return None.

        With `now`, delayed tasks due by then are promoted first; without it,
        the caller promotes them (`promote_due`) when their time comes.
        """
        if now is not None and self._delayed and self._delayed[0][0] <= now:
            self.promote_due(now)
        ready = self._ready
        limits = self._limits
        while ready:
            entry = heapq.heappop(ready)
            record = entry[2]
            if record.state is not TaskState.QUEUED:
                continue
            task_type = record.type
            limit = limits.get(task_type)
            if limit is not None and self._running[task_type] >= limit:
                self._held[task_type].append(entry)
                continue
            self._running[task_type] += 1
            return record
        return None

    def release(self, task_type: str) -> int:
        """A task of `task_type` stopped running; return how many held tasks became ready."""
        self._running[task_type] -= 1
        return self._release_held(task_type) if self._held else 0

    def _release_held(self, task_type: str) -> int:
        held = self._held.get(task_type)
        if not held:
            return 0
        limit = self._limits.get(task_type)
        free = len(held) if limit is None else limit - self._running[task_type]
        moved = 0
        while held and free > moved:
            entry = held.popleft()
            if entry[2].state is TaskState.QUEUED:
                heapq.heappush(self._ready, entry)
                moved += 1
        return moved

    def take_type(self, task_type: str) -> list[TaskRecord]:
        """Remove and return the queued tasks of one type (ready, delayed or held)."""
        taken = [
            entry[2]
            for heap in (self._ready, self._delayed)
            for entry in heap
            if entry[2] is not None
            and entry[2].type == task_type
            and entry[2].state is TaskState.QUEUED
        ]
        self._ready = [e for e in self._ready if e[2].type != task_type]
        self._delayed = [e for e in self._delayed if e[2] is not None and e[2].type != task_type]
        self._delayed_stale = 0
        heapq.heapify(self._ready)
        heapq.heapify(self._delayed)
        held = self._held.pop(task_type, None)
        if held:
            taken.extend(entry[2] for entry in held if entry[2].state is TaskState.QUEUED)
        for record in taken:
            record.delayed_entry = None
        return taken

    def drain(self) -> list[TaskRecord]:
        """Remove and return every task still queued, in no particular order."""
        entries: list[Any] = [*self._ready, *self._delayed]
        for held in self._held.values():
            entries.extend(held)
        self._ready.clear()
        for entry in self._delayed:
            if entry[2] is not None:
                entry[2].delayed_entry = None
        self._delayed.clear()
        self._delayed_stale = 0
        self._held.clear()
        return [
            entry[2]
            for entry in entries
            if entry[2] is not None and entry[2].state is TaskState.QUEUED
        ]
