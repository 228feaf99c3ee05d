"""The Redis store's schedules: hashes changed only by scripts (`_redis_scripts`);
a fire's claim and its task's add are one script."""

from __future__ import annotations

import builtins
from typing import Any

from redis.asyncio import Redis

from .._events import Event
from .._record import TaskRecord
from .._schedule import Schedule
from ._codec import row_from_record
from ._redis_base import RedisBase
from ._redis_items import NONE, hash_of, item
from ._redis_rows import text
from ._schedule_codec import schedule_from, spec_of

__all__ = ["RedisSchedules"]


def _stamp(value: str | None) -> float | None:
    return float(value) if value else None


def _number(value: float | None) -> str:
    return "" if value is None else text(value)


def _load(stored: dict[str, str]) -> Schedule:
    return schedule_from(
        stored["spec"],
        paused=stored.get("paused") == "1",
        next_fire_at=_stamp(stored.get("next")),
        last_fire_at=_stamp(stored.get("last")),
        last_task_id=stored.get("last_task") or None,
        created_at=float(stored["created"]),
    )


class RedisSchedules(RedisBase):
    """`ScheduleStore` on Redis."""

    async def _schedule_call(self, script: str, *args: str) -> Any:
        _, calls = self._require()
        return await calls.run(script, self._args(*args))

    async def put_schedule(self, schedule: Schedule, *, keep_paused: bool = False) -> Schedule:
        stored = await self._schedule_call(
            "schedule_put",
            schedule.id,
            spec_of(schedule),
            schedule.timing,
            schedule.owner or "",
            "1" if schedule.paused else "0",
            _number(schedule.next_fire),
            _number(None if schedule.last_fire_at is None else schedule.last_fire_at.timestamp()),
            schedule.last_task_id or "",
            text(schedule.created_at.timestamp()),
            "1" if keep_paused else "0",
        )
        return _load(hash_of(stored))

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        key = self._key(f"sch:{schedule_id}")
        stored = await self._read(lambda client: client.hgetall(key))
        return _load(stored) if stored else None

    async def _schedules(self, ids: builtins.list[str]) -> builtins.list[Schedule]:
        if not ids:
            return []

        async def fetch(client: Redis) -> Any:
            pipe = client.pipeline(transaction=False)
            for schedule_id in ids:
                pipe.hgetall(self._key(f"sch:{schedule_id}"))
            return await pipe.execute()

        return [_load(stored) for stored in await self._read(fetch) if stored]

    async def list_schedules(self, *, owner: str | None = None) -> builtins.list[Schedule]:
        ids = await self._read(lambda client: client.zrange(self._key("sch"), 0, -1))
        schedules = await self._schedules(list(ids))
        return [s for s in schedules if owner is None or s.owner == owner]

    async def remove_schedule(self, schedule_id: str) -> bool:
        return bool(await self._schedule_call("schedule_remove", schedule_id))

    async def pause_schedule(
        self, schedule_id: str, *, paused: bool, next_fire_at: float | None = None
    ) -> Schedule | None:
        stored = await self._schedule_call(
            "schedule_pause", schedule_id, "1" if paused else "0", _number(next_fire_at)
        )
        return _load(hash_of(stored)) if stored else None

    async def due_schedules(self, until: float, *, limit: int = 1000) -> builtins.list[Schedule]:
        due_key = self._key("sch:due")
        ids = await self._read(
            lambda client: client.zrangebyscore(due_key, "-inf", text(until), start=0, num=limit)
        )
        schedules = [s for s in await self._schedules(list(ids)) if not s.paused]
        schedules.sort(key=lambda s: (s.next_fire or 0.0, s.id))
        return schedules

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
        task = ""
        if record is not None:
            task = item(record.id, state=NONE, row=row_from_record(record), events=[event])
        result = await self._schedule_call(
            "schedule_fire",
            schedule_id,
            text(due),
            text(next_fire_at),
            _number(fired_for),
            "" if record is None else record.id,
            task,
        )
        if result == 0:
            return False
        if record is not None:
            self._queued_later(record)
        self._note_logged([result])
        return True
