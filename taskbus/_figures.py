"""The figures a bus counts about the attempts it runs and the tasks it settles.

The lifecycle calls a `Figures` directly at each transition, when one is installed
(`taskbus.metrics.instrument`, `taskbus.otel.instrument`), and otherwise checks one
attribute for None: no events are built for it and nothing costs while it is off.
Exporters read the tallies when they are scraped or collected; `on_observe` lets
one record each duration as it comes (OpenTelemetry histograms have no callback).

Across processes each process counts what it did itself: the attempts it ran, and
the final states it settled (a task it ran, cancelled while queued, or failed
because its parent failed), so a task is counted once however many hear of it.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

from ._record import AWAITING_PARENTS
from ._states import TaskState

if TYPE_CHECKING:
    from ._record import TaskRecord

__all__ = ["BUCKETS", "Duration", "Figures", "Tally", "count_figures"]

logger = logging.getLogger("taskbus.metrics")

#: The outcome label of each state (an enum's ``value`` is a property: slower).
_OUTCOME = {state: state.value for state in TaskState}

#: Seconds: from a few milliseconds to an hour.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

#: Which duration an observation is: queued to first start, or one attempt's run.
Duration = Literal["wait", "run"]


class Tally:
    """A histogram by task type: a count per bucket (not cumulative, the last one
    past every bound), then the sum of the values, in one list per type."""

    def __init__(self) -> None:
        self.by_type: dict[str, list[float]] = {}

    def read(self) -> list[tuple[str, list[float], float]]:
        """Each type's bucket counts and sum (a copy: exporters read from threads)."""
        return [
            (task_type, found[:-1], found[-1]) for task_type, found in list(self.by_type.items())
        ]


class Figures:
    """Counts of one bus's work, kept as plain tallies (read them, never write)."""

    def __init__(self) -> None:
        #: Seconds from when a task could first run to its first attempt's start.
        self.wait = Tally()
        #: Seconds each attempt ran, whatever its outcome.
        self.run = Tally()
        #: Final states this process settled: (type, outcome, error type or "").
        self.outcomes: dict[tuple[str, str, str], int] = {}
        #: Failed attempts this process ran that run again: (type, error type).
        self.retries: dict[tuple[str, str], int] = {}
        #: The attempts running in this process: task id to type.
        self.running: dict[str, str] = {}
        #: Called with each duration observed, as it is.
        self.on_observe: list[Callable[[Duration, str, float], None]] = []

    def running_by_type(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for task_type in list(self.running.values()):  # a copy: exporters read from threads
            counts[task_type] = counts.get(task_type, 0) + 1
        return counts

    def started(self, record: TaskRecord) -> None:
        """`record`'s attempt started here (its not-before time not yet cleared)."""
        self.running[record.id] = record.type
        if record.attempt == 1 and record.started_at is not None:
            ready = record.queued_at
            not_before = record.not_before
            if not_before is not None and ready < not_before < AWAITING_PARENTS:
                ready = not_before  # a delayed task waits from its time, not its submit
            self._observe(self.wait, "wait", record.type, record.started_at - ready)

    def stopped(self, record: TaskRecord, now: float, *, counted: bool = True) -> None:
        """`record`'s attempt here ended at `now`; `counted=False` for one handed
        back at a stop, whose attempt does not count."""
        if self.running.pop(record.id, None) is None:
            return  # it did not start here, or its end was heard already
        if counted and record.started_at is not None:
            self._observe(self.run, "run", record.type, now - record.started_at)

    def retried(self, record: TaskRecord, error_type: str) -> None:
        key = (record.type, error_type)
        self.retries[key] = self.retries.get(key, 0) + 1

    def ended(self, record: TaskRecord) -> None:
        """This process settled `record`'s final state (it is durable)."""
        state = record.state
        error = record.error
        error_type = error.error_type.value if state is TaskState.FAILED and error else ""
        key = (record.type, _OUTCOME[state], error_type)
        outcomes = self.outcomes
        outcomes[key] = outcomes.get(key, 0) + 1

    def _observe(self, tally: Tally, kind: Duration, task_type: str, seconds: float) -> None:
        seconds = max(seconds, 0.0)  # a wall clock may step back
        found = tally.by_type.get(task_type)  # the tally's work, inline: once per attempt
        if found is None:
            found = tally.by_type[task_type] = [0] * (len(BUCKETS) + 2)
        found[bisect_left(BUCKETS, seconds)] += 1
        found[-1] += seconds
        if self.on_observe:
            self._tell(kind, task_type, seconds)

    def _tell(self, kind: Duration, task_type: str, seconds: float) -> None:
        for observer in self.on_observe:
            try:
                observer(kind, task_type, seconds)
            except Exception:  # an exporter's bug must not fail the task
                logger.exception("a metrics observer raised; the figure is still counted")


class _Counted(Protocol):
    figures: Figures | None


def count_figures(lifecycle: _Counted) -> Figures:
    """The figures `lifecycle` counts, counting from now on if it did not yet (every
    exporter of one bus reads the same tallies)."""
    if lifecycle.figures is None:
        lifecycle.figures = Figures()
    return lifecycle.figures
