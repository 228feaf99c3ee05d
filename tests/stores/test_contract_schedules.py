"""The `ScheduleStore` half of the store contract, run against every store
(memory, sqlite, fake, redis): upserts that keep a schedule's state, pause and
resume, due schedules, and the fire that claims a due time and adds its task in
one step (exactly once, whoever tries)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
import pytest

from taskbus import Schedule, TaskState
from taskbus._record import TaskRecord, new_task_id
from taskbus.abc import ScheduleStore
from taskbus.stores import Store

from .conftest import StoreFactory

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0


def at(stamp: float) -> datetime:
    return datetime.fromtimestamp(stamp, UTC)


def make_schedule(schedule_id: str = "nightly", **fields: Any) -> Schedule:
    values: dict[str, Any] = {
        "id": schedule_id,
        "task_type": "reports:build",
        "every": 60.0,
        "input": {"year": 2025, "ratio": 0.1},
        "metadata": {"team": "ops"},
        "next_fire_at": at(T0 + 60),
        "created_at": at(T0),
    }
    values.update(fields)
    return Schedule(**values)


def fire_record(schedule_id: str = "nightly") -> TaskRecord:
    return TaskRecord(
        new_task_id(), "reports:build", {"year": 2025}, 5, T0, 1, None, {"schedule_id": schedule_id}
    )


def schedules_of(store: Store) -> ScheduleStore:
    assert isinstance(store, ScheduleStore)
    return store


async def test_a_stored_schedule_reads_back_equal(make_store: StoreFactory) -> None:
    store = schedules_of(await make_store())
    schedule = make_schedule(owner="alice", tz="Europe/Paris", jitter=1.5, priority=7)
    stored = await store.put_schedule(schedule)
    assert stored == schedule
    assert await store.get_schedule("nightly") == schedule
    assert await store.get_schedule("other") is None
    assert await store.list_schedules() == [schedule]
    assert await store.list_schedules(owner="alice") == [schedule]
    assert await store.list_schedules(owner="bob") == []


async def test_putting_the_same_timing_again_keeps_the_state(make_store: StoreFactory) -> None:
    store = schedules_of(await make_store())
    await store.put_schedule(make_schedule())
    assert await store.fire_schedule(
        "nightly", due=T0 + 60, next_fire_at=T0 + 120, record=fire_record(), fired_for=T0 + 60
    )
    await store.pause_schedule("nightly", paused=True)
    again = make_schedule(next_fire_at=at(T0 + 999), created_at=at(T0 + 5), input={"year": 1})
    kept = await store.put_schedule(again, keep_paused=True)
    assert kept.next_fire_at == at(T0 + 120), "the next fire time is kept"
    assert kept.last_fire_at == at(T0 + 60)
    assert kept.created_at == at(T0)
    assert kept.paused is True
    assert kept.input == {"year": 1}, "the definition is replaced"
    unpaused = await store.put_schedule(again)
    assert unpaused.paused is False


async def test_a_new_timing_replaces_the_state(make_store: StoreFactory) -> None:
    store = schedules_of(await make_store())
    await store.put_schedule(make_schedule())
    changed = make_schedule(every=30.0, next_fire_at=at(T0 + 30))
    assert await store.put_schedule(changed) == changed
    assert (await store.list_schedules()) == [changed]


async def test_due_schedules_are_the_unpaused_ones_due_earliest_first(
    make_store: StoreFactory,
) -> None:
    store = schedules_of(await make_store())
    await store.put_schedule(make_schedule("b", next_fire_at=at(T0 + 10)))
    await store.put_schedule(make_schedule("a", next_fire_at=at(T0 + 20)))
    await store.put_schedule(make_schedule("c", next_fire_at=at(T0 + 5), paused=True))
    await store.put_schedule(make_schedule("d", next_fire_at=at(T0 + 50)))
    due = await store.due_schedules(T0 + 20)
    assert [s.id for s in due] == ["b", "a"]
    assert [s.id for s in await store.due_schedules(T0 + 100, limit=1)] == ["b"]
    assert [s.id for s in await store.list_schedules()] == ["a", "b", "c", "d"]


async def test_pause_and_resume(make_store: StoreFactory) -> None:
    store = schedules_of(await make_store())
    await store.put_schedule(make_schedule())
    paused = await store.pause_schedule("nightly", paused=True)
    assert paused is not None and paused.paused
    assert await store.due_schedules(T0 + 1000) == []
    resumed = await store.pause_schedule("nightly", paused=False, next_fire_at=T0 + 500)
    assert resumed is not None and not resumed.paused
    assert resumed.next_fire_at == at(T0 + 500)
    assert [s.id for s in await store.due_schedules(T0 + 500)] == ["nightly"]
    assert await store.pause_schedule("missing", paused=True) is None


async def test_remove(make_store: StoreFactory) -> None:
    store = schedules_of(await make_store())
    await store.put_schedule(make_schedule())
    assert await store.remove_schedule("nightly") is True
    assert await store.remove_schedule("nightly") is False
    assert await store.get_schedule("nightly") is None
    assert await store.due_schedules(T0 + 1000) == []


async def test_a_fire_moves_the_time_on_and_adds_the_task(make_store: StoreFactory) -> None:
    store = schedules_of(await make_store())
    await store.put_schedule(make_schedule())
    record = fire_record()
    assert await store.fire_schedule(
        "nightly", due=T0 + 60, next_fire_at=T0 + 120, record=record, fired_for=T0 + 60
    )
    schedule = await store.get_schedule("nightly")
    assert schedule is not None
    assert schedule.next_fire_at == at(T0 + 120)
    assert schedule.last_fire_at == at(T0 + 60)
    assert schedule.last_task_id == record.id
    assert isinstance(store, Store)
    stored = await store.get(record.id)
    assert stored is not None and stored.state is TaskState.QUEUED
    assert stored.metadata == {"schedule_id": "nightly"}


async def test_a_fire_that_is_not_due_writes_nothing(make_store: StoreFactory) -> None:
    store = schedules_of(await make_store())
    await store.put_schedule(make_schedule())
    record = fire_record()
    assert not await store.fire_schedule(
        "nightly", due=T0 + 59, next_fire_at=T0 + 120, record=record, fired_for=T0 + 59
    )
    assert not await store.fire_schedule(
        "missing", due=T0 + 60, next_fire_at=T0 + 120, record=record, fired_for=T0 + 60
    )
    await store.pause_schedule("nightly", paused=True)
    assert not await store.fire_schedule(
        "nightly", due=T0 + 60, next_fire_at=T0 + 120, record=record, fired_for=T0 + 60
    )
    assert isinstance(store, Store)
    assert await store.get(record.id) is None
    schedule = await store.get_schedule("nightly")
    assert schedule is not None and schedule.next_fire_at == at(T0 + 60)


async def test_a_fire_without_a_task_only_moves_the_time(make_store: StoreFactory) -> None:
    store = schedules_of(await make_store())
    await store.put_schedule(make_schedule())
    assert await store.fire_schedule("nightly", due=T0 + 60, next_fire_at=T0 + 600, record=None)
    schedule = await store.get_schedule("nightly")
    assert schedule is not None
    assert schedule.next_fire_at == at(T0 + 600)
    assert schedule.last_task_id is None


async def test_concurrent_fires_of_one_time_make_one_task(make_store: StoreFactory) -> None:
    store = schedules_of(await make_store())
    await store.put_schedule(make_schedule())
    records = [fire_record() for _ in range(8)]
    won: list[TaskRecord] = []

    async def fire(record: TaskRecord) -> None:
        if await store.fire_schedule(
            "nightly", due=T0 + 60, next_fire_at=T0 + 120, record=record, fired_for=T0 + 60
        ):
            won.append(record)

    async with anyio.create_task_group() as tg:
        for record in records:
            tg.start_soon(fire, record)
    assert len(won) == 1
    assert isinstance(store, Store)
    stored = [await store.get(record.id) for record in records]
    assert [r.id for r in stored if r is not None] == [won[0].id]


async def test_schedules_survive_a_reopen(make_durable_store: StoreFactory) -> None:
    store = schedules_of(await make_durable_store())
    await store.put_schedule(make_schedule())
    assert await store.fire_schedule("nightly", due=T0 + 60, next_fire_at=T0 + 120, record=None)
    assert isinstance(store, Store)
    await store.close()
    again = schedules_of(await make_durable_store())
    schedule = await again.get_schedule("nightly")
    assert schedule is not None and schedule.next_fire_at == at(T0 + 120)
