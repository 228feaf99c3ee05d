"""The SQLite store's schedules: a ``schedules`` table, written in the writer
thread's transactions; a fire's claim and its task's row commit together."""

from __future__ import annotations

import builtins
import sqlite3
from typing import Any

from .._events import Event
from .._record import TaskRecord
from .._schedule import Schedule
from ._codec import row_from_record
from ._schedule_codec import schedule_from, spec_of
from ._schedules_memory import SCHEDULE_TOLERANCE, merge_schedule
from ._sqlite_base import SqliteBase
from ._sqlite_schema import UPSERT

__all__ = ["SqliteSchedules"]

_COLUMNS = "id, spec, paused, next_fire_at, last_fire_at, last_task_id, created_at"
_SELECT = f"SELECT {_COLUMNS} FROM schedules"
_PUT = (
    f"INSERT INTO schedules ({_COLUMNS}, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(id) DO UPDATE SET spec = excluded.spec, paused = excluded.paused, "
    "next_fire_at = excluded.next_fire_at, last_fire_at = excluded.last_fire_at, "
    "last_task_id = excluded.last_task_id, created_at = excluded.created_at, "
    "owner = excluded.owner"
)


def _load(row: tuple[Any, ...]) -> Schedule:
    _, spec, paused, next_fire_at, last_fire_at, last_task_id, created_at = row
    return schedule_from(
        spec,
        paused=bool(paused),
        next_fire_at=next_fire_at,
        last_fire_at=last_fire_at,
        last_task_id=last_task_id,
        created_at=created_at,
    )


def _get(conn: sqlite3.Connection, schedule_id: str) -> Schedule | None:
    row = conn.execute(f"{_SELECT} WHERE id = ?", (schedule_id,)).fetchone()
    return None if row is None else _load(row)


def _write(conn: sqlite3.Connection, schedule: Schedule) -> None:
    conn.execute(
        _PUT,
        (
            schedule.id,
            spec_of(schedule),
            int(schedule.paused),
            schedule.next_fire,
            None if schedule.last_fire_at is None else schedule.last_fire_at.timestamp(),
            schedule.last_task_id,
            schedule.created_at.timestamp(),
            schedule.owner,
        ),
    )


class SqliteSchedules(SqliteBase):
    """`ScheduleStore` on SQLite."""

    async def put_schedule(self, schedule: Schedule, *, keep_paused: bool = False) -> Schedule:
        def put(conn: sqlite3.Connection) -> Schedule:
            stored = merge_schedule(_get(conn, schedule.id), schedule, keep_paused=keep_paused)
            _write(conn, stored)
            return stored

        return await self._in_writer(put, doing="store a schedule")

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        return await self._read(lambda conn: _get(conn, schedule_id))

    async def list_schedules(self, *, owner: str | None = None) -> builtins.list[Schedule]:
        params: tuple[str, ...] = ()
        if owner is None:
            sql = f"{_SELECT} ORDER BY id"
        else:
            sql, params = f"{_SELECT} WHERE owner = ? ORDER BY id", (owner,)
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [_load(row) for row in rows]

    async def remove_schedule(self, schedule_id: str) -> bool:
        def remove(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,)).rowcount > 0

        return await self._in_writer(remove, doing="remove a schedule")

    async def pause_schedule(
        self, schedule_id: str, *, paused: bool, next_fire_at: float | None = None
    ) -> Schedule | None:
        def pause(conn: sqlite3.Connection) -> Schedule | None:
            conn.execute(
                "UPDATE schedules SET paused = ?, next_fire_at = coalesce(?, next_fire_at) "
                "WHERE id = ?",
                (int(paused), next_fire_at, schedule_id),
            )
            return _get(conn, schedule_id)

        return await self._in_writer(pause, doing="pause a schedule")

    async def due_schedules(self, until: float, *, limit: int = 1000) -> builtins.list[Schedule]:
        rows = await self._read(
            lambda conn: conn.execute(
                f"{_SELECT} WHERE paused = 0 AND next_fire_at <= ? "
                "ORDER BY next_fire_at, id LIMIT ?",
                (until, limit),
            ).fetchall()
        )
        return [_load(row) for row in rows]

    async def fire_schedule(
        self,
        schedule_id: str,
        *,
        due: float,
        next_fire_at: float,
        record: TaskRecord | None,
        fired_for: float | None = None,
        event: Event | None = None,
    ) -> bool:
        row = None if record is None else row_from_record(record)  # UnstorableValue here

        def fire(conn: sqlite3.Connection) -> bool:
            if record is None:
                sql = "UPDATE schedules SET next_fire_at = ? "
                params: tuple[Any, ...] = (next_fire_at,)
            else:
                sql = "UPDATE schedules SET next_fire_at = ?, last_fire_at = ?, last_task_id = ? "
                params = (next_fire_at, fired_for, record.id)
            claimed = conn.execute(
                f"{sql}WHERE id = ? AND paused = 0 AND abs(next_fire_at - ?) <= ?",
                (*params, schedule_id, due, SCHEDULE_TOLERANCE),
            ).rowcount
            if claimed and row is not None:
                conn.execute(UPSERT, row)
            return bool(claimed)

        def events(claimed: bool) -> builtins.list[Event]:
            return [event] if claimed and event is not None else []

        return await self._in_writer(fire, events=events, shield=True, doing="fire a schedule")
