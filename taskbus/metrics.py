"""Prometheus metrics of a bus (extra ``taskbus[prometheus]``).

``metrics = instrument(bus)`` has the bus's lifecycle count its figures (plain
tallies, no events built for them) and registers a collector that renders them at
scrape time; nothing is counted, and nothing costs, until it is called.

Several worker processes: every series a process counts itself carries a
``worker`` label (the bus's `TaskBus.worker_id`), and a process counts only the
attempts it ran and the final states it settled, so a task is counted once
whatever the number of processes hearing its events. The store-wide counts (``taskbus_tasks``) are the same in
every process: read them from any one of them (``max by (type, state)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ._figures import BUCKETS, Tally, count_figures
from ._reports import BusStats

if TYPE_CHECKING:
    from ._taskbus import TaskBus

__all__ = ["BusMetrics", "instrument"]

_BOUNDS = [*(str(float(bound)) for bound in BUCKETS), "+Inf"]


class BusMetrics:
    """The figures of one bus, in a prometheus_client registry (see `instrument`)."""

    def __init__(self, bus: TaskBus, registry: CollectorRegistry) -> None:
        self.bus = bus
        self.registry = registry
        self._worker = bus.worker_id  # fixed for the bus's life
        self._stats: BusStats | None = None
        #: The tallies the bus's lifecycle keeps (shared with OpenTelemetry metrics).
        self.figures = count_figures(bus.lifecycle)
        self._collector = _ScrapeCollector(self)
        registry.register(self._collector)

    @property
    def worker(self) -> str:
        """The ``worker`` label: the bus's `TaskBus.worker_id`."""
        return self._worker

    async def refresh(self) -> None:
        """Read the store's counts for the next scrape (`/metrics` does it before
        each; call it on a timer when exposing the registry some other way)."""
        self._stats = await self.bus.stats()

    def close(self) -> None:
        """Stop exporting: remove the collector from the registry. The bus keeps
        counting while another exporter (OpenTelemetry metrics) reads the figures."""
        try:
            self.registry.unregister(self._collector)
        except KeyError:
            pass  # closed already


class _ScrapeCollector(Collector):
    """The figures read at scrape time: the store's counts and the runtime's gauges."""

    def __init__(self, metrics: BusMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        figures = metrics.figures
        bus, worker = metrics.bus, metrics.worker
        yield _histogram(
            figures.wait,
            "taskbus_task_wait_seconds",
            "Seconds from when a task could first run (queued, or its not-before time) "
            "to its first attempt's start, by type.",
            worker,
        )
        yield _histogram(
            figures.run,
            "taskbus_task_run_seconds",
            "Seconds an attempt ran, by type (every attempt, whatever its outcome).",
            worker,
        )
        outcomes = CounterMetricFamily(
            "taskbus_task_outcomes",
            "Final states this process settled, by type, outcome and error type.",
            labels=["worker", "type", "outcome", "error_type"],
        )
        for key, count in sorted(figures.outcomes.items()):
            outcomes.add_metric([worker, *key], count)
        yield outcomes
        retries = CounterMetricFamily(
            "taskbus_task_retries",
            "Attempts this process ran that failed and will be retried, by type.",
            labels=["worker", "type", "error_type"],
        )
        for retried, count in sorted(figures.retries.items()):
            retries.add_metric([worker, *retried], count)
        yield retries
        running = figures.running_by_type()
        workers = bus.executor.workers
        gauge = GaugeMetricFamily(
            "taskbus_running", "Attempts this process runs, by type.", labels=["worker", "type"]
        )
        for task_type, count in sorted(running.items()):
            gauge.add_metric([worker, task_type], count)
        yield gauge
        yield _gauge("taskbus_workers", "Tasks this process may run at once.", worker, workers)
        busy = len(bus.executor.running_ids)
        yield _gauge(
            "taskbus_worker_utilisation",
            "Running attempts over workers in this process (0 to 1).",
            worker,
            busy / workers if workers else 0.0,
        )
        yield _counter(
            "taskbus_listener_errors",
            "Listener calls that raised, and async listeners that fell behind.",
            worker,
            bus.events.listener_errors,
        )
        yield _counter(
            "taskbus_subscription_dropped_events",
            "Progress events dropped from subscriptions that read too slowly.",
            worker,
            bus.events.dropped_events,
        )
        tasks = GaugeMetricFamily(
            "taskbus_tasks",
            "Tasks in the store by type and state, as of the last refresh (the same in "
            'every process; state="queued" is the queue depth).',
            labels=["type", "state"],
        )
        queued = GaugeMetricFamily(
            "taskbus_queued",
            "Queued tasks in the store by type and priority (10 most urgent), as of the "
            "last refresh; delayed ones and those waiting for parents included.",
            labels=["type", "priority"],
        )
        stats = metrics._stats
        if stats is not None:
            for task_type, by_state in sorted(stats.by_type.items()):
                for state, count in sorted(by_state.items()):
                    tasks.add_metric([task_type, state.value], count)
            for task_type, by_priority in sorted(stats.queued_by_priority.items()):
                for priority, count in sorted(by_priority.items()):
                    queued.add_metric([task_type, str(priority)], count)
        yield tasks
        yield queued


def _histogram(tally: Tally, name: str, documentation: str, worker: str) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=["worker", "type"])
    for task_type, counts, total in sorted(tally.read()):
        cumulative = list(accumulate(counts))
        family.add_metric([worker, task_type], list(zip(_BOUNDS, cumulative, strict=True)), total)
    return family


def _gauge(name: str, documentation: str, worker: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["worker"])
    family.add_metric([worker], value)
    return family


def _counter(name: str, documentation: str, worker: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=["worker"])
    family.add_metric([worker], value)
    return family


def instrument(bus: TaskBus, registry: CollectorRegistry | None = None) -> BusMetrics:
    """Count `bus`'s figures into `registry` (prometheus_client's default one when
    None) and return them; ``close()`` stops exporting them."""
    return BusMetrics(bus, REGISTRY if registry is None else registry)
