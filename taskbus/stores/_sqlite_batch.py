"""What one transaction of the SQLite writer carries, and what it tells afterwards.

A `Batch` gathers the rows, events and calls that commit together, and then
their outcome; a `LoggingCall` is a call whose result says which events to log
in its transaction. Events are numbered (`Event.id`) by the log as they commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection
from typing import Any

import anyio

from .._events import Event, stamp
from ._codec import Row

__all__ = ["Batch", "LoggingCall", "number_events", "report_calls", "run_all", "task_of"]


class Batch:
    """Writes that commit together. `done` is set once they did (or failed).

    If the group fails, its rows are written one by one so that one bad row (too
    large for a full disk, say) fails only itself: `errors` holds those, by task
    id. `results` and `call_errors` hold the outcome of each call, by index.
    """

    __slots__ = (
        "call_errors",
        "calls",
        "done",
        "errors",
        "events",
        "inserts",
        "results",
        "rows",
        "standing",
    )

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {}
        #: Events to log with the rows; numbered (`Event.id`) once committed.
        self.events: list[Event] = []
        self.inserts: set[str] = set()
        self.calls: list[Callable[[sqlite3.Connection], Any]] = []
        self.results: dict[int, Any] = {}
        self.call_errors: dict[int, BaseException] = {}
        self.done = anyio.Event()
        self.errors: dict[str, BaseException] = {}
        #: Standing claims (`SqliteWriter.stand_by`) this batch runs: the index of
        #: each one's call in `calls`, by its token.
        self.standing: dict[int, int] = {}

    def error_for(self, task_id: str) -> BaseException | None:
        return self.errors.get(task_id)

    def fail(self, error: BaseException) -> None:
        """Fail every write of the batch that has no outcome yet."""
        for task_id in self.rows:
            self.errors.setdefault(task_id, error)
        for index in range(len(self.calls)):
            if index not in self.results:
                self.call_errors.setdefault(index, error)


class LoggingCall:
    """A call whose outcome says which events to log in its transaction."""

    __slots__ = ("done", "events", "fn", "to_log")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        events: Callable[[Any], list[Event]] | None,
        done: Callable[[Any], None] | None = None,
    ) -> None:
        self.fn = fn
        self.events = events
        self.done = done
        #: What the last run asked to log (inserted by the writer with the batch's).
        self.to_log: list[Event] = []

    def __call__(self, conn: sqlite3.Connection) -> Any:
        result = self.fn(conn)
        self.to_log = self.events(result) if self.events is not None else []
        return result


def run_all(
    calls: list[Callable[[sqlite3.Connection], Any]],
    log: Callable[[sqlite3.Connection, list[Event], list[Callable[..., Any]]], list[int]],
    conn: sqlite3.Connection,
) -> tuple[list[Any], list[int]]:
    results = [fn(conn) for fn in calls]
    return results, log(conn, [], calls)


def report_calls(batch: Batch) -> None:
    """Tell each call that asked (``done``) its outcome: its result, or None."""
    for index, fn in enumerate(batch.calls):
        if isinstance(fn, LoggingCall) and fn.done is not None:
            fn.done(None if index in batch.call_errors else batch.results.get(index))


def task_of(event: Event) -> str | None:
    return getattr(event, "task_id", None)


def number_events(
    batch: Batch,
    ids: list[int],
    calls: Collection[Callable[[sqlite3.Connection], Any]],
    *,
    start: int = 0,
) -> None:
    """Number the events logged in one transaction: ``batch.events[start:]`` and then
    those of `calls`, which join the batch's events for delivery."""
    for fn in calls:
        if isinstance(fn, LoggingCall) and fn.to_log:
            batch.events.extend(fn.to_log)
            fn.to_log = []
    for event, event_id in zip(batch.events[start:], ids, strict=True):
        stamp(event, str(event_id))
