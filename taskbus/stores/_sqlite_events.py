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
from collections.abc import Sequence

from .._events import Event
from ._event_codec import event_from_text, event_text

__all__ = ["EVENTS_SCHEMA", "EventLogWriter", "last_event_id", "read_events_after"]

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
