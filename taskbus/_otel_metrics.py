"""OpenTelemetry metrics of a bus: the figures `taskbus.metrics` exports, through a
meter (see `taskbus.otel.instrument_metrics`).

Counters and gauges are observable instruments that read the bus's tallies when the
SDK collects (often from its own thread, so every read copies first); the two
histograms are recorded as each duration is observed, since OpenTelemetry has no
observable histogram. The store's counts are read on the bus's loop every
`stats_interval` seconds and kept for the collections in between.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from ._figures import BUCKETS, Duration, count_figures
from ._reports import BusStats

if TYPE_CHECKING:
    from ._taskbus import TaskBus

__all__ = ["OtelMetrics"]

logger = logging.getLogger("taskbus.metrics")

_TYPE = "taskbus.task.type"
_WORKER = "taskbus.worker"


class OtelMetrics:
    """The figures of one bus, as OpenTelemetry instruments of `meter`."""

    def __init__(self, bus: TaskBus, meter: Meter, *, stats_interval: float) -> None:
        if isinstance(stats_interval, bool) or not stats_interval > 0:
            raise ValueError(f"stats_interval must be positive seconds, not {stats_interval!r}")
        self.bus = bus
        self.stats_interval = stats_interval
        self.figures = count_figures(bus.lifecycle)
        self.worker = bus.worker_id
        self._stats: BusStats | None = None
        self._by_type: dict[str, dict[str, str]] = {}
        self._closed = False
        bounds = [float(bound) for bound in BUCKETS]
        self._wait = meter.create_histogram(
            "taskbus.task.wait",
            description="Seconds from when a task could first run to its first attempt's start.",
            unit="s",
            explicit_bucket_boundaries_advisory=bounds,
        )
        self._run = meter.create_histogram(
            "taskbus.task.run",
            description="Seconds an attempt ran, whatever its outcome.",
            unit="s",
            explicit_bucket_boundaries_advisory=bounds,
        )
        self.figures.on_observe.append(self._observe)
        observed: list[tuple[str, str, str, Callable[[], Iterable[Observation]]]] = [
            ("counter", "taskbus.task.outcomes", "Final states settled here.", self._outcomes),
            ("counter", "taskbus.task.retries", "Failed attempts run again.", self._retries),
            ("updown", "taskbus.running", "Attempts running here.", self._running),
            ("gauge", "taskbus.workers", "Tasks this process may run at once.", self._workers),
            ("gauge", "taskbus.worker.utilisation", "Running over workers.", self._utilisation),
            ("counter", "taskbus.listener.errors", "Listener calls that raised.", self._errors),
            ("counter", "taskbus.subscription.dropped_events", "Events dropped.", self._dropped),
            ("gauge", "taskbus.tasks", "Tasks in the store by type and state.", self._tasks),
            ("gauge", "taskbus.queued", "Queued tasks by type and priority.", self._queued),
        ]
        makers = {
            "counter": meter.create_observable_counter,
            "updown": meter.create_observable_up_down_counter,
            "gauge": meter.create_observable_gauge,
        }
        for kind, name, description, read in observed:
            makers[kind](name, callbacks=[self._callback(read)], description=description)

    async def refresh(self) -> None:
        """Read the store's counts now (the bus also does it every `stats_interval`)."""
        self._stats = await self.bus.stats()

    async def keep_refreshing(self) -> None:
        """Refresh the store's counts every `stats_interval` seconds, until the bus stops."""
        while not self._closed:
            try:
                await self.refresh()
            except Exception:  # must not stop the bus; a store outage does not raise here
                logger.exception("cannot read the store's counts for the metrics")
            await self.bus.clock.sleep(self.stats_interval)

    def close(self) -> None:
        """Stop recording the histograms and refreshing the counts (the observable
        instruments then report nothing)."""
        self._closed = True
        if self._observe in self.figures.on_observe:
            self.figures.on_observe.remove(self._observe)

    def _callback(
        self, read: Callable[[], Iterable[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [] if self._closed else list(read())

        return callback

    def _attributes(self, task_type: str) -> dict[str, str]:
        found = self._by_type.get(task_type)
        if found is None:
            found = self._by_type[task_type] = {_WORKER: self.worker, _TYPE: task_type}
        return found

    def _observe(self, kind: Duration, task_type: str, seconds: float) -> None:
        (self._wait if kind == "wait" else self._run).record(seconds, self._attributes(task_type))

    def _outcomes(self) -> Iterator[Observation]:
        for (task_type, outcome, error_type), count in list(self.figures.outcomes.items()):
            attributes = {
                **self._attributes(task_type),
                "taskbus.task.outcome": outcome,
                "error.type": error_type,
            }
            yield Observation(count, attributes)

    def _retries(self) -> Iterator[Observation]:
        for (task_type, error_type), count in list(self.figures.retries.items()):
            yield Observation(count, {**self._attributes(task_type), "error.type": error_type})

    def _running(self) -> Iterator[Observation]:
        for task_type, count in self.figures.running_by_type().items():
            yield Observation(count, self._attributes(task_type))

    def _workers(self) -> Iterator[Observation]:
        yield Observation(self.bus.executor.workers, {_WORKER: self.worker})

    def _utilisation(self) -> Iterator[Observation]:
        workers = self.bus.executor.workers
        busy = len(self.bus.executor.running_ids)
        yield Observation(busy / workers if workers else 0.0, {_WORKER: self.worker})

    def _errors(self) -> Iterator[Observation]:
        yield Observation(self.bus.events.listener_errors, {_WORKER: self.worker})

    def _dropped(self) -> Iterator[Observation]:
        yield Observation(self.bus.events.dropped_events, {_WORKER: self.worker})

    def _tasks(self) -> Iterator[Observation]:
        stats = self._stats
        if stats is None:
            return
        for task_type, by_state in list(stats.by_type.items()):
            for state, count in list(by_state.items()):
                yield Observation(count, {_TYPE: task_type, "taskbus.task.state": state.value})

    def _queued(self) -> Iterator[Observation]:
        stats = self._stats
        if stats is None:
            return
        for task_type, by_priority in list(stats.queued_by_priority.items()):
            for priority, count in list(by_priority.items()):
                yield Observation(count, {_TYPE: task_type, "taskbus.task.priority": priority})
