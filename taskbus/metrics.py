"""Prometheus metrics of a bus (extra ``taskbus[prometheus]``).

``metrics = instrument(bus)`` adds one listener to the bus and registers a
collector; nothing is counted, and nothing costs, until it is called.

Several worker processes: every series a process counts itself carries a
``worker`` label (the bus's `TaskBus.worker_id`), and a process counts only the
attempts it ran, so a task is counted once whatever the number of processes
hearing its events. The store-wide counts (``taskbus_tasks``) are the same in
every process: read them from any one of them (``max by (type, state)``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ._events import Event, TaskEvent, TaskFailed, TaskQueued, TaskRetrying, TaskStarted
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
        registry.register(_ScrapeCollector(self))

    @property
    def worker(self) -> str:
        return self.bus.worker_id

    def __call__(self, event: Event) -> None:
        """The bus listener (every event)."""
        if not isinstance(event, TaskEvent):
            return
        name = event.name
        if name == "task-queued":
            assert isinstance(event, TaskQueued)
            self._queued[event.task_id] = event.timestamp
        elif name == "task-started":
            assert isinstance(event, TaskStarted)
            self._started(event)
        elif name == "task-retrying":
            assert isinstance(event, TaskRetrying)
            if self._ran(event) is not None:
                self.retries.labels(self.worker, event.task_type, event.error_type.value).inc()
        elif event.final:
            self._queued.pop(event.task_id, None)
            if self._ran(event) is not None:
                error_type = event.error_type.value if isinstance(event, TaskFailed) else ""
                outcome = name.removeprefix("task-")
                self.outcomes.labels(self.worker, event.task_type, outcome, error_type).inc()

    def _started(self, event: TaskStarted) -> None:
        queued = self._queued.pop(event.task_id, None)
        if event.worker is not None and event.worker != self.worker:
            return  # another process runs it and counts it
        self._mine[event.task_id] = (event.timestamp, event.task_type)
        if queued is not None and event.attempt == 1:
            seconds = (event.timestamp - queued).total_seconds()
            self.wait.labels(self.worker, event.task_type).observe(max(seconds, 0.0))

    def _ran(self, event: TaskEvent) -> float | None:
        """Seconds the attempt this process ran took, ending with `event` (None when
        the attempt was not this process's)."""
        started = self._mine.pop(event.task_id, None)
        if started is None:
            return None
        seconds = max((event.timestamp - started[0]).total_seconds(), 0.0)
        self.run.labels(self.worker, event.task_type).observe(seconds)
        return seconds

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
        """Stop counting: remove the listener (the registry keeps its series)."""
        self.bus.off("*", self)


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
    bus.on("*", metrics)
    return metrics
