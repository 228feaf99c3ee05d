"""The Redis store's claims: acquire, release, leases, reaping and cancels."""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime

from .._asking import answer_waiting
from .._events import CancelRequested, Event
from .._input import InputAnswer
from .._queue import MAX_PRIORITY, MIN_PRIORITY
from .._record import TaskRecord
from .._states import TaskState
from ._codec import escape_text
from ._leases import (
    ClaimArgs,
    check_ids,
    check_now,
    check_reason,
    check_worker,
    lease_end,
    settle_expired,
)
from ._redis_eventlog import RedisEventLog
from ._redis_items import NONE, hash_of, item, progress_fields, storable, token, without_lease
from ._redis_rows import decode, fields, text

__all__ = ["RedisClaims"]

_DUE_HINT_FOR = 1.0  # seconds an acquire's view of the next due time is used

logger = logging.getLogger("taskbus.stores.redis")

_CANCELLABLE = frozenset({TaskState.QUEUED, TaskState.WAITING})


class RedisClaims(RedisEventLog):
    """Claims with leases on Redis (the `TaskStore` half beyond the log)."""

    async def next_due(self) -> float | None:
        """The earliest not-before time among queued tasks not yet due: as the last
        `acquire` of this store saw it, if that was a moment ago (a task added since
        wakes the claims, whose `acquire` sees it), else read."""
        due, when = self._due_hint
        if time.monotonic() - when < _DUE_HINT_FOR:
            return due
        first = await self._read(
            lambda client: client.zrange(self._key("delayed"), 0, 0, withscores=True)
        )
        return float(first[0][1]) if first else None

    async def running_workers(self) -> builtins.list[str]:
        """The workers holding leases, expired or not (reaping decides)."""
        ids = await self._read(lambda client: client.zrange(self._key("leases"), 0, -1))
        return sorted({r.worker for r in await self._records(ids) if r.worker is not None})

    async def acquire(
        self,
        worker_id: str,
        limit: int,
        lease: float,
        *,
        limits: Mapping[str, int] | None = None,
        types: Collection[str] | None = None,
        aging: float | None = None,
        now: float | None = None,
        key_limits: Mapping[str, int] | None = None,
    ) -> builtins.list[TaskRecord]:
        """Claim up to `limit` ready queued tasks (see `TaskStore.acquire`), in one step."""
        pick = ClaimArgs(
            worker_id,
            limit,
            lease,
            limits=limits,
            types=types,
            aging=aging,
            now=now,
            key_limits=key_limits,
        )
        if pick.types is not None and not pick.types:
            return []
        _, calls = self._require()
        wanted = sorted(pick.types) if pick.types is not None else []
        bounds = [(t, n) for t, n in sorted(pick.limits.items())]
        per_key = [(t, n) for t, n in sorted(pick.key_limits.items())]
        claimed = await calls.run(
            "acquire",
            self._args(
                pick.worker,
                str(pick.limit),
                text(pick.until),
                text(pick.now),
                "" if pick.aging is None else text(pick.aging),
                str(MAX_PRIORITY),
                str(MIN_PRIORITY),
                str(len(wanted)),
                *wanted,
                str(len(bounds)),
                *(a for t, n in bounds for a in (t, str(n))),
                str(len(per_key)),
                *(a for t, n in per_key for a in (t, str(n))),
                token(),
            ),
        )
        *claimed, due = claimed
        self._due_hint = (float(due) if due else None, time.monotonic())
        return [decode(hash_of(flat), pick.now) for flat in claimed]

    async def release(
        self, worker_id: str, record: TaskRecord, *, event: Event | None = None
    ) -> bool:
        """Write a final or re-queued record, lease dropped, and log `event`, if
        `worker_id` holds the task's lease; else write and log nothing: False."""
        (result,) = await self._write(self._release_item(worker_id, record, event))
        return bool(result != 0)

    def release_soon(
        self,
        worker_id: str,
        record: TaskRecord,
        *,
        event: Event | None = None,
        done: Callable[[bool | None], None],
    ) -> None:
        self._write_soon(
            self._release_item(worker_id, record, event),
            then=lambda results: done(None if results is None else results[0] != 0),
        )

    def _release_item(self, worker_id: str, record: TaskRecord, event: Event | None) -> str:
        worker = check_worker(worker_id)
        if record.state is TaskState.RUNNING:
            raise ValueError(f"release takes a final or re-queued record, not {record!r}")
        self._queued_later(record)
        row = without_lease(storable(record))
        return item(record.id, state="running", worker=worker, row=row, events=[event])

    async def extend_leases(
        self, worker_id: str, ids: Collection[str], lease: float, *, now: float | None = None
    ) -> set[str]:
        """Move to ``now + lease`` the leases `worker_id` holds on `ids`; return the
        ids it holds none on."""
        worker, wanted = check_worker(worker_id), check_ids(ids)
        until = lease_end(check_now(now), lease)
        if not wanted:
            return set()
        items = [
            item(task_id, state="running", worker=worker, set_={"lease_until": until})
            for task_id in wanted
        ]
        results = await self._write(*items)
        return {task_id for task_id, result in zip(wanted, results, strict=True) if result == 0}

    async def reap_expired(
        self,
        *,
        now: float | None = None,
        workers: Collection[str] = (),
        fail_types: Collection[str] = (),
        alive: Collection[str] = (),
        events_for: Callable[[TaskRecord], Event | None] | None = None,
    ) -> builtins.list[TaskRecord]:
        """Settle the running tasks whose lease ended, that hold none, or whose worker
        is dead (see `TaskStore.reap_expired`); each is written only if it is still
        as read (its worker may renew or release meanwhile)."""
        moment = check_now(now)
        dead, living, failing = set(workers), set(alive), set(fail_types)
        _, calls = self._require()
        ids = await calls.run("expired", self._args(text(moment), *sorted(dead)))
        stored_rows = await self._hashes(ids)
        reaped: builtins.list[TaskRecord] = []
        items: builtins.list[str] = []
        for stored in stored_rows:
            if not stored or stored.get("state") != "running":
                continue
            record = decode(stored, moment)
            worker, lease_until = record.worker, record.lease_until
            expired = lease_until is None or lease_until < moment or worker in dead
            if not expired or worker in living:
                continue
            settle_expired(record, moment, retry_allowed=record.type not in failing)
            items.append(
                item(
                    record.id,
                    state="running",
                    worker=stored.get("worker", NONE),
                    lease=stored.get("lease_until", NONE),
                    row=storable(record),
                    events=[events_for(record) if events_for is not None else None],
                )
            )
            reaped.append(record)
        if not items:
            return []
        results = await self._write(*items)
        return [record for record, result in zip(reaped, results, strict=True) if result != 0]

    async def cancel_queued(
        self,
        task_id: str,
        reason: str | None,
        *,
        now: float | None = None,
        event_for: Callable[[TaskRecord], Event | None] | None = None,
    ) -> TaskRecord | None:
        """Cancel the task if it is queued or waiting for input, in one step (written
        only if it is still so when the write runs); its new record, else None."""
        reason, moment = check_reason(reason), check_now(now)
        for _ in range(10):  # each pass loses only to a claim or a cancel in between
            record = await self.get(task_id)
            if record is None or record.state not in _CANCELLABLE:
                return None
            was = record.state.value
            record.state, record.finished_at = TaskState.CANCELLED, moment
            record.cancel_reason = reason
            row = storable(record)
            cancelled = decode(hash_of(fields(row)), moment)  # the reason as stored
            event = event_for(cancelled) if event_for is not None else None
            (result,) = await self._write(item(task_id, state=was, row=row, events=[event]))
            if result != 0:
                return cancelled
        return None

    async def answer_input(
        self,
        task_id: str,
        key: str,
        answer: InputAnswer,
        *,
        now: float | None = None,
        event_for: Callable[[TaskRecord], Event | None] | None = None,
    ) -> TaskRecord | None:
        """Record `answer` to the question `key` of a waiting task and queue it again
        (written only if the task still waits when the write runs, logging
        ``event_for(record)`` with it): its new record, else None."""
        moment = check_now(now)
        (stored,) = await self._hashes([task_id])
        asked = stored.get("asks") if stored else None
        if asked is None:
            return None
        record = decode(stored, moment)
        if not answer_waiting(record, key, answer, moment):
            return None
        row = storable(record)
        event = event_for(record) if event_for is not None else None
        # Only if the question is still the one read: a new ask rewrites it.
        write = item(task_id, state="waiting", row=row, events=[event], same=("asks", asked))
        (result,) = await self._write(write)
        return record if result != 0 else None

    def report_progress(self, worker_id: str, record: TaskRecord, event: Event | None) -> None:
        """Write the progress fields of `record` and log `event` while `worker_id`
        holds the task's lease. Not waited for."""
        if self._client is None:
            logger.error("%r is not open: progress of %s is lost", self, record.id)
            return
        progress = progress_fields(record)
        self._write_soon(
            item(record.id, state="running", worker=worker_id, set_=progress, events=[event])
        )

    def request_cancel(self, task_id: str, reason: str | None) -> None:
        """Log a `CancelRequested` (the worker running the task hears it), and note
        the reason on the task if it runs, so reaping cancels it if its worker dies."""
        if self._client is None:
            logger.error("%r is not open: the cancel of %s is lost", self, task_id)
            return
        noted = escape_text(reason) if reason is not None else "cancelled"
        now = datetime.now(UTC)
        event = CancelRequested(task_id=task_id, task_type="", timestamp=now, reason=reason)
        self._write_soon(
            item(task_id, state="running", set_={"cancel_reason": noted}),
            item("", events=[event]),
        )
