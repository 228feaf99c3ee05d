"""`RedisStore`: tasks shared by any number of processes, on any number of machines.

Every change is one Lua script (`_redis_scripts`), so one atomic step on the
server: an add and its task-queued event, a claim of several tasks, an outcome
and its final event (refused if the worker's lease was taken over), a lease
renewal, a reaping. Calls are sent in order and many per round trip
(`_redis_calls`). Events go to a Redis stream (the entry id is the event id),
which `follow` reads for every process, its own included, so every listener
hears every event once, in log order.

Durability is Redis's: an acknowledged change survives a server restart only as
far as its persistence does (use AOF with ``appendfsync everysec`` or
``always``). Runs on asyncio (redis-py's asyncio client); on trio, `open`
raises `StoreError`. One Redis server or primary: not Redis Cluster.

The pieces: `_redis_base` (connections, reads, writes), `_redis_eventlog` (the
stream), `_redis_claims` (leases, reaping, cancels), `_redis_counts` (the
stats), `_redis_items` (what a write carries), `_redis_rows` (rows as hashes),
`_redis_calls` (ordered, pipelined script calls), `_redis_scripts` (the Lua).
"""

from __future__ import annotations

import builtins
from functools import partial
from typing import Any

from redis.asyncio import Redis

from .._events import Event
from .._record import TaskRecord
from .._states import TaskState
from ._base import KeyInUse, StoreStats, TaskQuery
from ._codec import row_from_record
from ._redis_claims import RedisClaims
from ._redis_counts import COUNTS, stats_from
from ._redis_items import NONE, item, storable
from ._redis_rows import text
from ._redis_schedules import RedisSchedules

__all__ = ["RedisStore"]

_READ_BATCH = 1000


class RedisStore(RedisClaims, RedisSchedules):
    """`TaskStore` (and so `Store` and `EventBroker`) on Redis.

    `url` is a redis-py URL (``redis://host:6379/0``, ``rediss://`` for TLS,
    ``unix:///path``); `prefix` starts every key this store uses, so several
    stores share a database; `keep_events` bounds the event stream (approximate
    trimming, as Redis's ``MAXLEN ~``); `lease` is how long a worker's claim lasts
    unless renewed (every third of it), so how soon a dead worker's tasks run again.
    """

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """``redis://host:port/db`` (``rediss://`` and ``unix://`` too)."""
        return cls(url)

    def rate_limiter(self) -> Any:
        """A `limits` moving-window limiter on this Redis server (its Redis storage,
        keys under this store's prefix), so every process on it shares the rates of
        task types (`TaskOptions.rate`). Its connections close with the store."""
        from limits.aio.storage import RedisStorage
        from limits.aio.strategies import MovingWindowRateLimiter
        from redis.asyncio import ConnectionPool

        self._require()
        if self._rates is None:
            self._rate_pool = ConnectionPool.from_url(self.url)
            storage = RedisStorage(
                f"async+{self.url}",
                implementation="redispy",
                key_prefix=f"{self.prefix}rate",
                connection_pool=self._rate_pool,  # type: ignore[arg-type]
            )
            self._rates = MovingWindowRateLimiter(storage)
        return self._rates

    async def close(self) -> None:
        pool, self._rate_pool, self._rates = self._rate_pool, None, None
        try:
            await super().close()
        finally:
            if pool is not None:
                await pool.disconnect()

    async def add(self, record: TaskRecord, *, event: Event | None = None) -> None:
        """Store a new task, and `event` with it, before returning.

        Raises `UnstorableValue` (nothing stored) for a value the store cannot hold,
        `KeyInUse` if a queued or running task holds the record's idempotency key
        (in any process), `StoreError` if Redis cannot be reached.
        """
        row = row_from_record(record)
        self._queued_later(record)
        scope = "" if record.key is None else self._scope(record.owner, record.type, record.key)
        # Only if absent: a write sent again after a lost reply cannot add it twice.
        (result,) = await self._write(
            item(record.id, state=NONE, row=row, events=[event], scope=scope)
        )
        if result and result[0] == "taken":
            raise KeyInUse(result[1])

    async def claim(self, record: TaskRecord, *, event: Event | None = None) -> None:
        await self._write(item(record.id, row=storable(record), events=[event]))

    async def update(self, record: TaskRecord, *, event: Event | None = None) -> None:
        self._queued_later(record)
        await self._write(item(record.id, row=storable(record), events=[event]))

    async def finish(self, record: TaskRecord, *, event: Event | None = None) -> None:
        await self._write(item(record.id, row=storable(record), events=[event]))

    # -- reads --------------------------------------------------------------------------

    async def find_by_key(
        self,
        key: str,
        *,
        owner: str | None,
        task_type: str,
        completed_since: float | None = None,
    ) -> TaskRecord | None:
        scope = self._scope(owner, task_type, key)
        ids = sorted(await self._read(lambda client: client.smembers(scope)))
        records = [
            r
            for r in await self._records(ids)
            if (r.key, r.owner, r.type) == (key, owner, task_type)
        ]
        records.sort(key=lambda r: r.created_at)
        unfinished = [r for r in records if not r.state.is_final]
        if unfinished or completed_since is None:
            return unfinished[0] if unfinished else None
        done = [
            r
            for r in records
            if r.state is TaskState.COMPLETED
            and r.finished_at is not None
            and r.finished_at >= completed_since
        ]
        return max(done, key=lambda r: r.finished_at or 0.0) if done else None

    async def list(self, query: TaskQuery) -> builtins.list[TaskRecord]:
        if query.batch_id is not None:  # by insertion: every other filter in Python
            source, low, high = self._key(f"b:{query.batch_id}"), "-inf", "+inf"
        else:
            source = self._key(f"s:{query.state.value}" if query.state is not None else "all")
            low = "-inf" if query.created_after is None else text(query.created_after)
            high = "+inf" if query.created_before is None else f"({text(query.created_before)}"
        if query.batch_id is None and query.owner is None and query.type_prefix is None:
            ids = await self._read(
                partial(_window, source, low, high, query.offset, query.limit, query.newest_first)
            )
            return await self._records(ids)
        matches: builtins.list[TaskRecord] = []
        wanted = query.offset + query.limit
        start = 0
        while len(matches) < wanted:
            ids = await self._read(
                partial(_window, source, low, high, start, _READ_BATCH, query.newest_first)
            )
            if not ids:
                break
            start += len(ids)
            matches += [r for r in await self._records(ids) if query.matches(r)]
        return matches[query.offset : wanted]

    async def stats(self) -> StoreStats:
        """Counts by state and type, and queued by priority (`_redis_counts`)."""
        return stats_from(await self._read(self._counts))

    async def _counts(self, client: Redis) -> Any:
        return await client.register_script(COUNTS)(args=[self.prefix])

    async def purge(self, finished_before: float | None = None, keep: int | None = None) -> int:
        final = self._key("fin")
        doomed: set[str] = set()
        if finished_before is not None:
            before = f"({text(finished_before)}"
            doomed |= set(
                await self._read(lambda client: client.zrangebyscore(final, "-inf", before))
            )
        if keep is not None:
            doomed |= set(await self._read(lambda client: client.zrevrange(final, keep, -1)))
        _, calls = self._require()
        deleted = 0
        ids = sorted(doomed)
        for start in range(0, len(ids), _READ_BATCH):
            deleted += int(await calls.run("delete", self._args(*ids[start : start + _READ_BATCH])))
        return deleted

    async def recover(self) -> builtins.list[TaskRecord]:
        """Queued and running tasks, most urgent first."""
        ids: list[str] = []
        for state in ("queued", "running"):
            key = self._key(f"s:{state}")
            ids += await self._read(partial(_everything, key))
        records = await self._records(ids)
        records.sort(key=lambda r: (-r.priority, r.created_at))
        return records


async def _window(
    source: str, low: str, high: str, start: int, count: int, newest_first: bool, client: Redis
) -> Any:
    if newest_first:
        return await client.zrevrangebyscore(source, high, low, start=start, num=count)
    return await client.zrangebyscore(source, low, high, start=start, num=count)


async def _everything(key: str, client: Redis) -> Any:
    return await client.zrange(key, 0, -1)
