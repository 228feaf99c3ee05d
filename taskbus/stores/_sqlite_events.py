"""The SQLite store's event log: a table of events numbered as they commit.

The writer thread inserts events in the same transaction as the task rows they
describe, so a task's final event is on disk exactly when its final state is.
Ids come from the table's AUTOINCREMENT sequence, which never goes back, not
even after old events are trimmed: an id names one event for the life of the
file. The log keeps the newest `keep` events (the oldest are deleted in
steps of a tenth, so trimming costs little per commit).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence

from .._events import Event
from ._event_codec import event_from_text, event_text

__all__ = [
    "EVENTS_SCHEMA",
    "EventLogWriter",
    "OrderedDelivery",
    "last_event_id",
    "read_events_after",
]

EVENTS_SCHEMA = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT,
    name TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX events_task ON events (task_id)
"""

_INSERT = "INSERT INTO events (id, task_id, name, body) VALUES (?, ?, ?, ?)"


def _last_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
    return int(row[0]) if row is not None else 0


class EventLogWriter:
    """Numbers and inserts events for the writer thread, and trims the log."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._trimmed_to: int | None = None

    def insert(self, conn: sqlite3.Connection, events: Sequence[Event]) -> list[int]:
        """Insert `events` (inside the caller's transaction); return their ids."""
        first = _last_id(conn) + 1
        ids = list(range(first, first + len(events)))
        conn.executemany(
            _INSERT,
            [
                (event_id, getattr(event, "task_id", None), event.name, event_text(event))
                for event_id, event in zip(ids, events, strict=True)
            ],
        )
        self._trim(conn, ids[-1])
        return ids

    def _trim(self, conn: sqlite3.Connection, last: int) -> None:
        floor = last - self.keep
        if floor <= 0:
            return
        if self._trimmed_to is not None and floor - self._trimmed_to < max(1, self.keep // 10):
            return
        conn.execute("DELETE FROM events WHERE id <= ?", (floor,))
        self._trimmed_to = floor


def read_events_after(conn: sqlite3.Connection, after: int, limit: int) -> list[Event]:
    """Up to `limit` logged events with an id above `after`, oldest first."""
    rows = conn.execute(
        "SELECT id, name, body FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
    ).fetchall()
    events: list[Event] = []
    for event_id, name, body in rows:
        event = event_from_text(str(event_id), str(name), str(body))
        if event is not None:
            events.append(event)
    return events


def last_event_id(conn: sqlite3.Connection) -> int:
    """The id of the newest event ever logged (0 if none)."""
    return _last_id(conn)


class OrderedDelivery:
    """Hands logged events to the runtime in id order, each once.

    Events committed by this process arrive as their commits land; those other
    processes commit are read by `SqliteStore.follow`. An event that arrives
    ahead of one not yet read waits for it (`gap` says one is missing), so a
    reader that resumes from the last id it saw misses nothing.
    """

    def __init__(self) -> None:
        self.deliver: Callable[[Event], None] | None = None
        #: The id the next delivered event must have (set at open from the log).
        self.next_id = 1
        self._waiting: dict[int, Event] = {}

    @property
    def gap_end(self) -> int | None:
        """The lowest id waiting for those before it (None: no gap)."""
        return min(self._waiting) if self._waiting else None

    def offer(self, events: Iterable[Event]) -> None:
        deliver = self.deliver
        waiting = self._waiting
        for event in events:
            if event.id is None:  # could not be logged: nobody resumes from it
                if deliver is not None:
                    deliver(event)
                continue
            number = int(event.id)
            if number >= self.next_id:
                waiting[number] = event
        while self.next_id in waiting:
            event = waiting.pop(self.next_id)
            self.next_id += 1
            if deliver is not None:
                deliver(event)

    def skip_missing(self, up_to: int) -> None:
        """Give up on the events below `up_to` not read yet: a read that began after
        the event numbered `up_to` committed saw every one committed before it, so
        those it did not find were trimmed from the log."""
        if self.next_id < up_to:
            self.next_id = up_to
            self.offer(())
