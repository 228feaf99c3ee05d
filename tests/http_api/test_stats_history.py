"""``GET /stats/history``: the dashboard's live figures over HTTP.

After a known run (5 completed, 2 failed, 1 cancelled, on memory and on SQLite) the
app's lifespan has sampled a point with those finals and the queue depth, on the
bus's `FakeClock` (advanced by the test, never slept); an app whose lifespan does
not run says it is not sampling; with tokens only an administrator reads it (401,
403) and the OpenAPI document says so; a store outage and a broken store answer 200
with the last counts or a gap, never a 5xx.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from taskbus import (
    FatalError,
    Identity,
    RetryPolicy,
    StoreError,
    TaskBus,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
)
from taskbus.integrations.http import create_app
from taskbus.stores import MemoryStore, StoreStats
from taskbus.testing import EventRecorder, FakeClock

from .conftest import asgi_client

pytestmark = pytest.mark.anyio

WAIT = 10.0
STORES: dict[str, Callable[[Path], str]] = {
    "memory": lambda tmp_path: "memory://",
    "sqlite": lambda tmp_path: f"sqlite:///{tmp_path / 'bus.db'}",
}
TOKENS: dict[str, str | Identity] = {
    "alice-token": "alice",
    "ops-token": Identity(owner="ops", admin=True),
}


def register(bus: TaskBus) -> None:
    @bus.task("h:ok")
    async def ok(n: int) -> int:
        return n

    @bus.task("h:bad", retry=RetryPolicy.never())
    async def bad(n: int) -> None:
        raise FatalError(f"no {n}")


async def points(client: httpx.AsyncClient, count: int) -> dict[str, Any]:
    """The history once it holds `count` points (the sampler runs in the lifespan's task;
    a bounded wait for it to record the tick the test gave it)."""
    with anyio.fail_after(WAIT):
        while True:
            answer = await client.get("/stats/history")
            assert answer.status_code == 200, answer.text
            body: dict[str, Any] = answer.json()
            if len(body["points"]) >= count:
                return body
            await anyio.sleep(0.005)


@pytest.mark.parametrize("kind", list(STORES))
async def test_the_history_after_a_known_run(kind: str, tmp_path: Path) -> None:
    clock = FakeClock()
    bus = TaskBus(store=STORES[kind](tmp_path), workers=2, shutdown_grace=1.0, clock=clock)
    register(bus)
    app = create_app(bus, stats_interval=2.5)
    heard = EventRecorder(bus)
    async with bus, app.router.lifespan_context(app), asgi_client(app) as client:
        first = await points(client, 1)
        delayed = await bus.submit("h:ok", 99, delay=3600)
        for n in range(5):
            await bus.submit("h:ok", n)
        for n in range(2):
            await bus.submit("h:bad", n)
        await heard.wait_for(TaskCompleted, count=5, timeout=WAIT)
        await heard.wait_for(TaskFailed, count=2, timeout=WAIT)
        await bus.cancel(delayed.id)
        await heard.wait_for(TaskCancelled, timeout=WAIT)
        await bus.submit("h:ok", 100, delay=3600)
        clock.advance(2.5)
        body = await points(client, 2)
    assert (first["interval"], first["window"], first["sampling"]) == (2.5, 600.0, True)
    assert len(body["points"]) == 2
    start, after = body["points"]
    assert {k: start[k] for k in ("completed", "failed", "cancelled", "queued")} == {
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
        "queued": 0,
    }
    assert after == {
        "timestamp": after["timestamp"],
        "completed": 5,
        "failed": 2,
        "cancelled": 1,
        "queued": 1,
        "running": 0,
        "store_outage": False,
    }
    assert after["timestamp"] > start["timestamp"]


async def test_the_app_samples_while_its_lifespan_runs_and_says_when_it_does_not() -> None:
    bus = TaskBus(workers=1, shutdown_grace=1.0, clock=FakeClock())
    app = create_app(bus, manage_bus=True)
    async with asgi_client(app) as client:  # httpx's ASGI transport runs no lifespan
        idle = (await client.get("/stats/history")).json()
        async with app.router.lifespan_context(app):
            assert bus.running
            live = await points(client, 1)
        stopped = (await client.get("/stats/history")).json()
    assert idle == {"interval": 5.0, "window": 600.0, "sampling": False, "points": []}
    assert live["sampling"] is True and len(live["points"]) == 1
    assert stopped["sampling"] is False and stopped["points"] == live["points"]


@pytest.mark.parametrize("interval", [0, -5, 601, float("nan")])
def test_create_app_refuses_a_bad_interval(interval: float) -> None:
    with pytest.raises(ValueError, match="stats interval"):
        create_app(TaskBus(workers=1), stats_interval=interval)


async def test_with_tokens_only_an_administrator_reads_the_history() -> None:
    bus = TaskBus(workers=1)
    app = create_app(bus, tokens=TOKENS)
    async with asgi_client(app) as anyone:
        nobody = await anyone.get("/stats/history")
    async with asgi_client(app, "alice-token") as alice:
        owner = await alice.get("/stats/history")
        doc = (await alice.get("/openapi.json")).json()
    async with asgi_client(app, "ops-token") as ops:
        admin = await ops.get("/stats/history")
    assert nobody.status_code == 401
    assert owner.status_code == 403
    assert owner.json()["error"]["code"] == "forbidden"
    assert admin.status_code == 200 and admin.json()["points"] == []
    responses = doc["paths"]["/stats/history"]["get"]["responses"]
    assert {"200", "401", "403"} <= set(responses)


class FlakyStatsStore(MemoryStore):
    down = False
    broken = False

    async def stats(self) -> StoreStats:
        if self.broken:
            raise RuntimeError("a bug in the store")
        if self.down:
            raise StoreError("the counts are out of reach")
        return await super().stats()


async def test_a_store_outage_and_a_broken_store_are_no_5xx() -> None:
    clock = FakeClock()
    store = FlakyStatsStore()
    bus = TaskBus(store=store, workers=1, shutdown_grace=1.0, clock=clock)
    register(bus)
    app = create_app(bus)
    async with bus, app.router.lifespan_context(app), asgi_client(app) as client:
        await bus.submit("h:ok", 0, delay=3600)
        await points(client, 1)
        store.down = True
        clock.advance(5)
        await points(client, 2)
        store.broken = True
        clock.advance(5)
        body = await points(client, 3)
    first, outage, gap = body["points"]
    assert (first["queued"], first["store_outage"]) == (1, False)
    assert (outage["queued"], outage["running"], outage["store_outage"]) == (1, 0, True)
    assert (gap["queued"], gap["running"]) == (None, None)
