"""What ``taskbus demo`` runs and shows: its plan, its event-driven views, its summary.

`run_demo` opens a bus, registers the ``demo:*`` task types (`demo_tasks`),
submits `DEMO_PLAN`, and feeds every bus event to a view: `LiveView` (one rich
progress bar per task) or `PlainView` (one line per lifecycle event, for CI
logs and pipes). Nothing here polls: rows change only when events arrive. A
progress listener cancels the long job once it passes 40 %. `summary_table`
builds the closing table from `TaskBus.get` snapshots and says whether every
task ended in the state it was expected to.

Needs rich (the ``cli`` extra).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table

from taskbus import (
    ErrorType,
    TaskBus,
    TaskCancelled,
    TaskCompleted,
    TaskEvent,
    TaskFailed,
    TaskProgress,
    TaskQueued,
    TaskRetrying,
    TaskSnapshot,
    TaskStarted,
    TaskState,
)

from .demo_tasks import register_demo_tasks

__all__ = [
    "CANCEL_AT_PERCENT",
    "CANCEL_REASON",
    "DEMO_DEADLINE",
    "DEMO_PLAN",
    "DemoItem",
    "DemoOutcome",
    "DemoView",
    "LiveView",
    "PlainView",
    "count_states",
    "failure_note",
    "progress_bars",
    "run_demo",
    "summary_table",
]

#: The demo gives up (and exits 1) if its tasks are not all final by then.
DEMO_DEADLINE = 12.0
#: The long job is cancelled once its progress passes this percentage.
CANCEL_AT_PERCENT = 40.0
CANCEL_REASON = "user pressed stop"


@dataclass(frozen=True)
class DemoItem:
    """One task the demo submits, and the final state it should reach."""

    label: str
    task_type: str
    payload: dict[str, Any]
    priority: int
    expect: TaskState


DEMO_PLAN: tuple[DemoItem, ...] = (
    DemoItem(
        "clone taskbus/taskbus",
        "demo:clone-repo",
        {"repo": "taskbus/taskbus", "objects": 120},
        9,
        TaskState.COMPLETED,
    ),
    DemoItem("long job", "demo:long-job", {"steps": 50}, 8, TaskState.CANCELLED),
    DemoItem(
        "clone pydantic/pydantic",
        "demo:clone-repo",
        {"repo": "pydantic/pydantic", "objects": 200},
        7,
        TaskState.COMPLETED,
    ),
    DemoItem("flaky service call", "demo:flaky", {"failures": 2}, 6, TaskState.COMPLETED),
    DemoItem("slow upstream", "demo:slow-timeout", {"seconds": 3.0}, 6, TaskState.FAILED),
    DemoItem("count primes", "demo:crunch", {"limit": 150_000}, 5, TaskState.COMPLETED),
    DemoItem(
        "clone agronholm/anyio",
        "demo:clone-repo",
        {"repo": "agronholm/anyio", "objects": 80},
        4,
        TaskState.COMPLETED,
    ),
    DemoItem(
        "clone python/cpython",
        "demo:clone-repo",
        {"repo": "python/cpython", "objects": 160},
        2,
        TaskState.COMPLETED,
    ),
)

_STATE_STYLE = {
    TaskState.QUEUED: "dim",
    TaskState.RUNNING: "cyan",
    TaskState.COMPLETED: "green",
    TaskState.FAILED: "red",
    TaskState.CANCELLED: "magenta",
}


def _styled(state: TaskState, text: str | None = None) -> str:
    style = _STATE_STYLE[state]
    return f"[{style}]{escape(text or state.value)}[/{style}]"


def _describe(value: Any, limit: int = 60) -> str:
    """A short, one-line text for a result."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    if isinstance(value, dict):
        text = ", ".join(f"{key}={item}" for key, item in value.items())
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failure_note(error_type: ErrorType | str, attempts: int) -> str:
    """How a final failure reads: "fatal, after 1 attempt", "after 3 attempts".

    Never "retryable": no attempt follows a final failure, whatever the kind of
    its error, so only the kinds that explain why it stopped are named.
    """
    after = f"after {attempts} attempt{'' if attempts == 1 else 's'}"
    kind = str(error_type.value if isinstance(error_type, ErrorType) else error_type)
    return after if kind in ("", ErrorType.RETRYABLE.value) else f"{kind}, {after}"


def _outcome(event: TaskEvent) -> str:
    """The message a final event leaves on its row."""
    if isinstance(event, TaskCompleted):
        return _describe(event.result)
    if isinstance(event, TaskFailed):
        return f"{event.error} ({failure_note(event.error_type, event.attempt_count)})"
    if isinstance(event, TaskCancelled):
        return event.reason or "cancelled"
    return ""


# -- views: what the events look like on the terminal ---------------------------------


class DemoView(Protocol):
    """Shows events as they arrive, and notes from the demo itself."""

    def apply(self, event: TaskEvent) -> None: ...

    def note(self, text: str) -> None: ...


@dataclass
class _Labels:
    """Row labels by task id, learned from task-queued metadata."""

    by_id: dict[str, str] = field(default_factory=dict)

    def learn(self, event: TaskEvent) -> str:
        if isinstance(event, TaskQueued):
            label = event.metadata.get("label")
            self.by_id[event.task_id] = str(label) if label else event.task_type
        return self.by_id.get(event.task_id, event.task_type)


class LiveView:
    """One rich progress bar per task, updated from its events."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self._labels = _Labels()
        self._rows: dict[str, TaskID] = {}

    def note(self, text: str) -> None:
        self.progress.console.print(f"[yellow]»[/yellow] {escape(text)}")

    def apply(self, event: TaskEvent) -> None:
        label = self._labels.learn(event)
        if isinstance(event, TaskQueued):
            self._rows[event.task_id] = self.progress.add_task(
                label,
                total=100,
                start=False,
                state=_styled(TaskState.QUEUED, f"queued p{event.priority}"),
                message="",
            )
            return
        row = self._rows.get(event.task_id)
        if row is not None:
            self._update(row, event)

    def _update(self, row: TaskID, event: TaskEvent) -> None:
        update = self.progress.update
        if isinstance(event, TaskStarted):
            self.progress.start_task(row)
            attempt = f" #{event.attempt}" if event.attempt > 1 else ""
            # No percentage known yet: pulse until the first progress event. The
            # previous attempt's error is not this attempt's message.
            update(
                row,
                total=None,
                completed=0,
                state=_styled(TaskState.RUNNING, f"running{attempt}"),
                message="",
            )
        elif isinstance(event, TaskProgress):
            update(row, total=100, completed=event.progress, message=event.message or "")
        elif isinstance(event, TaskRetrying):
            update(
                row,
                total=100,
                completed=0,
                state=f"[yellow]retry in {event.delay:.1f}s[/yellow]",
                message=event.error,
            )
        elif event.final:
            state = TaskState(event.name.removeprefix("task-"))
            self.progress.stop_task(row)
            update(row, total=100, state=_styled(state), message=_outcome(event))
            if state is TaskState.COMPLETED:
                update(row, completed=100)


class PlainView:
    """One log line per lifecycle event, and progress at each quarter (for CI logs)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._labels = _Labels()
        self._quarters: dict[str, int] = {}
        self._start = time.monotonic()

    def note(self, text: str) -> None:
        self._line("»", text)

    def _line(self, label: str, text: str) -> None:
        elapsed = time.monotonic() - self._start
        self.console.print(
            f"+{elapsed:5.2f}s  {label:<24} {text}", markup=False, highlight=False, soft_wrap=True
        )

    def apply(self, event: TaskEvent) -> None:
        label = self._labels.learn(event)
        text = self._text(event)
        if text is not None:
            self._line(label, text)

    def _text(self, event: TaskEvent) -> str | None:
        if isinstance(event, TaskQueued):
            return f"queued (priority {event.priority})"
        if isinstance(event, TaskStarted):
            return f"started (attempt {event.attempt})"
        if isinstance(event, TaskProgress):
            quarter = int(event.progress // 25)
            if quarter <= self._quarters.get(event.task_id, 0):
                return None
            self._quarters[event.task_id] = quarter
            return f"{event.progress:3.0f}%  {event.message or ''}".rstrip()
        if isinstance(event, TaskRetrying):
            return f"attempt {event.attempt} failed ({event.error}); retry in {event.delay:.2f}s"
        if event.final:
            return f"{event.name.removeprefix('task-')}: {_outcome(event)}"
        return None


# -- running it ---------------------------------------------------------------------


@dataclass
class DemoOutcome:
    """What a demo run leaves for the summary."""

    snapshots: list[tuple[DemoItem, TaskSnapshot]]
    elapsed: float
    finished_in_time: bool


def _long_job_stopper(bus: TaskBus, view: DemoView) -> Callable[[TaskProgress], Any]:
    """An async progress listener that cancels the long job once it passes 40 %."""
    stopped: set[str] = set()

    async def stop_long_job(event: TaskProgress) -> None:
        if event.task_type != "demo:long-job" or event.progress < CANCEL_AT_PERCENT:
            return
        if event.task_id in stopped:
            return
        stopped.add(event.task_id)
        view.note(f"long job at {event.progress:.0f}%: cancelling ({CANCEL_REASON})")
        await bus.cancel(event.task_id, reason=CANCEL_REASON)

    return stop_long_job


async def run_demo(
    view: DemoView, workers: int = 4, plan: Iterable[DemoItem] = DEMO_PLAN
) -> DemoOutcome:
    """Submit `plan` on a fresh bus, show its events on `view`, wait for every final one."""
    started = time.monotonic()
    items = list(plan)
    async with TaskBus(workers=workers, shutdown_grace=1.0) as bus:
        register_demo_tasks(bus)
        bus.on(TaskProgress, _long_job_stopper(bus, view))
        async with bus.subscribe() as events:
            ids = [
                (
                    await bus.submit(
                        item.task_type,
                        item.payload,
                        priority=item.priority,
                        metadata={"label": item.label},
                    )
                ).id
                for item in items
            ]
            pending = set(ids)
            with anyio.move_on_after(DEMO_DEADLINE - (time.monotonic() - started)) as scope:
                async for event in events:
                    view.apply(event)
                    if event.final:
                        pending.discard(event.task_id)
                        if not pending:
                            break
        snapshots = [
            (item, await bus.get(task_id)) for item, task_id in zip(items, ids, strict=True)
        ]
    return DemoOutcome(
        snapshots=snapshots,
        elapsed=time.monotonic() - started,
        finished_in_time=not scope.cancelled_caught,
    )


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}s"


def summary_table(outcome: DemoOutcome) -> tuple[Table, bool]:
    """The table of final states, and whether every task ended as expected."""
    table = Table(title="taskbus demo: final states", title_justify="left")
    table.add_column("task", no_wrap=True)
    table.add_column("prio", justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True, min_width=9)
    table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("wait", justify="right", no_wrap=True)
    table.add_column("run", justify="right", no_wrap=True)
    table.add_column("result / error", overflow="fold")
    all_expected = True
    for item, snap in outcome.snapshots:
        expected = snap.state is item.expect
        all_expected = all_expected and expected
        state = _styled(snap.state) if snap.state in _STATE_STYLE else snap.state.value
        if not expected:
            state += f" [bold red](expected {item.expect.value})[/bold red]"
        if snap.state is TaskState.COMPLETED:
            detail = _describe(snap.result)
        elif snap.state is TaskState.CANCELLED:
            detail = snap.cancel_reason or ""
        else:
            detail = snap.error.message if snap.error else ""
        table.add_row(
            escape(item.label),
            str(snap.priority),
            state,
            f"{snap.attempts}/{snap.max_attempts}",
            _seconds(snap.wait_time),
            _seconds(snap.run_time),
            escape(detail),
        )
    return table, all_expected


def count_states(outcome: DemoOutcome) -> str:
    """ "6 completed, 1 cancelled, 1 failed"."""
    counts: dict[TaskState, int] = {}
    for _, snap in outcome.snapshots:
        counts[snap.state] = counts.get(snap.state, 0) + 1
    parts = [f"{count} {state.value}" for state, count in counts.items()]
    return ", ".join(parts)


def progress_bars(console: Console) -> Progress:
    """The rich progress display `LiveView` draws on."""
    return Progress(
        TextColumn("{task.description}", markup=False),  # task types are user text
        BarColumn(bar_width=24),
        TaskProgressColumn(),
        TextColumn("{task.fields[state]}", table_column=Column(width=14, no_wrap=True)),
        TimeElapsedColumn(),
        TextColumn(
            "{task.fields[message]}",
            markup=False,
            table_column=Column(no_wrap=True, overflow="ellipsis"),
        ),
        console=console,
        refresh_per_second=12,
    )
