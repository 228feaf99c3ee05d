"""`LeaseKeeper`: one bus's claims on a store that many processes share.

The store picks and claims tasks (`TaskStore.acquire`); this bus asks for as
many as it has idle workers, hands them to its executor through its local queue,
renews the leases of what it holds every third of the lease, and reaps the
tasks of workers that stopped renewing theirs. A worker on this machine whose
process is gone (its pid no longer runs, or it was another bus of this process
that has stopped) is reaped at once, so a restart picks up at once what a crash
left running; a worker elsewhere is reaped when its lease expires.

Defaults: a 30 s lease, renewed every 10 s; reaping every 5 s. A claimed task
therefore runs again at most ~35 s after its worker dies (attempts permitting).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING

import anyio

from ._clock import Clock
from ._errors import StoreError
from ._events import Event
from ._lifecycle import Lifecycle, final_event
from ._queue import TaskQueue
from ._record import TaskRecord
from ._states import TaskState
from ._timers import TimerHandle, Timers
from .stores._base import ClaimsOnAdd, TaskStore

if TYPE_CHECKING:
    from ._executor import TaskExecutor
    from ._registry import TaskRegistry

__all__ = ["DEFAULT_LEASE", "LeaseKeeper"]

logger = logging.getLogger("taskbus.leases")

#: Seconds a claim lasts unless renewed.
DEFAULT_LEASE = 30.0
#: Seconds between two looks for expired leases and dead workers.
REAP_INTERVAL = 5.0
#: Longest wait between two claims while idle (events and due times wake it sooner).
_IDLE_CHECK = 1.0

#: Workers of this process that are running now (a stopped bus is not among them).
_LIVE_WORKERS: set[str] = set()


def is_dead(worker_id: str) -> bool:
    """Whether the worker is known to be gone: on this host, its process is not
    running (or, in this process, its bus has stopped). Unknown: False."""
    try:
        host, pid_text, _ = worker_id.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host != socket.gethostname():
        return False
    if pid == os.getpid():
        return worker_id not in _LIVE_WORKERS
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # it runs, as another user
        return False
    return False


class LeaseKeeper:
    """Claims work for one bus's executor from a shared store, and keeps the claims."""

    def __init__(
        self,
        store: TaskStore,
        *,
        queue: TaskQueue,
        executor: TaskExecutor,
        registry: TaskRegistry,
        lifecycle: Lifecycle,
        clock: Clock,
        timers: Timers,
        lease: float = DEFAULT_LEASE,
        aging: float | None = None,
    ) -> None:
        if not lease > 0:
            raise ValueError(f"lease must be a positive number of seconds, not {lease!r}")
        self.store = store
        self.lease = lease
        self.worker_id = lifecycle.worker_id
        self._queue = queue
        self._executor = executor
        self._registry = registry
        self._lifecycle = lifecycle
        self._clock = clock
        self._timers = timers
        self._due_timer: TimerHandle | None = None
        self._deferred_timer: TimerHandle | None = None
        self._aging = aging
        self._wake = anyio.Event()
        self._due_wanted = anyio.Event()
        #: The last claim got fewer tasks than it asked for, with no per-type limit
        #: in play: nothing else was ready in the store.
        self._ran_dry = False
        self._stopping = False
        self._held: dict[str, TaskRecord] = {}
        # A standing claim (`ClaimsOnAdd`): the store claims for the idle workers in
        # the commit that adds the next task, so a submit to an idle bus costs one
        # commit, not two.
        self._claims_on_add = store if isinstance(store, ClaimsOnAdd) else None
        self._standing = False  # registered, or taken by a commit not yet delivered
        self._standing_at_once = False
        self._standing_limit = 0
        self._standing_limited = False  # with per-type limits
        self._wake_after_delivery = False
        self._claim_failed = False
        self._claim_outage = _Outage("claiming tasks")
        #: Tasks the last standing claim saw added: their task-queued wakes nobody.
        self._covered: set[str] = set()

    @property
    def claiming(self) -> bool:
        """Whether this bus runs tasks (a client, with no workers, only reads and submits)."""
        return self._executor.workers > 0

    def wake(self) -> None:
        """Work may be ready: claim again now."""
        self._ran_dry = False
        self._wake.set()

    def wake_after(self, seconds: float) -> None:
        """Claim again in `seconds` (a task handed back for its rate may start then)."""
        when = self._clock.monotonic() + seconds
        timer = self._deferred_timer
        if timer is None or timer.cancelled or when < timer.when:
            if timer is not None:
                timer.cancel()
            self._deferred_timer = self._timers.call_at(when, self._deferred_due)

    def _deferred_due(self) -> None:
        self._deferred_timer = None
        self.wake()

    def work_queued(self, task_id: str) -> None:
        """The log says a task was queued: claim, unless a standing claim saw it."""
        covered = self._covered
        if task_id in covered:
            covered.discard(task_id)
            return
        self.wake()

    def capacity_freed(self) -> None:
        """A worker, or a per-type slot, is free: claim again now, unless the last
        claim found nothing more to take (then only new work wakes the loop)."""
        if not self._ran_dry:
            self._wake.set()
        elif self._claims_on_add is not None and not self._standing:
            self._stand_by()

    def stop_claiming(self) -> None:
        self._stopping = True
        self._withdraw_standing()
        self._wake.set()

    async def run(self) -> None:
        """Follow the store's log, claim, renew and reap until cancelled."""
        self._stopping = False
        _LIVE_WORKERS.add(self.worker_id)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.store.follow)
                tg.start_soon(self._reap_loop)
                if self.claiming:
                    tg.start_soon(self._claim_loop)
                    tg.start_soon(self._due_loop)
                    tg.start_soon(self._renew_loop)
        finally:
            _LIVE_WORKERS.discard(self.worker_id)

    # -- claiming ------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        outage = self._claim_outage
        while not self._stopping:
            try:
                if await self._claim_once():
                    outage.over()
                    continue
            except StoreError as exc:
                await anyio.sleep(outage.failed(exc))
                continue
            if self._claims_on_add is None:
                outage.over()
                # Off this loop's path: the next claim need not wait for the read.
                self._due_wanted.set()
            with anyio.move_on_after(_IDLE_CHECK):
                await self._wake.wait()

    async def _due_loop(self) -> None:
        """Arm the due timer whenever the claim loop goes idle."""
        outage = _Outage("reading the next due time")
        while True:
            await self._due_wanted.wait()
            self._due_wanted = anyio.Event()
            try:
                await self._arm_due_timer()
            except StoreError as exc:
                self._due_wanted.set()  # read it again after the pause
                await anyio.sleep(outage.failed(exc))
                continue
            outage.over()

    async def _claim_once(self) -> bool:
        """Claim for the idle workers; True if there may be more to claim at once."""
        self._wake = anyio.Event()
        if self._claims_on_add is not None:
            if self._claim_failed:
                self._claim_failed = False
                raise StoreError("the store could not claim tasks (its log says why)")
            self._stand_by(at_once=True)
            return False  # its delivery wakes the loop if there may be more
        free = self._executor.idle_workers - len(self._queue)
        if free > 0:
            limits, key_limits = self._limits(), self._key_limits()
            claimed = await self.store.acquire(
                self.worker_id,
                free,
                self.lease,
                limits=limits,
                aging=self._aging,
                now=self._clock.now(),
                key_limits=key_limits,
            )
            self._take(claimed)
            # Fewer than asked for: nothing more is ready now. Claiming again when a
            # worker frees up would find nothing and cost a store round trip (a
            # commit on SQLite) per task; a new task or a due time wakes the loop.
            self._ran_dry = len(claimed) < free and not limits and not key_limits
            return len(claimed) == free
        return False

    # A store that offers `ClaimsOnAdd` gets every claim as a standing one: the loop
    # asks for one at once, and while idle one stands by for the next commit that
    # adds a task, so a submit to an idle worker is stored and claimed in one commit.

    def _stand_by(self, *, at_once: bool = False) -> None:
        """Leave a claim for the idle workers with the store: run by the next commit
        that adds tasks, or (`at_once`) by the next commit."""
        store = self._claims_on_add
        assert store is not None
        self._withdraw_standing()
        if self._standing:
            # A commit has taken the last one: claim again once it is delivered.
            self._wake_after_delivery = self._wake_after_delivery or at_once
            return
        free = self._executor.idle_workers - len(self._queue)
        if self._stopping or free <= 0:
            return
        limits, key_limits = self._limits(), self._key_limits()
        try:
            store.claim_on_add(
                self.worker_id,
                free,
                self.lease,
                limits=limits,
                aging=self._aging,
                now=self._clock.now,
                deliver=self._claimed_on_add,
                at_once=at_once,
                key_limits=key_limits,
            )
        except StoreError:
            self._claim_failed = True  # the claim loop reports it and backs off
            if at_once:
                self.wake()
            return
        self._standing = True
        self._standing_at_once = at_once
        self._standing_limit = free
        self._standing_limited = bool(limits or key_limits)

    def _withdraw_standing(self) -> None:
        """Withdraw the standing claim unless a commit took it (`_standing` stays)."""
        if self._standing:
            assert self._claims_on_add is not None
            self._standing = not self._claims_on_add.withdraw_claim_on_add(self.worker_id)

    def _claimed_on_add(self, records: list[TaskRecord] | None, added: frozenset[str]) -> bool:
        """The store's answer to a standing claim; False gives the records back."""
        self._standing = False
        if records is None:  # the claim failed: the claim loop reports it and backs off
            self._claim_failed = True
            self.wake()
            return True
        if self._stopping:
            return False
        self._claim_outage.over()
        self._take(records)
        exhausted = len(records) >= self._standing_limit
        self._ran_dry = not exhausted and not self._standing_limited
        # Added tasks it did not take (delayed, or at their type's limit) still wake
        # the loop, which then arms the due timer.
        self._covered = {record.id for record in records if record.id in added}
        if exhausted or self._wake_after_delivery:
            self._wake_after_delivery = False
            self.wake()
            return True
        if self._standing_at_once:
            self._due_wanted.set()  # nothing more is ready: when is the next task due?
        self._stand_by()
        return True

    def _take(self, records: list[TaskRecord]) -> None:
        for record in records:
            self._hand(record)
        if records:
            self._executor.notify(len(records))

    def _hand(self, record: TaskRecord) -> None:
        # Claimed in the store (running, attempt counted); here it waits in the local
        # queue as queued, and `Lifecycle.started` counts the attempt again as it runs.
        record.state = TaskState.QUEUED
        record.attempt -= 1
        record.started_at = None
        self._held[record.id] = record
        self._queue.push(record)

    def _limits(self) -> dict[str, int]:
        # A type whose rate window is full is still claimed: each task claimed is
        # handed back with its reason (`waiting_for`) and a not-before time at the
        # window's reset, so its snapshot says why it waits.
        return {
            d.name: d.concurrency for d in self._registry.definitions() if d.concurrency is not None
        }

    def _key_limits(self) -> dict[str, int]:
        return {
            d.name: d.key_limit for d in self._registry.definitions() if d.key_limit is not None
        }

    async def _arm_due_timer(self) -> None:
        """Wake when the earliest delayed task becomes due (on the bus's clock)."""
        due = await self.store.next_due()
        if self._due_timer is not None:
            self._due_timer.cancel()
            self._due_timer = None
        if due is not None:
            clock = self._clock
            self._due_timer = self._timers.call_at(
                clock.monotonic() + max(due - clock.now(), 0.0), self.wake
            )

    def local(self, task_id: str) -> TaskRecord | None:
        """This bus's own record of a task it holds a lease on, as it is now."""
        record = self._held.get(task_id)
        return record if record is not None and record.worker == self.worker_id else None

    def held(self) -> list[str]:
        """The ids of the tasks this bus holds leases on now."""
        worker_id = self.worker_id
        for task_id, record in list(self._held.items()):
            if record.worker != worker_id or record.state.is_final:
                del self._held[task_id]
        return list(self._held)

    # -- keeping claims ------------------------------------------------------------

    async def _renew_loop(self) -> None:
        outage = _Outage("renewing leases")
        while True:
            await anyio.sleep(self.lease / 3)
            held = self.held()
            if not held:
                continue
            try:
                lost = await self.store.extend_leases(
                    self.worker_id, held, self.lease, now=self._clock.now()
                )
            except StoreError as exc:
                outage.failed(exc)
                continue
            outage.over()
            for task_id in lost:
                record = self._held.pop(task_id, None)
                logger.warning(
                    "%s: the lease on it was lost (this worker was too slow to renew it); "
                    "stopping it here",
                    task_id,
                )
                if record is not None:
                    record.worker = None
                self._executor.cancel_running(task_id, "lease lost")

    async def _reap_loop(self) -> None:
        while True:
            await anyio.sleep(REAP_INTERVAL)
            await self.reap_now()

    async def reap_now(self) -> None:
        """`reap`, a store error logged (the next round tries again)."""
        try:
            await self.reap()
        except StoreError as exc:
            logger.error("reaping expired leases failed: %s", exc)

    async def reap(self) -> list[TaskRecord]:
        """Re-queue or fail the tasks of workers that died; return them."""
        dead = [worker for worker in await self.store.running_workers() if is_dead(worker)]
        reaped = await self.store.reap_expired(
            now=self._clock.now(),
            workers=dead,
            fail_types=self._fail_types(),
            alive=tuple(_LIVE_WORKERS),  # this process's: alive, whatever a clock says
            events_for=_reap_event,
        )
        if reaped:
            logger.info(
                "re-queued or failed %d task(s) of workers that stopped (%s)",
                len(reaped),
                ", ".join(sorted({str(r.id) for r in reaped})[:5]),
            )
            self.wake()
        return reaped

    def _fail_types(self) -> list[str]:
        return [d.name for d in self._registry.definitions() if d.options.on_interrupt != "retry"]


class _Outage:
    """Logs a store outage once as it starts and once as it ends; backs off."""

    def __init__(self, doing: str) -> None:
        self.doing = doing
        self.failures = 0

    def failed(self, exc: BaseException) -> float:
        """Seconds to wait before trying again (0.1 s, doubling, at most 5 s)."""
        if not self.failures:
            logger.error("%s failed: %s; trying again", self.doing, exc)
        self.failures += 1
        return float(min(0.1 * 2 ** (self.failures - 1), 5.0))

    def over(self) -> None:
        if self.failures:
            logger.warning("%s works again (after %d failure(s))", self.doing, self.failures)
            self.failures = 0


def _reap_event(record: TaskRecord) -> Event | None:
    # A task queued again after its worker died is not retrying (nothing it did
    # failed); only a final state has an event.
    return final_event(record) if record.state.is_final else None
