"""Dependencies in the stores that hold claims (`LEASING`: SQLite, the fake, Redis).

A child submitted after parents is stored queued with the not-before time
`AWAITING_PARENTS` and its parents' ids in ``metadata["after"]``: no claim takes
it. The very step that makes its last unfinished parent final (a release, a
queued cancel, a reap that fails) clears that time and its `waiting_for`, so any
worker in any process can claim it; a child whose parents are all final when it
is added is claimable at once. (The policy for a failed parent is the runtime's:
tests/test_dependencies.py.)
"""

from __future__ import annotations

import pytest

from taskbus import TaskState
from taskbus._dependencies import mark_waiting
from taskbus._record import AWAITING_PARENTS, TaskRecord

from .test_contract import T0, make_record
from .test_leases import LEASE, LeasingStore, completed, queue, store, stored

pytestmark = pytest.mark.anyio

__all__ = ["store"]  # the fixture, imported for these tests


async def child_of(store: LeasingStore, *parents: TaskRecord, at: float = T0) -> TaskRecord:
    """Add a child of `parents`, held back while one of them is unfinished."""
    record = make_record("reports:publish", {"n": 2}, created_at=at)
    pending = any(not parent.state.is_final for parent in parents)
    mark_waiting(record, [parent.id for parent in parents], "cancel", pending)
    await store.add(record)
    return record


async def test_a_child_is_not_claimed_while_its_parent_is_unfinished(
    store: LeasingStore,
) -> None:
    parent = await queue(store)
    child = await child_of(store, parent, at=T0 + 1)

    got = await stored(store, child)
    assert (got.state, got.not_before, got.waiting_for) == (
        TaskState.QUEUED,
        AWAITING_PARENTS,
        "parents",
    )
    assert got.snapshot().not_before is None, "the hold is not a time to show"
    (claimed,) = await store.acquire("w1", 10, LEASE, now=T0 + 2)
    assert claimed.id == parent.id
    assert await store.acquire("w1", 10, LEASE, now=T0 + 3) == []


async def test_the_release_that_finishes_the_last_parent_frees_the_child(
    store: LeasingStore,
) -> None:
    first, second = await queue(store), await queue(store, at=T0 + 1)
    child = await child_of(store, first, second, at=T0 + 2)
    running = await store.acquire("w1", 10, LEASE, now=T0 + 3)
    assert {r.id for r in running} == {first.id, second.id}
    by_id = {r.id: r for r in running}

    assert await store.release("w1", completed(by_id[first.id], T0 + 4))
    assert (await stored(store, child)).not_before == AWAITING_PARENTS, "one parent left"
    assert await store.acquire("w2", 10, LEASE, now=T0 + 5) == []

    assert await store.release("w1", completed(by_id[second.id], T0 + 6))
    got = await stored(store, child)
    assert (got.not_before, got.waiting_for) == (None, None)
    (claimed,) = await store.acquire("w2", 10, LEASE, now=T0 + 7)
    assert claimed.id == child.id


async def test_a_failed_or_cancelled_parent_frees_the_child_too(store: LeasingStore) -> None:
    failing, cancelled = await queue(store), await queue(store, at=T0 + 1)
    child = await child_of(store, failing, cancelled, at=T0 + 2)
    (record,) = await store.acquire("w1", 1, LEASE, now=T0 + 3)
    assert record.id == failing.id

    record.move(TaskState.FAILED)
    record.finished_at = T0 + 4
    assert await store.release("w1", record)
    assert await store.cancel_queued(cancelled.id, "stop", now=T0 + 5) is not None

    (claimed,) = await store.acquire("w2", 10, LEASE, now=T0 + 6)
    assert claimed.id == child.id


async def test_a_reap_that_fails_the_parent_frees_the_child(store: LeasingStore) -> None:
    parent = await queue(store, max_attempts=1)
    child = await child_of(store, parent, at=T0 + 1)
    await store.acquire("w1", 1, LEASE, now=T0 + 2)

    (reaped,) = await store.reap_expired(now=T0 + 2 + LEASE + 1)

    assert reaped.state is TaskState.FAILED
    assert (await stored(store, child)).not_before is None


async def test_a_child_of_finished_parents_is_claimable_at_once(store: LeasingStore) -> None:
    parent = await queue(store)
    (record,) = await store.acquire("w1", 1, LEASE, now=T0 + 1)
    assert await store.release("w1", completed(record, T0 + 2))

    child = await child_of(store, await stored(store, parent), at=T0 + 3)

    assert (await stored(store, child)).not_before is None
    (claimed,) = await store.acquire("w2", 1, LEASE, now=T0 + 4)
    assert claimed.id == child.id


async def test_a_parent_that_ends_before_the_child_is_added_cannot_strand_it(
    store: LeasingStore,
) -> None:
    # The submitter saw the parent running; it finished before the child's add.
    parent = await queue(store)
    (record,) = await store.acquire("w1", 1, LEASE, now=T0 + 1)
    seen_running = await stored(store, parent)
    assert await store.release("w1", completed(record, T0 + 2))

    child = await child_of(store, seen_running, at=T0 + 3)

    got = await stored(store, child)
    assert (got.not_before, got.waiting_for) == (None, None)


async def test_a_waiting_child_can_be_cancelled(store: LeasingStore) -> None:
    parent = await queue(store)
    child = await child_of(store, parent, at=T0 + 1)

    cancelled = await store.cancel_queued(child.id, "not needed", now=T0 + 2)

    assert cancelled is not None and cancelled.state is TaskState.CANCELLED
    (record,) = await store.acquire("w1", 10, LEASE, now=T0 + 3)
    assert await store.release("w1", completed(record, T0 + 4))
    assert (await stored(store, child)).state is TaskState.CANCELLED


async def test_a_purged_parent_counts_as_finished(store: LeasingStore) -> None:
    gone, other = await queue(store), await queue(store, at=T0 + 1)
    child = await child_of(store, gone, other, at=T0 + 2)
    by_id = {r.id: r for r in await store.acquire("w1", 10, LEASE, now=T0 + 3)}
    assert await store.release("w1", completed(by_id[gone.id], T0 + 4))
    assert await store.purge(finished_before=T0 + 5) == 1

    assert await store.release("w1", completed(by_id[other.id], T0 + 6))

    assert (await stored(store, child)).not_before is None
