"""The dashboard's live figures (`taskbus.integrations._http_history.StatsHistory`).

A known run is one point of 5 completed, 2 failed and 1 cancelled, on memory and on
SQLite; with two buses on one SQLite file the bus that runs nothing counts the
other's finals (as a dashboard in front of worker processes does); the ring keeps
ten minutes and no more; the sampler ticks on the bus's clock (a `FakeClock`, no
sleeping); a store outage repeats the last counts and any other error leaves a gap.
Every test runs on asyncio and trio.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskbus import (
    FatalError,
    RetryPolicy,
    StoreError,
    TaskBus,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
)
from taskbus.integrations._http_history import HISTORY_WINDOW, StatsHistory
from taskbus.integrations._http_models import HistoryPoint
from taskbus.stores import MemoryStore, StoreStats
from taskbus.testing import EventRecorder, FakeClock

pytestmark = pytest.mark.anyio

WAIT = 10.0
STORES: dict[str, Callable[[Path], str]] = {
    "memory": lambda tmp_path: "memory://",
    "sqlite": lambda tmp_path: f"sqlite:///{tmp_path / 'bus.db'}",
}


def register(bus: TaskBus) -> None:
    @bus.task("h:ok")
    async def ok(n: int) -> int:
        return n

    @bus.task("h:bad", retry=RetryPolicy.never())
    async def bad(n: int) -> None:
        raise FatalError(f"no {n}")


async def known_run(submitter: TaskBus, heard: EventRecorder) -> None:
    """5 completed, 2 failed, and 1 cancelled (a task delayed for an hour): all heard."""
    delayed = await submitter.submit("h:ok", 99, delay=3600)
    for n in range(5):
        await submitter.submit("h:ok", n)
    for n in range(2):
        await submitter.submit("h:bad", n)
    await heard.wait_for(TaskCompleted, count=5, timeout=WAIT)
    await heard.wait_for(TaskFailed, count=2, timeout=WAIT)
    await submitter.cancel(delayed.id)
    await heard.wait_for(TaskCancelled, timeout=WAIT)


def figures(point: HistoryPoint) -> dict[str, Any]:
    return point.model_dump(exclude={"timestamp"})


@pytest.mark.parametrize("kind", list(STORES))
async def test_a_known_run_is_one_point_of_its_finals_and_the_queue(
    kind: str, tmp_path: Path
) -> None:
    bus = TaskBus(store=STORES[kind](tmp_path), workers=2, shutdown_grace=1.0)
    register(bus)
    history = StatsHistory(bus, interval=5)
    heard = EventRecorder(bus)
    async with bus:
        before = await history.sample()
        await bus.submit("h:ok", 0, delay=3600)
        queued = await history.sample()
        await known_run(bus, heard)
        after = await history.sample()
    empty = {"completed": 0, "failed": 0, "cancelled": 0, "running": 0, "store_outage": False}
    assert figures(before) == {**empty, "queued": 0}
    assert figures(queued) == {**empty, "queued": 1}
    assert figures(after) == {
        **empty,
        "completed": 5,
        "failed": 2,
        "cancelled": 1,
        "queued": 1,  # the first delayed task still waits
    }
    assert list(history.points) == [before, queued, after]


async def test_a_bus_that_runs_nothing_counts_the_finals_of_another_on_its_store(
    tmp_path: Path,
) -> None:
    """Two buses on one SQLite file, as a dashboard process and a worker process: the
    dashboard's bus (no workers) hears every final through the store's event log."""
    store = STORES["sqlite"](tmp_path)
    front = TaskBus(store=store, workers=0, shutdown_grace=1.0)
    worker = TaskBus(store=store, workers=2, shutdown_grace=1.0)
    register(front)
    register(worker)
    front_history = StatsHistory(front, interval=5)
    worker_history = StatsHistory(worker, interval=5)
    heard_front, heard_worker = EventRecorder(front), EventRecorder(worker)
    async with front, worker:
        await front_history.sample()
        await worker_history.sample()
        await known_run(front, heard_front)
        await heard_worker.wait_for(TaskCancelled, timeout=WAIT)
        points = [await front_history.sample(), await worker_history.sample()]
    ran_by = {e.worker for e in heard_front.of(TaskStarted)}
    assert ran_by == {worker.worker_id}, "the front bus ran none of them"
    for point in points:  # each process counts every final once
        assert (point.completed, point.failed, point.cancelled) == (5, 2, 1)
        assert (point.queued, point.running) == (0, 0)


async def test_the_ring_keeps_ten_minutes_and_no_more() -> None:
    clock = FakeClock()
    bus = TaskBus(workers=1, clock=clock)
    history = StatsHistory(bus, interval=60)
    assert history.points.maxlen == int(HISTORY_WINDOW / 60) == 10
    start = clock.now()
    for _ in range(25):
        await history.sample()
        clock.advance(60)
    stamps = [point.timestamp.timestamp() for point in history.points]
    assert stamps == [start + 60 * n for n in range(15, 25)]
    assert StatsHistory(bus, interval=7).points.maxlen == 86  # ceil(600 / 7)


class Watched(StatsHistory):
    """Sets `taken` after each point, so a test can wait for the sampler's tick."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.taken = anyio.Event()

    async def sample(self) -> HistoryPoint:
        point = await super().sample()
        self.taken.set()
        self.taken = anyio.Event()
        return point


async def test_the_sampler_takes_a_point_at_once_then_every_interval_of_the_bus_clock() -> None:
    clock = FakeClock()
    bus = TaskBus(workers=1, clock=clock)
    register(bus)
    history = Watched(bus, interval=5)
    heard = EventRecorder(bus)
    assert not history.sampling
    async with bus:
        with anyio.fail_after(WAIT):
            async with history.run():
                assert history.sampling
                await history.taken.wait()  # the first point, at once
                handle = await bus.submit("h:ok", 1)
                await heard.wait_for(TaskCompleted, task_id=handle.id)
                taken = history.taken
                clock.advance(5)
                await taken.wait()
                taken = history.taken
                clock.advance(5)
                await taken.wait()
    assert not history.sampling
    assert [p.completed for p in history.points] == [0, 1, 0]
    stamps = [p.timestamp.timestamp() - clock.now() for p in history.points]
    assert stamps == [-10, -5, 0]


class FlakyStatsStore(MemoryStore):
    """A memory store whose counts cannot be read (`down`), or whose read breaks."""

    down = False
    broken = False

    async def stats(self) -> StoreStats:
        if self.broken:
            raise RuntimeError("a bug in the store")
        if self.down:
            raise StoreError("the counts are out of reach")
        return await super().stats()


async def test_an_outage_repeats_the_last_counts_and_another_error_leaves_a_gap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStatsStore()
    bus = TaskBus(store=store, workers=1, shutdown_grace=1.0)
    register(bus)
    history = StatsHistory(bus, interval=5)
    heard = EventRecorder(bus)
    async with bus:
        await bus.submit("h:ok", 0, delay=3600)
        seen = await history.sample()
        store.down = True
        await bus.submit("h:ok", 1)
        await heard.wait_for(TaskCompleted)
        outage = await history.sample()
        store.down, store.broken = False, True
        with caplog.at_level(logging.ERROR, logger="taskbus.http"):
            gap = await history.sample()
        store.broken = False
        back = await history.sample()
    assert (seen.queued, seen.store_outage) == (1, False)
    assert (outage.queued, outage.running, outage.store_outage) == (1, 0, True)
    assert outage.completed == 1, "finals are heard whatever the store says"
    assert (gap.queued, gap.running, gap.store_outage) == (None, None, False)
    assert "could not read the bus's stats" in caplog.text
    assert (back.queued, back.store_outage) == (1, False)


@pytest.mark.parametrize("interval", [0, -1, float("nan"), float("inf"), 601, True, "5"])
def test_a_bad_interval_is_refused(interval: Any) -> None:
    with pytest.raises(ValueError, match="stats interval"):
        StatsHistory(TaskBus(workers=1), interval=interval)
