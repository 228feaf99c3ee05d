"""The SQLite store's claims: leased tasks, for workers in any process.

The SQL lives in `_sqlite_lease`; these methods run it in the writer thread's
transactions and log each change's event in the same one.
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping
from functools import partial
from typing import Any

from .._errors import StoreError
from .._events import CancelRequested, Event, build_trusted
from .._input import InputAnswer
from .._record import TaskRecord
from .._states import TaskState
from . import _leases as checks
from . import _sqlite_lease as leases
from ._base import CorruptRecord
from ._sqlite_base import ClaimDelivery, SqliteBase, change_row
from ._sqlite_batch import Batch

__all__ = ["SqliteClaims"]

logger = logging.getLogger("taskbus.stores.sqlite")


class SqliteClaims(SqliteBase):
    """`TaskStore`'s claims on SQLite: acquire, release, renew, reap; and claims
    that stand by for the next insert (`ClaimsOnAdd`)."""

    def claim_on_add(
        self,
        worker_id: str,
        limit: int,
        lease: float,
        *,
        limits: Mapping[str, int] | None,
        aging: float | None,
        now: Callable[[], float],
        deliver: ClaimDelivery,
        at_once: bool = False,
        key_limits: Mapping[str, int] | None = None,
    ) -> None:
        """Claim for `worker_id` in the next transaction that inserts tasks, or in the
        next one (`at_once`), see `ClaimsOnAdd`: a submit to an idle worker then
        costs one commit."""
        chosen = leases.Pick(
            worker_id,
            limit,
            lease,
            limits=limits,
            types=None,
            aging=aging,
            now=now(),
            key_limits=key_limits,
        )  # arguments checked here, at the call

        def pick(conn: sqlite3.Connection) -> leases.Picked:
            # The time is the transaction's, not the call's.
            chosen.now = checks.check_now(now())
            chosen.until = checks.lease_end(chosen.now, lease)
            return chosen.run(conn)

        writer = self._require_writer()
        self.withdraw_claim_on_add(worker_id)
        token = next(self._standing_tokens)
        self._standing_claims[token] = (worker_id, deliver)
        try:
            writer.stand_by(worker_id, token, pick, at_once=at_once)
        except StoreError:
            del self._standing_claims[token]
            raise

    def withdraw_claim_on_add(self, worker_id: str) -> bool:
        """Withdraw a standing claim; False if a transaction took it already (its
        `deliver` is still to come)."""
        writer = self._writer
        if writer is None or writer.failure is not None:  # nothing will be delivered
            self._standing_claims.clear()
            return True
        token = writer.withdraw_standing(worker_id)
        if token is not None:
            del self._standing_claims[token]
            return True
        return all(worker != worker_id for worker, _ in self._standing_claims.values())

    def _committed(self, batch: Batch) -> None:
        # Standing claims first: a worker learns what it claimed before the events of
        # the tasks it claimed (their task-queued) reach anyone.
        for token, index in batch.standing.items():
            worker_id, deliver = self._standing_claims.pop(token)
            picked = None if index in batch.call_errors else batch.results.get(index)
            records = None if picked is None else self._leased(*picked)
            try:
                kept = deliver(records, frozenset(batch.inserts))
            except Exception:
                logger.exception("%r: delivering a claim failed", self)
                kept = False
            if records and not kept:
                ids = [record.id for record in records]
                self._require_writer().call(partial(leases.give_back, worker=worker_id, ids=ids))
        super()._committed(batch)

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
        """Claim up to `limit` ready queued tasks for `worker_id`, leased for `lease`
        seconds, in pick order (see `_sqlite_lease.Pick`); committed when it returns."""
        pick = leases.Pick(
            worker_id,
            limit,
            lease,
            limits=limits,
            types=types,
            aging=aging,
            now=now,
            key_limits=key_limits,
        )
        if not pick.limit:
            return []
        gave_up = False

        def landed(result: leases.Picked | None) -> None:
            # Claims that commit after their caller gave up go back to the queue.
            if gave_up and result is not None and result[0]:
                ids = [record.id for record in result[0]]
                logger.warning("%r: giving back %d task(s) claimed too late", self, len(ids))
                self._require_writer().call(partial(leases.give_back, worker=pick.worker, ids=ids))

        try:
            # Shielded, like a submit: a caller that gives up must not leave claims
            # nobody knows of.
            picked = await self._in_writer(pick.run, done=landed, shield=True, doing="claim tasks")
        except StoreError:
            gave_up = True
            raise
        return self._leased(*picked)

    async def release(
        self, worker_id: str, record: TaskRecord, *, event: Event | None = None
    ) -> bool:
        """Write the record (final, or queued again), and log `event` with it, and drop
        its lease if `worker_id` still holds it; False, writing nothing, if the lease
        was lost."""
        work, events = _release_step(worker_id, record, event)
        return await self._in_writer(work, events=events)

    def release_soon(
        self,
        worker_id: str,
        record: TaskRecord,
        *,
        event: Event | None = None,
        done: Callable[[bool | None], None],
    ) -> None:
        """`release`, without waiting: ``done(released)`` runs on the event loop once
        it is committed (after its event is delivered), ``done(None)`` if it failed.
        A worker goes on with its next task meanwhile; group commits carry many."""
        work, events = _release_step(worker_id, record, event)
        self._require_writer().call(work, events=events, done=done, soon=True)

    async def extend_leases(
        self, worker_id: str, ids: Collection[str], lease: float, *, now: float | None = None
    ) -> set[str]:
        """Renew until ``now + lease`` the leases `worker_id` holds on `ids`; returns
        the ids it holds no lease on (lost)."""
        worker = checks.check_worker(worker_id)
        wanted = checks.check_ids(ids)
        until = checks.lease_end(checks.check_now(now), lease)
        if not wanted:
            return set()
        work = partial(leases.extend, worker=worker, ids=wanted, until=until)
        return set(wanted) - await self._in_writer(work)

    async def reap_expired(
        self,
        *,
        now: float | None = None,
        workers: Collection[str] = (),
        fail_types: Collection[str] = (),
        alive: Collection[str] = (),
        events_for: Callable[[TaskRecord], Event | None] | None = None,
    ) -> builtins.list[TaskRecord]:
        """Tasks whose lease ended before `now`, or held by `workers` (known dead),
        queued again while attempts remain (never those of `fail_types`), else failed
        (see `_leases.expiry_error`): their new records. ``events_for(record)``
        is logged with each change."""
        work = partial(
            leases.reap,
            now=checks.check_now(now),
            workers=workers,
            fail_types=fail_types,
            alive=alive,
        )
        return self._leased(*await self._in_writer(work, events=_events_of(events_for)))

    async def cancel_queued(
        self,
        task_id: str,
        reason: str | None,
        *,
        now: float | None = None,
        event_for: Callable[[TaskRecord], Event | None] | None = None,
    ) -> TaskRecord | None:
        """Cancel the task if it is queued or waiting for input, in one step (logging ``event_for(record)``
        with it): its new record, else None."""
        reason = checks.check_reason(reason)
        work = partial(
            leases.cancel_queued, task_id=task_id, reason=reason, now=checks.check_now(now)
        )

        def events(result: tuple[TaskRecord | None, Any]) -> builtins.list[Event]:
            cancelled = result[0]
            event = None if cancelled is None or event_for is None else event_for(cancelled)
            return [] if event is None else [event]

        record, corrupt = await self._in_writer(work, events=events)
        self._leased([] if record is None else [record], corrupt)
        return record

    async def answer_input(
        self,
        task_id: str,
        key: str,
        answer: InputAnswer,
        *,
        now: float | None = None,
        event_for: Callable[[TaskRecord], Event | None] | None = None,
    ) -> TaskRecord | None:
        """Record `answer` to the question `key` of a waiting task and queue it again, in
        one step (logging ``event_for(record)`` with it): its new record, else None."""
        work = partial(
            leases.answer, task_id=task_id, key=key, answer=answer, now=checks.check_now(now)
        )

        def events(result: tuple[TaskRecord | None, Any]) -> builtins.list[Event]:
            answered = result[0]
            event = None if answered is None or event_for is None else event_for(answered)
            return [] if event is None else [event]

        record, corrupt = await self._in_writer(work, events=events)
        self._leased([] if record is None else [record], corrupt)
        return record

    def request_cancel(self, task_id: str, reason: str | None) -> None:
        """Ask whichever process runs the task to cancel it: a `CancelRequested` in the
        log, committed with a note on the running task's row (its cancel reason), so
        that if its worker dies before it stops, reaping cancels the task instead of
        queueing it again. Not waited for."""
        reason = checks.check_reason(reason)
        event = build_trusted(
            CancelRequested,
            {
                "task_id": task_id,
                "task_type": "",
                "owner": None,
                "timestamp": time.time(),
                "reason": reason,
            },
        )
        work = partial(leases.mark_cancel_requested, task_id=task_id, reason=reason)
        try:
            self._require_writer().call(work, events=lambda _: [event], soon=True)
        except StoreError as exc:
            if "writer" not in self._reported:
                self._reported.add("writer")
                logger.error("%s; a cancel request is not logged", exc)

    def report_progress(self, worker_id: str, record: TaskRecord, event: Event | None) -> None:
        """Write a running task's progress, and log `event` with it, if `worker_id`
        still holds its lease (without waiting for the commit)."""
        work = partial(leases.progress, worker=worker_id, record=record)
        try:
            self._require_writer().call(
                work, events=lambda written: [event] if written and event is not None else []
            )
        except StoreError as exc:
            if "writer" not in self._reported:
                self._reported.add("writer")
                logger.error("%s; progress is not written", exc)

    async def next_due(self) -> float | None:
        """The earliest not-before time of a queued task (epoch seconds), if any."""
        return await self._read(leases.next_due)

    async def running_workers(self) -> builtins.list[str]:
        """The ids of the workers that hold leases now."""
        return await self._read(leases.running_workers)

    def _leased(
        self, records: builtins.list[TaskRecord], corrupt: builtins.list[CorruptRecord]
    ) -> builtins.list[TaskRecord]:
        for exc in corrupt:
            self._report_corrupt(exc)
        return records


def _release_step(
    worker_id: str, record: TaskRecord, event: Event | None
) -> tuple[Callable[[sqlite3.Connection], bool], Callable[[bool], builtins.list[Event]]]:
    """The writer's step for a release, and the events it logs when it takes."""
    worker = checks.check_worker(worker_id)
    if record.state is TaskState.RUNNING:
        raise ValueError(f"release takes a final or re-queued record, not {record!r}")
    row = change_row(record)

    def events(released: bool) -> builtins.list[Event]:
        return [event] if released and event is not None else []

    return partial(leases.release, worker=worker, row=row), events


def _events_of(
    event_for: Callable[[TaskRecord], Event | None] | None,
) -> Callable[[tuple[builtins.list[TaskRecord], Any]], builtins.list[Event]] | None:
    """The events to log with the records a lease step changed."""
    if event_for is None:
        return None

    def events(result: tuple[builtins.list[TaskRecord], Any]) -> builtins.list[Event]:
        found = (event_for(record) for record in result[0])
        return [event for event in found if event is not None]

    return events
