"""Prometheus metrics of a bus (extra ``taskbus[prometheus]``).

``metrics = instrument(bus)`` adds listeners to the bus (not to progress events)
and registers a collector; nothing is counted, and nothing costs, until it is called.

Several worker processes: every series a process counts itself carries a
``worker`` label (the bus's `TaskBus.worker_id`), and a process counts only the
attempts it ran, so a task is counted once whatever the number of processes
hearing its events. The store-wide counts (``taskbus_tasks``) are the same in
every process: read them from any one of them (``max by (type, state)``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator
from datetime import datetime
from itertools import accumulate
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ._events import TaskEvent, TaskFailed, TaskQueued, TaskRetrying, TaskStarted
from ._reports import BusStats

if TYPE_CHECKING:
    from ._taskbus import TaskBus

__all__ = ["BusMetrics", "instrument"]

#: Seconds: from a few milliseconds to an hour.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
_BOUNDS = [*(str(float(bound)) for bound in BUCKETS), "+Inf"]


class BusMetrics:
    """The figures of one bus, in a prometheus_client registry (see `instrument`)."""

    def __init__(self, bus: TaskBus, registry: CollectorRegistry) -> None:
        self.bus = bus
        self.registry = registry
        self._worker = bus.worker_id  # fixed for the bus's life
        self._stats: BusStats | None = None
        #: Queued time of tasks not yet started (heard from any process).
        self._queued: dict[str, datetime] = {}
        #: Started time and type of the attempts this process runs.
        self._mine: dict[str, tuple[datetime, str]] = {}
        self._listening: dict[str, Callable[[Any], None]] = {}
        # Plain tallies, turned into Prometheus families at scrape time: far cheaper
        # per event than prometheus_client's locked metric objects.
        self.wait = _Tally()
        self.run = _Tally()
        self.outcomes: dict[tuple[str, str, str], int] = {}
        self.retries: dict[tuple[str, str], int] = {}
        registry.register(_ScrapeCollector(self))

    @property
    def worker(self) -> str:
        """The ``worker`` label: the bus's `TaskBus.worker_id`."""
        return self._worker

    def listeners(self) -> dict[str, Callable[[Any], None]]:
        """The bus listener of each event counted (progress events are not)."""
        return {
            "task-queued": self._on_queued,
            "task-started": self._on_started,
            "task-retrying": self._on_retrying,
            "task-completed": self._on_final,
            "task-failed": self._on_final,
            "task-cancelled": self._on_final,
        }

    def _on_queued(self, event: TaskQueued) -> None:
        self._queued[event.task_id] = event.timestamp

    def _on_started(self, event: TaskStarted) -> None:
        queued = self._queued.pop(event.task_id, None)
        if event.worker is not None and event.worker != self._worker:
            return  # another process runs it and counts it
        self._mine[event.task_id] = (event.timestamp, event.task_type)
        if queued is not None and event.attempt == 1:
            self.wait.observe(event.task_type, (event.timestamp - queued).total_seconds())

    def _on_retrying(self, event: TaskRetrying) -> None:
        if self._ran(event):
            key = (event.task_type, event.error_type.value)
            self.retries[key] = self.retries.get(key, 0) + 1

    def _on_final(self, event: TaskEvent) -> None:
        self._queued.pop(event.task_id, None)
        if self._ran(event):
            error_type = event.error_type.value if isinstance(event, TaskFailed) else ""
            key = (event.task_type, event.name.removeprefix("task-"), error_type)
            self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def _ran(self, event: TaskEvent) -> bool:
        """Observe the run time of the attempt `event` ends, if this process ran it."""
        started = self._mine.pop(event.task_id, None)
        if started is None:
            return False
        self.run.observe(event.task_type, (event.timestamp - started[0]).total_seconds())
        return True

    def running_by_type(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, task_type in self._mine.values():
            counts[task_type] = counts.get(task_type, 0) + 1
        return counts

    async def refresh(self) -> None:
        """Read the store's counts for the next scrape (`/metrics` does it before
        each; call it on a timer when exposing the registry some other way)."""
        self._stats = await self.bus.stats()

    def close(self) -> None:
        """Stop counting: remove the listeners (the registry keeps its series)."""
        for name, listener in self._listening.items():
            self.bus.off(name, listener)
        self._listening = {}


class _ScrapeCollector(Collector):
    """The figures read at scrape time: the store's counts and the runtime's gauges."""

    def __init__(self, metrics: BusMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        bus, worker = metrics.bus, metrics.worker
        yield metrics.wait.family(
            "taskbus_task_wait_seconds",
            "Seconds from queued to the first attempt's start, by type.",
            worker,
        )
        yield metrics.run.family(
            "taskbus_task_run_seconds",
            "Seconds an attempt ran, by type (every attempt, whatever its outcome).",
            worker,
        )
        outcomes = CounterMetricFamily(
            "taskbus_task_outcomes",
            "Tasks this process ran that ended, by type, outcome and error type.",
            labels=["worker", "type", "outcome", "error_type"],
        )
        for key, count in sorted(metrics.outcomes.items()):
            outcomes.add_metric([worker, *key], count)
        yield outcomes
        retries = CounterMetricFamily(
            "taskbus_task_retries",
            "Attempts this process ran that failed and will be retried, by type.",
            labels=["worker", "type", "error_type"],
        )
        for retried, count in sorted(metrics.retries.items()):
            retries.add_metric([worker, *retried], count)
        yield retries
        running = metrics.running_by_type()
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
        stats = metrics._stats
        if stats is not None:
            for task_type, by_state in sorted(stats.by_type.items()):
                for state, count in sorted(by_state.items()):
                    tasks.add_metric([task_type, state.value], count)
        yield tasks


class _Tally:
    """Histograms by type: a count per bucket (not cumulative) and a sum."""

    def __init__(self) -> None:
        self.by_type: dict[str, tuple[list[int], list[float]]] = {}

    def observe(self, task_type: str, seconds: float) -> None:
        found = self.by_type.get(task_type)
        if found is None:
            found = self.by_type[task_type] = ([0] * (len(BUCKETS) + 1), [0.0])
        seconds = max(seconds, 0.0)
        found[0][bisect_left(BUCKETS, seconds)] += 1
        found[1][0] += seconds

    def family(self, name: str, documentation: str, worker: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, documentation, labels=["worker", "type"])
        for task_type, (counts, total) in sorted(self.by_type.items()):
            cumulative = list(accumulate(counts))
            family.add_metric(
                [worker, task_type], list(zip(_BOUNDS, cumulative, strict=True)), total[0]
            )
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
    None) and return them; ``close()`` stops counting."""
    metrics = BusMetrics(bus, REGISTRY if registry is None else registry)
    metrics._listening = metrics.listeners()
    for name, listener in metrics._listening.items():
        bus.on(name, listener)
    return metrics
