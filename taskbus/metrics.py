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

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._events import TaskEvent, TaskFailed, TaskQueued, TaskRetrying, TaskStarted
from ._reports import BusStats

if TYPE_CHECKING:
    from ._taskbus import TaskBus

__all__ = ["BusMetrics", "instrument"]

#: Seconds: from a few milliseconds to an hour.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class BusMetrics:
    """The figures of one bus, in a prometheus_client registry (see `instrument`)."""

    def __init__(self, bus: TaskBus, registry: CollectorRegistry) -> None:
        self.bus = bus
        self.registry = registry
        self._stats: BusStats | None = None
        #: Queued time of tasks not yet started (heard from any process).
        self._queued: dict[str, datetime] = {}
        #: Started time and type of the attempts this process runs.
        self._mine: dict[str, tuple[datetime, str]] = {}
        self._listening: dict[str, Callable[[Any], None]] = {}
        labels = ["worker", "type"]
        self.wait = Histogram(
            "taskbus_task_wait_seconds",
            "Seconds from queued to the first attempt's start, by type.",
            labels,
            buckets=BUCKETS,
            registry=registry,
        )
        self.run = Histogram(
            "taskbus_task_run_seconds",
            "Seconds an attempt ran, by type (every attempt, whatever its outcome).",
            labels,
            buckets=BUCKETS,
            registry=registry,
        )
        self.outcomes = Counter(
            "taskbus_task_outcomes",
            "Tasks this process ran that ended, by type, outcome and error type.",
            [*labels, "outcome", "error_type"],
            registry=registry,
        )
        self.retries = Counter(
            "taskbus_task_retries",
            "Attempts this process ran that failed and will be retried, by type.",
            [*labels, "error_type"],
            registry=registry,
        )
        self._by_type: dict[str, tuple[Any, Any]] = {}
        self._outcomes: dict[tuple[str, str, str], Any] = {}
        self._retries: dict[tuple[str, str], Any] = {}
        registry.register(_ScrapeCollector(self))

    @property
    def worker(self) -> str:
        return self.bus.worker_id

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
        if event.worker is not None and event.worker != self.worker:
            return  # another process runs it and counts it
        self._mine[event.task_id] = (event.timestamp, event.task_type)
        if queued is not None and event.attempt == 1:
            seconds = (event.timestamp - queued).total_seconds()
            self._timings(event.task_type)[0].observe(max(seconds, 0.0))

    def _on_retrying(self, event: TaskRetrying) -> None:
        if self._ran(event):
            key = (event.task_type, event.error_type.value)
            child = self._retries.get(key)
            if child is None:
                child = self._retries[key] = self.retries.labels(self.worker, *key)
            child.inc()

    def _on_final(self, event: TaskEvent) -> None:
        self._queued.pop(event.task_id, None)
        if self._ran(event):
            error_type = event.error_type.value if isinstance(event, TaskFailed) else ""
            key = (event.task_type, event.name.removeprefix("task-"), error_type)
            child = self._outcomes.get(key)
            if child is None:
                child = self._outcomes[key] = self.outcomes.labels(self.worker, *key)
            child.inc()

    def _ran(self, event: TaskEvent) -> bool:
        """Observe the run time of the attempt `event` ends, if this process ran it."""
        started = self._mine.pop(event.task_id, None)
        if started is None:
            return False
        seconds = (event.timestamp - started[0]).total_seconds()
        self._timings(event.task_type)[1].observe(max(seconds, 0.0))
        return True

    def _timings(self, task_type: str) -> tuple[Any, Any]:
        """The wait and run histograms of a type (label lookups are cached)."""
        pair = self._by_type.get(task_type)
        if pair is None:
            pair = self._by_type[task_type] = (
                self.wait.labels(self.worker, task_type),
                self.run.labels(self.worker, task_type),
            )
        return pair

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
