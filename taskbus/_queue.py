"""`TaskQueue`: which task runs next.

Priorities run from 10 (most urgent) to 1, first in first out within a level.
A type at its concurrency limit is set aside so it never blocks other types;
a task whose concurrency key (`_limiting`) is at its per-key limit is set aside
until a task of that key stops, so other keys go on; tasks with a not-before
time wait in a separate heap and hold no worker. With
`aging`, a task gains one priority level per `aging` seconds it waits, so low
priorities cannot starve: the ordering key is ``queued_at - priority * aging``,
fixed at push, so the heap never needs re-sorting.

Every ready task ranks by ``(key, seq)``, seq counting pushes. Without aging
(key ``-priority``) a new task goes to its priority level's FIFO, a deque of
records beside an array of their seqs: 16 bytes a task, where a heap entry
costs a tuple and an int (96). Tasks that come back out of push order (a
delayed task whose time came, a task the concurrency limit set aside) go to a
heap of ``(key, seq, record)`` entries, merged with the FIFO fronts at pop;
with aging, every ready task goes there. Set-aside tasks keep their seq (and
key) in arrays too.
"""

from __future__ import annotations

import heapq
import itertools
import time
from array import array
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from typing import Any

from ._record import TaskRecord
from ._states import TaskState
from ._task_keys import concurrency_key_of, key_reason

__all__ = ["COMPACT_BACKLOG", "MAX_PRIORITY", "MIN_PRIORITY", "TaskQueue"]

MIN_PRIORITY = 1
MAX_PRIORITY = 10

_Entry = tuple[float, int, TaskRecord]
#: [due, seq, record]: a list, so a cancelled task's record can be let go at once
#: (set to None) while its slot waits to leave the heap.
_Delayed = list[Any]
_COMPACT_MIN = 64
#: A FIFO drops the numbers of records already taken once they are this many and half.
_FIFO_COMPACT = 1024
#: Tasks waiting in one line (a priority, the delayed heap, a type's set-aside ones)
#: past which a newcomer holds its input compactly (`TaskRecord.compact`): memory
#: for long backlogs, no rebuild cost for the tasks of a short queue.
COMPACT_BACKLOG = 1000
_QUEUED = TaskState.QUEUED


class _Fifo:
    """Records in push order; ``seqs[head + i]`` (and ``keys[head + i]``) is records[i]'s."""

    __slots__ = ("head", "key", "keys", "records", "seqs")

    def __init__(self, key: float = 0.0, *, keyed: bool = False) -> None:
        #: A level's key (``-priority``); a held FIFO keeps one key per record instead.
        self.key = key
        self.records: deque[TaskRecord] = deque()
        self.seqs = array("q")
        self.keys = array("d") if keyed else None
        self.head = 0

    def append(self, record: TaskRecord, seq: int, key: float) -> None:
        self.records.append(record)
        self.seqs.append(seq)
        if self.keys is not None:
            self.keys.append(key)

    def popleft(self) -> _Entry:
        record = self.records.popleft()
        head = self.head
        seq = self.seqs[head]
        key = self.key if self.keys is None else self.keys[head]
        self.head = head = head + 1
        if head >= _FIFO_COMPACT and head * 2 >= len(self.seqs):
            self.compact()
        return key, seq, record

    def compact(self) -> None:
        """Drop the numbers of the records already taken."""
        del self.seqs[: self.head]
        if self.keys is not None:
            del self.keys[: self.head]
        self.head = 0

    def entries(self) -> Iterator[_Entry]:
        head, keys = self.head, self.keys
        for i, record in enumerate(self.records):
            yield (self.key if keys is None else keys[head + i]), self.seqs[head + i], record

    def keep(self, entries: list[_Entry]) -> None:
        """Hold exactly `entries` (in push order) from now on."""
        self.records = deque(entry[2] for entry in entries)
        self.seqs = array("q", (entry[1] for entry in entries))
        if self.keys is not None:
            self.keys = array("d", (entry[0] for entry in entries))
        self.head = 0


def _heap_first(entry: _Entry, level: _Fifo) -> bool:
    """Whether a heap entry ranks before the front of a non-empty level."""
    return entry[0] < level.key or (entry[0] == level.key and entry[1] < level.seqs[level.head])


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
        #: Out-of-order ready tasks (all of them, with aging).
        self._ready: list[_Entry] = []
        #: FIFOs by priority, most urgent first (without aging), and by priority.
        self._levels: list[_Fifo] = []
        self._level_of: dict[int, _Fifo] = {}
        self._delayed: list[_Delayed] = []
        self._delayed_stale = 0
        self._held: dict[str, _Fifo] = {}
        self._seq = itertools.count()
        self._limits: dict[str, int] = {}
        self._running: defaultdict[str, int] = defaultdict(int)
        #: Per-key concurrency: limits by type, running counts and set-aside tasks by
        #: (type, key).
        self._key_limits: dict[str, int] = {}
        self._key_running: defaultdict[tuple[str, str], int] = defaultdict(int)
        self._key_held: dict[tuple[str, str], _Fifo] = {}

    def __len__(self) -> int:
        """Entries waiting, ready, delayed or held (stale ones until dropped)."""
        delayed = len(self._delayed) - self._delayed_stale
        fifos = [*self._levels, *self._held.values(), *self._key_held.values()]
        return len(self._ready) + delayed + sum(len(fifo.records) for fifo in fifos)

    def set_limit(self, task_type: str, limit: int | None) -> None:
        """Run at most `limit` tasks of `task_type` at once (None: no limit)."""
        if limit is None:
            self._limits.pop(task_type, None)
        else:
            self._limits[task_type] = limit
        self._release_held(task_type)

    def set_key_limit(self, task_type: str, limit: int | None) -> None:
        """Run at most `limit` tasks of `task_type` at once per concurrency key."""
        if limit is None:
            self._key_limits.pop(task_type, None)
        else:
            self._key_limits[task_type] = limit
        for pair in [pair for pair in self._key_held if pair[0] == task_type]:
            self._release_key_held(pair)

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
            if len(self._delayed) >= COMPACT_BACKLOG:
                record.compact()
            return
        if self.aging is None:
            level = self._level_of.get(record.priority) or self._add_level(record.priority)
            records = level.records
            records.append(record)
            level.seqs.append(next(self._seq))
            if level.head >= _FIFO_COMPACT and level.head * 2 >= len(level.seqs):
                level.compact()  # here, not at pop: a pop may still read its seq
            if len(records) >= COMPACT_BACKLOG:
                record.compact()
        else:
            key = (self._monotonic() if now is None else now) - record.priority * self.aging
            heapq.heappush(self._ready, (key, next(self._seq), record))
            if len(self._ready) >= COMPACT_BACKLOG:
                record.compact()

    def _add_level(self, priority: int) -> _Fifo:
        level = self._level_of[priority] = _Fifo(-priority)
        self._levels.append(level)
        self._levels.sort(key=lambda fifo: fifo.key)
        return level

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
        levels = self._levels
        level: _Fifo | None
        while True:
            # The most urgent non-empty level, unless the heap's first entry ranks
            # before its front (and so before every lower level's): then the heap.
            for level in levels:
                if level.records and not (ready and _heap_first(ready[0], level)):
                    record = level.records.popleft()
                    level.head += 1  # its seq and key are read only if it is set aside
                    break
            else:
                if not ready:
                    return None
                key, seq, record = heapq.heappop(ready)
                level = None
            if record.state is not TaskState.QUEUED:
                continue
            task_type = record.type
            limit = limits.get(task_type)
            if limit is not None and self._running[task_type] >= limit:
                if level is not None:
                    key, seq = level.key, level.seqs[level.head - 1]
                self._hold(task_type, record, seq, key)
                continue
            if self._key_limits and self._key_busy(record):
                if level is not None:
                    key, seq = level.key, level.seqs[level.head - 1]
                self._hold_for_key(record, seq, key)
                continue
            self._running[task_type] += 1
            return record

    def _key_busy(self, record: TaskRecord) -> bool:
        """Whether the record's concurrency key is at its limit; if not, count it."""
        limit = self._key_limits.get(record.type)
        if limit is None or (ckey := concurrency_key_of(record)) is None:
            return False
        pair = (record.type, ckey)
        if self._key_running[pair] >= limit:
            return True
        self._key_running[pair] += 1
        return False

    def _hold_for_key(self, record: TaskRecord, seq: int, key: float) -> None:
        pair = (record.type, concurrency_key_of(record) or "")
        record.waiting_for = key_reason(self._key_limits[record.type], pair[1])
        held = self._key_held.get(pair)
        if held is None:
            held = self._key_held[pair] = _Fifo(keyed=self.aging is not None)
        held.append(record, seq, key)

    def _hold(self, task_type: str, record: TaskRecord, seq: int, key: float) -> None:
        held = self._held.get(task_type)
        if held is None:
            held = self._held[task_type] = _Fifo(keyed=self.aging is not None)
        held.append(record, seq, key)
        if len(held.records) >= COMPACT_BACKLOG:
            record.compact()

    def release(self, task_type: str, concurrency_key: str | None = None) -> int:
        """A task of `task_type` (counted under `concurrency_key`, if any) stopped
        running; return how many held tasks became ready."""
        self._running[task_type] -= 1
        moved = self._release_held(task_type) if self._held else 0
        if concurrency_key is not None and self._key_limits:
            pair = (task_type, concurrency_key)
            if self._key_running.get(pair, 0) > 0:
                self._key_running[pair] -= 1
                if not self._key_running[pair]:
                    del self._key_running[pair]
                moved += self._release_key_held(pair)
        return moved

    def _release_key_held(self, pair: tuple[str, str]) -> int:
        """Make ready the set-aside tasks of one key that its limit now lets run."""
        held = self._key_held.get(pair)
        if held is None:
            return 0
        limit = self._key_limits.get(pair[0])
        free = len(held.records) if limit is None else limit - self._key_running.get(pair, 0)
        moved = 0
        while held.records and free > moved:
            key, seq, record = held.popleft()
            if record.state is TaskState.QUEUED:
                if held.keys is None:
                    key = -record.priority
                heapq.heappush(self._ready, (key, seq, record))
                moved += 1
        if not held.records:
            del self._key_held[pair]
        return moved

    def _release_held(self, task_type: str) -> int:
        held = self._held.get(task_type)
        if held is None or not held.records:
            return 0
        limit = self._limits.get(task_type)
        free = len(held.records) if limit is None else limit - self._running[task_type]
        moved = 0
        while held.records and free > moved:
            key, seq, record = held.popleft()
            if record.state is TaskState.QUEUED:
                if held.keys is None:  # without aging, the key is the priority's
                    key = -record.priority
                heapq.heappush(self._ready, (key, seq, record))
                moved += 1
        return moved

    def take_type(self, task_type: str) -> list[TaskRecord]:
        """Remove and return the queued tasks of one type (ready, delayed or held)."""
        levels = [(level, list(level.entries())) for level in self._levels]
        heaps: list[list[Any]] = [self._ready, self._delayed, *(e for _, e in levels)]
        taken = [
            entry[2]
            for entries in heaps
            for entry in entries
            if entry[2] is not None
            and entry[2].type == task_type
            and entry[2].state is TaskState.QUEUED
        ]
        self._ready = [e for e in self._ready if e[2].type != task_type]
        self._delayed = [e for e in self._delayed if e[2] is not None and e[2].type != task_type]
        self._delayed_stale = 0
        heapq.heapify(self._ready)
        heapq.heapify(self._delayed)
        for level, entries in levels:
            level.keep([e for e in entries if e[2].type != task_type])
        held = self._held.pop(task_type, None)
        if held is not None:
            taken.extend(r for r in held.records if r.state is TaskState.QUEUED)
        for pair in [pair for pair in self._key_held if pair[0] == task_type]:
            taken.extend(r for r in self._key_held.pop(pair).records if r.state is _QUEUED)
        for record in taken:
            record.delayed_entry = None
        return taken

    def drain(self) -> list[TaskRecord]:
        """Remove and return every task still queued, in no particular order."""
        records = [entry[2] for entry in [*self._ready, *self._delayed]]
        for fifo in [*self._levels, *self._held.values(), *self._key_held.values()]:
            records.extend(fifo.records)
            fifo.keep([])
        self._key_held.clear()
        self._ready.clear()
        for entry in self._delayed:
            if entry[2] is not None:
                entry[2].delayed_entry = None
        self._delayed.clear()
        self._delayed_stale = 0
        self._held.clear()
        return [
            record for record in records if record is not None and record.state is TaskState.QUEUED
        ]
