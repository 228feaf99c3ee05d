"""`MemoryStore`: records in a dict. Nothing survives the process."""

from __future__ import annotations

import builtins
from collections import defaultdict, deque
from collections.abc import Callable

from .._record import TaskRecord
from .._states import TaskState
from ._base import KeyScope, StoreStats, TaskQuery, key_scope
from ._schedules_memory import MemorySchedules

__all__ = ["MemoryStore"]


class MemoryStore(MemorySchedules):
    """The default store: fast, and gone with the process.

    It keeps the runtime's live records (a `LiveRecordStore`), so the runtime
    has nothing to tell it after `add_now` but `finish_now`. Besides the bus's
    retention (age), it keeps at most `max_finished` finished tasks (default
    10,000, about 10 MiB for small tasks: a finished no-op task costs about
    1 KB): the oldest finished go first, trimmed as new tasks arrive (so at
    most `max_finished` plus those finished since the last submit). None: no cap.
    """

    def __init__(self, *, max_finished: int | None = 10_000) -> None:
        if max_finished is not None and (type(max_finished) is not int or max_finished < 0):
            raise ValueError(f"max_finished must be an int >= 0 or None, not {max_finished!r}")
        self.max_finished = max_finished
        super().__init__(lambda record, event: self.add_now(record))
        self._records: dict[str, TaskRecord] = {}
        self._keys: dict[KeyScope, TaskRecord] = {}
        self._finished: deque[TaskRecord] = deque()
        # The deque's own append: called once per task, so no Python frame of ours.
        self.finish_now: Callable[[TaskRecord], None] = (
            self._finished.append if max_finished is not None else _ignore
        )

    def __len__(self) -> int:
        return len(self._records)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def add(self, record: TaskRecord) -> None:
        self.add_now(record)

    def add_now(self, record: TaskRecord) -> None:
        self._records[record.id] = record
        if record.key is not None:
            self._keys[key_scope(record)] = record
        # `finish_now` logs finished tasks; the oldest beyond the cap go as tasks arrive.
        if self.max_finished is not None and len(self._finished) > self.max_finished:
            self._trim(self.max_finished)

    def _trim(self, cap: int) -> None:
        finished = self._finished
        while len(finished) > cap:
            self._forget(finished.popleft())

    def _forget(self, record: TaskRecord) -> None:
        if self._records.get(record.id) is record:
            del self._records[record.id]
        if record.key is not None:
            scope = key_scope(record)
            if self._keys.get(scope) is record:
                del self._keys[scope]

    async def claim(self, record: TaskRecord) -> None:
        return None

    async def update(self, record: TaskRecord) -> None:
        return None

    async def finish(self, record: TaskRecord) -> None:
        return None

    async def get(self, task_id: str) -> TaskRecord | None:
        return self._records.get(task_id)

    async def find_by_key(
        self,
        key: str,
        *,
        owner: str | None,
        task_type: str,
        completed_since: float | None = None,
    ) -> TaskRecord | None:
        record = self._keys.get((owner, task_type, key))
        if record is None or not record.state.is_final:
            return record
        if (
            completed_since is not None
            and record.state is TaskState.COMPLETED
            and (record.finished_at or 0.0) >= completed_since
        ):
            return record
        return None

    async def list(self, query: TaskQuery) -> builtins.list[TaskRecord]:
        matches = sorted((r for r in self._records.values() if query.matches(r)), key=_created)
        if query.newest_first:
            matches.reverse()
        return matches[query.offset : query.offset + query.limit]

    async def stats(self) -> StoreStats:
        by_state: defaultdict[TaskState, int] = defaultdict(int)
        by_type: defaultdict[str, defaultdict[TaskState, int]] = defaultdict(
            lambda: defaultdict(int)
        )
        queued: defaultdict[str, defaultdict[int, int]] = defaultdict(lambda: defaultdict(int))
        for record in self._records.values():
            by_state[record.state] += 1
            by_type[record.type][record.state] += 1
            if record.state is TaskState.QUEUED:
                queued[record.type][record.priority] += 1
        return StoreStats(
            by_state=dict(by_state),
            by_type={k: dict(v) for k, v in by_type.items()},
            queued_by_priority={k: dict(v) for k, v in queued.items()},
        )

    async def purge(self, finished_before: float | None = None, keep: int | None = None) -> int:
        final = sorted(
            (r for r in self._records.values() if r.state.is_final and r.finished_at is not None),
            key=lambda r: r.finished_at or 0.0,
            reverse=True,
        )
        doomed = [
            record
            for rank, record in enumerate(final)
            if (keep is not None and rank >= keep)
            or (finished_before is not None and (record.finished_at or 0.0) < finished_before)
        ]
        for record in doomed:
            self._forget(record)
        if doomed:
            records = self._records
            kept = [r for r in self._finished if records.get(r.id) is r]
            self._finished.clear()  # in place: `finish_now` is this deque's append
            self._finished.extend(kept)
        return len(doomed)

    async def recover(self) -> builtins.list[TaskRecord]:
        return []


def _ignore(record: TaskRecord) -> None:
    return None


def _created(record: TaskRecord) -> float:
    return record.created_at
