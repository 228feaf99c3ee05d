"""The SSE history is bounded in bytes as well as in events, and keeps the newest."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from taskbus import TaskBus, TaskCompleted
from taskbus.integrations._sse_history import DEFAULT_HISTORY_BYTES, EventHistory
from taskbus.integrations.http import create_app

from .conftest import client_for, serve, sse

pytestmark = pytest.mark.anyio

KIB = 1024


def completed(number: int, size: int) -> TaskCompleted:
    return TaskCompleted.trusted(
        task_id=f"{number:032x}",
        task_type="flood",
        owner=None,
        timestamp=datetime.now(UTC),
        result="x" * size,
        duration=0.0,
    )


def accept_all(event: object) -> bool:
    return True


def test_the_default_bound_is_8_mib() -> None:
    assert DEFAULT_HISTORY_BYTES == 8 * 1024 * 1024
    assert EventHistory(10, client_limit=10).max_bytes == DEFAULT_HISTORY_BYTES


def test_a_flood_of_large_events_stays_under_the_byte_bound_keeping_the_newest() -> None:
    history = EventHistory(10_000, max_bytes=256 * KIB, client_limit=10_000)
    for number in range(2_000):  # ~20 MiB in all
        history(completed(number, 10 * KIB))
        assert history.retained_bytes <= 256 * KIB
    kept = [int(event.task_id, 16) for event in history.retained()]  # type: ignore[attr-defined]
    assert kept == list(range(2_000 - len(kept), 2_000))  # the newest, none missing
    assert 20 <= len(kept) <= 25  # as many as fit: 256 KiB / ~10 KiB


def test_an_event_larger_than_the_bound_reaches_streams_but_is_not_kept() -> None:
    history = EventHistory(100, max_bytes=4 * KIB, client_limit=100)
    stream = history.open(accept_all, after=None, replay=None)
    history(completed(1, 100))
    history(completed(2, 8 * KIB))
    assert [int(e.task_id, 16) for e in history.retained()] == [1]  # type: ignore[attr-defined]
    assert history.retained_bytes < 4 * KIB
    assert not stream.overflowed and len(stream._items) == 2


def test_a_client_that_falls_behind_by_more_than_its_byte_bound_is_dropped() -> None:
    history = EventHistory(10_000, max_bytes=64 * KIB, client_limit=10_000, client_bytes=64 * KIB)
    stream = history.open(accept_all, after=None, replay=None)
    for number in range(10):
        history(completed(number, 10 * KIB))
    assert stream.overflowed and stream.closed
    assert stream not in history.streams


async def test_a_resumed_stream_replays_only_the_newest_events_within_the_bound(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()

    @bus.task("flood")
    async def flood(size: int) -> str:
        return "x" * size

    app = create_app(bus, event_history_bytes=64 * KIB)
    async with bus, serve(app) as url, client_for(url) as client:
        ids = [
            (await client.post("/tasks", json={"type": "flood", "input": 10 * KIB})).json()["id"]
            for _ in range(40)
        ]
        for task_id in ids:
            await bus.wait(task_id, timeout=5)
        replayed = []
        async with sse(client, headers={"Last-Event-ID": "0"}) as resumed:
            while True:
                try:
                    replayed.append(await resumed.next(timeout=0.3))
                except TimeoutError:
                    break
    assert sum(len(m.data) for m in replayed) <= 64 * KIB
    finals = [m.json["task_id"] for m in replayed if m.event == "task-completed"]
    assert 3 <= len(finals) <= 6
    assert finals == ids[-len(finals) :]  # the newest
    assert [int(m.id or 0) for m in replayed] == sorted(int(m.id or 0) for m in replayed)
