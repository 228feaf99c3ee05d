"""OpenTelemetry metrics (`taskbus.otel.instrument_metrics`): the figures
`taskbus.metrics` gives Prometheus, read back through the SDK's in-memory reader
after a known run, on every store and from two buses sharing one."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from prometheus_client import CollectorRegistry, generate_latest
from test_metrics import STORES, known_run, register, samples

from taskbus import TaskBus
from taskbus.metrics import instrument
from taskbus.otel import OtelMetrics, instrument_metrics
from taskbus.stores import Store
from taskbus.testing import FakeClock

pytestmark = pytest.mark.anyio

WAIT = 10.0
Points = dict[tuple[str, tuple[tuple[str, Any], ...]], float]


def read(reader: InMemoryMetricReader) -> Points:
    """Every data point by instrument name and attributes (without the worker): a
    sum or gauge's value, a histogram's count."""
    found: Points = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    attributes.pop("taskbus.worker", None)
                    key = (metric.name, tuple(sorted(attributes.items())))
                    if isinstance(point, HistogramDataPoint):
                        value: float = point.count
                    else:
                        assert isinstance(point, NumberDataPoint)
                        value = point.value
                    found[key] = found.get(key, 0.0) + value
    return found


def point(name: str, **attributes: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    return name, tuple(sorted(attributes.items()))


def expected(stores: int = 1) -> Points:
    t, outcome = "taskbus.task.type", "taskbus.task.outcome"
    return {
        point("taskbus.task.outcomes", **{t: "m:ok", outcome: "completed", "error.type": ""}): 5,
        point("taskbus.task.outcomes", **{t: "m:bad", outcome: "failed", "error.type": "fatal"}): 1,
        point(
            "taskbus.task.outcomes", **{t: "m:bad", outcome: "failed", "error.type": "retryable"}
        ): 1,
        point("taskbus.task.retries", **{t: "m:bad", "error.type": "retryable"}): 1,
        point("taskbus.task.run", **{t: "m:ok"}): 5,
        point("taskbus.task.run", **{t: "m:bad"}): 3,
        point("taskbus.task.wait", **{t: "m:ok"}): 5,
        point("taskbus.task.wait", **{t: "m:bad"}): 2,
        point("taskbus.tasks", **{t: "m:ok", "taskbus.task.state": "completed"}): 5 * stores,
        point("taskbus.tasks", **{t: "m:bad", "taskbus.task.state": "failed"}): 2 * stores,
        point("taskbus.listener.errors"): 0,
        point("taskbus.subscription.dropped_events"): 0,
        point("taskbus.workers"): 2 * stores,
    }


def check(found: Points, want: Points) -> None:
    assert {k: found.get(k) for k in want} == want


@pytest.fixture(params=list(STORES), ids=list(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store | str:
    return STORES[request.param](tmp_path)


async def test_the_figures_after_a_known_run(store: Store | str, anyio_backend: str) -> None:
    reader = InMemoryMetricReader()
    bus = TaskBus(store=store, workers=2, shutdown_grace=1.0)
    register(bus)
    exported = instrument_metrics(bus, meter_provider=MeterProvider(metric_readers=[reader]))
    async with bus:
        await known_run(bus)
        await exported.refresh()
        found = read(reader)
    check(found, expected())
    assert found[point("taskbus.worker.utilisation")] == 0.0


async def test_the_queue_depth_by_type_and_priority() -> None:
    reader = InMemoryMetricReader()
    bus = TaskBus(workers=1)
    register(bus)
    exported = instrument_metrics(bus, meter_provider=MeterProvider(metric_readers=[reader]))
    async with bus:
        for priority in (9, 9, 2):
            await bus.submit("m:ok", {"n": priority}, priority=priority, delay=3600)
        await exported.refresh()
        found = read(reader)
        for task in await bus.list(limit=10):
            await bus.cancel(task.id)
    queued = {
        dict(attributes)["taskbus.task.priority"]: value
        for (name, attributes), value in found.items()
        if name == "taskbus.queued"
    }
    assert queued == {9: 2, 2: 1}


async def test_opentelemetry_and_prometheus_read_the_same_figures() -> None:
    reader = InMemoryMetricReader()
    registry = CollectorRegistry()
    bus = TaskBus(workers=2)
    register(bus)
    exported = instrument_metrics(bus, meter_provider=MeterProvider(metric_readers=[reader]))
    scraped = instrument(bus, registry)
    assert exported.figures is scraped.figures  # one set of tallies, counted once
    async with bus:
        await known_run(bus)
        found = read(reader)
        text = generate_latest(registry).decode()
    prometheus = samples(text)
    key = (
        "taskbus_task_outcomes_total",
        (("error_type", ""), ("outcome", "completed"), ("type", "m:ok")),
    )
    otel_key = point(
        "taskbus.task.outcomes",
        **{"taskbus.task.type": "m:ok", "taskbus.task.outcome": "completed", "error.type": ""},
    )
    assert prometheus[key] == found[otel_key] == 5


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
async def test_two_buses_on_one_store_each_count_only_their_own(
    tmp_path: Path, kind: str, anyio_backend: str
) -> None:
    buses = [TaskBus(store=STORES[kind](tmp_path), workers=2, shutdown_grace=1.0) for _ in range(2)]
    readers = [InMemoryMetricReader() for _ in buses]
    exported: list[OtelMetrics] = []
    for bus, reader in zip(buses, readers, strict=True):
        register(bus)
        provider = MeterProvider(metric_readers=[reader])
        exported.append(instrument_metrics(bus, meter_provider=provider))
    async with buses[0], buses[1]:
        await known_run(buses[0])
        for task_id in [t.id for t in await buses[0].list(limit=100)]:
            await buses[1].wait(task_id, timeout=WAIT)
        for each in exported:
            await each.refresh()
        found: Points = {}
        for reader in readers:
            for key, value in read(reader).items():
                found[key] = found.get(key, 0.0) + value
    check(found, expected(stores=2))


async def test_the_store_counts_are_refreshed_while_the_bus_runs() -> None:
    clock = FakeClock(start=time.time())
    reader = InMemoryMetricReader()
    bus = TaskBus(workers=2, clock=clock)
    register(bus)
    provider = MeterProvider(metric_readers=[reader])
    exported = instrument_metrics(bus, meter_provider=provider, stats_interval=5)
    refreshed = [anyio.Event(), anyio.Event()]
    read_store = exported.refresh

    async def refresh() -> None:
        await read_store()
        next(event for event in refreshed if not event.is_set()).set()

    exported.refresh = refresh  # type: ignore[method-assign]
    completed = point(
        "taskbus.tasks", **{"taskbus.task.type": "m:ok", "taskbus.task.state": "completed"}
    )
    async with bus:
        with anyio.fail_after(WAIT):
            await refreshed[0].wait()  # as the bus starts
        handle = await bus.submit("m:ok", {"n": 1})
        await bus.wait(handle.id, timeout=WAIT)
        before = read(reader)
        clock.advance(5)
        with anyio.fail_after(WAIT):
            await refreshed[1].wait()
        after = read(reader)
    assert completed not in before
    assert after[completed] == 1


async def test_a_closed_exporter_reports_nothing_more() -> None:
    reader = InMemoryMetricReader()
    bus = TaskBus(workers=1)
    register(bus)
    exported = instrument_metrics(bus, meter_provider=MeterProvider(metric_readers=[reader]))
    async with bus:
        handle = await bus.submit("m:ok", {"n": 1})
        await bus.wait(handle.id, timeout=WAIT)
        exported.close()
        again = await bus.submit("m:ok", {"n": 2})
        await bus.wait(again.id, timeout=WAIT)
        found = read(reader)
    assert point("taskbus.task.run", **{"taskbus.task.type": "m:ok"}) in found
    assert found[point("taskbus.task.run", **{"taskbus.task.type": "m:ok"})] == 1
    assert not any(name == "taskbus.task.outcomes" for name, _ in found)


@pytest.mark.parametrize("interval", [0, -1.0, float("nan"), True])
async def test_a_bad_stats_interval_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="stats_interval"):
        instrument_metrics(TaskBus(), stats_interval=interval)
