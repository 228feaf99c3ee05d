"""Prometheus metrics (`taskbus.metrics`): ``GET /metrics`` parsed with
prometheus_client's own text parser after a known run, on memory, SQLite and
Redis; two buses sharing one store (as two processes would) each count only what
they ran, on SQLite and Redis; the admin-only rule with tokens; the event bus's
count of progress events dropped from slow subscriptions.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from _redis import redis_store
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from taskbus import (
    FatalError,
    RetryableError,
    RetryPolicy,
    TaskBus,
    TaskContext,
    TaskProgress,
)
from taskbus._bus import EventBus
from taskbus.integrations.http import create_app
from taskbus.metrics import BusMetrics, instrument
from taskbus.stores import Store
from taskbus.testing import FakeClock

pytestmark = pytest.mark.anyio

WAIT = 10.0
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

STORES: dict[str, Callable[[Path], Store | str]] = {
    "memory": lambda tmp_path: "memory://",
    "sqlite": lambda tmp_path: f"sqlite:///{tmp_path / 'bus.db'}",
    "redis": redis_store,
}


class Job(BaseModel):
    n: int


def samples(text: str, *, drop: tuple[str, ...] = ("worker",)) -> Samples:
    """Every sample by name and labels (without `drop`), summed over what is dropped."""
    found: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in drop))
            key = (sample.name, labels)
            found[key] = found.get(key, 0.0) + sample.value
    return found


def register(bus: TaskBus) -> None:
    @bus.task("m:ok")
    async def ok(ctx: TaskContext, params: Job) -> int:
        return params.n

    @bus.task("m:bad", retry=RetryPolicy(max_attempts=2, base_delay=0.01, jitter=0))
    async def bad(ctx: TaskContext, params: Job) -> None:
        if params.n == 0:
            raise FatalError("no")
        raise RetryableError(f"not yet ({ctx.attempt})")


async def known_run(bus: TaskBus) -> None:
    """5 completed; 2 failed (one fatal, one retryable out of attempts); 1 retry."""
    handles = [await bus.submit("m:ok", {"n": n}) for n in range(5)]
    handles += [await bus.submit("m:bad", {"n": n}) for n in range(2)]
    with anyio.fail_after(WAIT):
        for handle in handles:
            await bus.wait(handle.id, timeout=WAIT)


def expected(run_workers: int = 1) -> Samples:
    def key(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return name, tuple(sorted(labels.items()))

    return {
        key("taskbus_task_outcomes_total", type="m:ok", outcome="completed", error_type=""): 5,
        key("taskbus_task_outcomes_total", type="m:bad", outcome="failed", error_type="fatal"): 1,
        key(
            "taskbus_task_outcomes_total", type="m:bad", outcome="failed", error_type="retryable"
        ): 1,
        key("taskbus_task_retries_total", type="m:bad", error_type="retryable"): 1,
        key("taskbus_task_run_seconds_count", type="m:ok"): 5,
        key("taskbus_task_run_seconds_count", type="m:bad"): 3,
        key("taskbus_task_wait_seconds_count", type="m:ok"): 5,
        key("taskbus_task_wait_seconds_count", type="m:bad"): 2,
        key("taskbus_tasks", type="m:ok", state="completed"): 5 * run_workers,
        key("taskbus_tasks", type="m:bad", state="failed"): 2 * run_workers,
        key("taskbus_listener_errors_total"): 0,
        key("taskbus_subscription_dropped_events_total"): 0,
        key("taskbus_workers"): 2 * run_workers,
    }


def check(found: Samples, want: Samples) -> None:
    assert {k: found.get(k) for k in want} == want


@pytest.fixture(params=list(STORES), ids=list(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store | str:
    return STORES[request.param](tmp_path)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the HTTP app's client; the listener itself is backend-neutral


async def test_get_metrics_after_a_known_run_counts_each_outcome_exactly(
    store: Store | str,
) -> None:
    bus = TaskBus(store=store, workers=2, shutdown_grace=1.0)
    register(bus)
    app = create_app(bus)
    transport = httpx.ASGITransport(app=app)
    async with bus, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        await known_run(bus)
        answer = await client.get("/metrics")
        doc = (await client.get("/openapi.json")).json()
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    found = samples(answer.text)
    check(found, expected())
    assert found[("taskbus_worker_utilisation", ())] == 0.0
    assert "/metrics" in doc["paths"]


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_instrument_counts_into_the_registry_given(anyio_backend: str) -> None:
    bus = TaskBus(workers=2)
    register(bus)
    registry = CollectorRegistry()
    metrics = instrument(bus, registry)
    async with bus:
        await known_run(bus)
        await metrics.refresh()
        text = generate_latest(registry).decode()
    check(samples(text), expected())
    worker_of = {
        dict(s.labels).get("worker")
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if f.name == "taskbus_task_outcomes"
    }
    assert worker_of == {bus.worker_id}


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_two_buses_on_one_store_each_count_only_the_attempts_they_ran(
    tmp_path: Path, kind: str
) -> None:
    # Two stores over one file or one Redis prefix, as two processes would have.
    buses = [TaskBus(store=STORES[kind](tmp_path), workers=2, shutdown_grace=1.0) for _ in range(2)]
    metrics: list[BusMetrics] = []
    for bus in buses:  # one registry each, as each process has its own
        register(bus)
        metrics.append(instrument(bus, CollectorRegistry()))
    heard: list[str] = []
    all_heard = anyio.Event()

    def hear(event: Any) -> None:
        heard.append(event.task_id)
        if len(heard) == 5:
            all_heard.set()

    buses[1].on("task-completed", hear)
    async with buses[0], buses[1]:
        await known_run(buses[0])
        with anyio.fail_after(WAIT):
            await all_heard.wait()  # the second bus hears every task's end
        for each in metrics:
            await each.refresh()
        texts = [generate_latest(each.registry).decode() for each in metrics]
    # Summed over both processes: each task once, though both buses heard every event.
    found: Samples = {}
    for text in texts:
        for key, value in samples(text).items():
            found[key] = found.get(key, 0.0) + value
    # The store-wide counts are the same in each: twice the tasks in the sum.
    check(found, expected(run_workers=2))


async def test_metrics_need_an_administrator_when_the_app_has_tokens() -> None:
    from taskbus.integrations.http import Identity

    bus = TaskBus(workers=1)
    tokens: dict[str, Any] = {"a": Identity(owner="root", admin=True), "u": "alice"}
    app = create_app(bus, tokens=tokens)
    transport = httpx.ASGITransport(app=app)
    async with bus, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        anonymous = await client.get("/metrics")
        owner = await client.get("/metrics", headers={"Authorization": "Bearer u"})
        admin = await client.get("/metrics", headers={"Authorization": "Bearer a"})
    assert (anonymous.status_code, owner.status_code, admin.status_code) == (401, 403, 200)
    assert owner.json()["error"]["code"] == "forbidden"


async def test_an_app_without_metrics_has_no_route() -> None:
    bus = TaskBus(workers=1)
    app = create_app(bus, metrics=False)
    transport = httpx.ASGITransport(app=app)
    async with bus, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        answer = await client.get("/metrics")
        doc = (await client.get("/openapi.json")).json()
    assert answer.status_code == 404
    assert "/metrics" not in doc["paths"]


async def test_a_listener_error_is_counted_and_a_closed_metrics_object_exports_nothing() -> None:
    bus = TaskBus(workers=1)
    register(bus)
    registry = CollectorRegistry()
    metrics = instrument(bus, registry)

    def broken(event: Any) -> None:
        raise RuntimeError("listener bug")

    bus.on("task-completed", broken)
    async with bus:
        for n in (1, 2):
            handle = await bus.submit("m:ok", {"n": n})
            await bus.wait(handle.id, timeout=WAIT)
        found = samples(generate_latest(registry).decode())
        metrics.close()
        metrics.close()  # twice is harmless
        after = generate_latest(registry).decode()
    assert found[("taskbus_listener_errors_total", ())] == 2
    key = (
        "taskbus_task_outcomes_total",
        (("error_type", ""), ("outcome", "completed"), ("type", "m:ok")),
    )
    assert found[key] == 2
    assert "taskbus_" not in after


async def test_metrics_count_without_building_a_single_event() -> None:
    bus = TaskBus(workers=1)
    register(bus)
    registry = CollectorRegistry()
    instrument(bus, registry)
    built: list[str] = []
    original = bus.events.publish

    def publish(event: Any) -> None:
        built.append(event.name)
        original(event)

    bus.events.publish = publish  # type: ignore[method-assign]
    async with bus:
        handle = await bus.submit("m:ok", {"n": 1})
        await bus.wait(handle.id, timeout=WAIT)
        found = samples(generate_latest(registry).decode())
    assert built == []
    key = (
        "taskbus_task_outcomes_total",
        (("error_type", ""), ("outcome", "completed"), ("type", "m:ok")),
    )
    assert found[key] == 1


def outcome_totals(found: Samples) -> dict[tuple[str, str], float]:
    """Outcomes by (type, outcome), summed over error types."""
    totals: dict[tuple[str, str], float] = {}
    for (name, labels), value in found.items():
        if name == "taskbus_task_outcomes_total":
            by = dict(labels)
            key = (by["type"], by["outcome"])
            totals[key] = totals.get(key, 0.0) + value
    return totals


async def test_tasks_that_end_without_starting_are_counted_once(store: Store | str) -> None:
    bus = TaskBus(store=store, workers=2, shutdown_grace=1.0)
    register(bus)
    registry = CollectorRegistry()
    instrument(bus, registry)
    async with bus:
        later = await bus.submit("m:ok", {"n": 1}, delay=3600)
        await bus.cancel(later.id)
        parent = await bus.submit("m:bad", {"n": 0})
        child = await bus.submit("m:ok", {"n": 2}, after=[parent], on_parent_failure="fail")
        for task_id in (later.id, parent.id, child.id):
            await bus.wait(task_id, timeout=WAIT)
        found = samples(generate_latest(registry).decode())
    assert outcome_totals(found) == {
        ("m:ok", "cancelled"): 1,
        ("m:ok", "failed"): 1,
        ("m:bad", "failed"): 1,
    }
    # Only the parent ran: one run time, one wait time.
    assert found[("taskbus_task_run_seconds_count", (("type", "m:bad"),))] == 1
    assert ("taskbus_task_run_seconds_count", (("type", "m:ok"),)) not in found
    assert ("taskbus_running", (("type", "m:ok"),)) not in found


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_a_task_cancelled_while_queued_is_counted_by_the_process_that_cancelled_it(
    tmp_path: Path, kind: str
) -> None:
    submitter, worker = (
        TaskBus(store=STORES[kind](tmp_path), workers=1, shutdown_grace=1.0) for _ in range(2)
    )
    registries = [CollectorRegistry(), CollectorRegistry()]
    for bus, registry in zip((submitter, worker), registries, strict=True):
        register(bus)
        instrument(bus, registry)
    async with submitter, worker:
        later = await submitter.submit("m:ok", {"n": 1}, delay=3600)
        await submitter.cancel(later.id)
        await worker.wait(later.id, timeout=WAIT)  # the worker hears it end
        texts = [generate_latest(registry).decode() for registry in registries]
    assert outcome_totals(samples(texts[0])) == {("m:ok", "cancelled"): 1}
    assert outcome_totals(samples(texts[1])) == {}


async def test_the_queue_depth_by_type_and_priority(store: Store | str) -> None:
    bus = TaskBus(store=store, workers=1, shutdown_grace=1.0)
    register(bus)
    metrics = instrument(bus, CollectorRegistry())
    async with bus:
        for priority in (9, 9, 2):
            await bus.submit("m:ok", {"n": priority}, priority=priority, delay=3600)
        await bus.submit("m:bad", {"n": 1}, priority=5, delay=3600)
        await metrics.refresh()
        found = samples(generate_latest(metrics.registry).decode())
        for task in await bus.list(limit=10):
            await bus.cancel(task.id)
    queued = {
        (dict(labels)["type"], dict(labels)["priority"]): value
        for (name, labels), value in found.items()
        if name == "taskbus_queued"
    }
    assert queued == {("m:ok", "9"): 2, ("m:ok", "2"): 1, ("m:bad", "5"): 1}


async def test_a_delayed_task_waits_from_its_not_before_time() -> None:
    clock = FakeClock(start=time.time())
    bus = TaskBus(workers=1, clock=clock)
    register(bus)
    registry = CollectorRegistry()
    instrument(bus, registry)
    async with bus:
        handle = await bus.submit("m:ok", {"n": 1}, delay=60)
        clock.advance(60)
        await bus.wait(handle.id, timeout=WAIT)
        found = samples(generate_latest(registry).decode())
    assert found[("taskbus_task_wait_seconds_count", (("type", "m:ok"),))] == 1
    assert found[("taskbus_task_wait_seconds_sum", (("type", "m:ok"),))] == 0.0


async def test_a_task_waiting_for_input_holds_no_running_attempt() -> None:
    bus = TaskBus(workers=1)
    asked = anyio.Event()

    @bus.task("m:ask")
    async def ask(ctx: TaskContext) -> str:
        answer: str = await ctx.ask("name?", model=str)
        return answer

    bus.on("task-input-required", lambda event: asked.set())
    registry = CollectorRegistry()
    instrument(bus, registry)
    async with bus:
        handle = await bus.submit("m:ask")
        with anyio.fail_after(WAIT):
            await asked.wait()
        waiting = samples(generate_latest(registry).decode())
        await bus.respond(handle.id, "ada")
        await bus.wait(handle.id, timeout=WAIT)
        done = samples(generate_latest(registry).decode())
    run_count = ("taskbus_task_run_seconds_count", (("type", "m:ask"),))
    assert ("taskbus_running", (("type", "m:ask"),)) not in waiting
    assert waiting[run_count] == 1  # the attempt that asked
    assert done[run_count] == 2  # and the one that ran again with the answer
    assert outcome_totals(done) == {("m:ask", "completed"): 1}


def _progress(percent: float) -> TaskProgress:
    return TaskProgress.trusted(
        task_id="t1",
        task_type="m:ok",
        owner=None,
        timestamp=0.0,
        progress=percent,
        current=None,
        total=None,
        message=None,
        estimated_time_remaining=None,
    )


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_progress_dropped_from_a_slow_subscription_is_counted(anyio_backend: str) -> None:
    events = EventBus()
    async with events.subscribe(buffer=1) as stream:
        for percent in (10.0, 20.0, 30.0):
            events.publish(_progress(percent))
        assert events.dropped_events == 2
        with anyio.fail_after(WAIT):
            kept = await stream.__anext__()
    assert kept.progress == 30.0
    assert events.dropped_events == 2  # kept once the subscription ends
