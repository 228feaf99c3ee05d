"""The Redis store's connections, arguments, reads and writes: what its halves share."""

from __future__ import annotations

import builtins
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import anyio
import sniffio
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import RedisError, ResponseError

from .._errors import StoreError
from .._events import Event, event_order
from .._record import TaskRecord
from .._states import TaskState
from ._base import StoreOutage
from ._outage import OutageWatch
from ._redis_calls import Call, ScriptCalls
from ._redis_rows import decode, scope_key
from ._redis_scripts import (
    ACQUIRE,
    DELETE,
    EXPIRED,
    SCHEDULE_FIRE,
    SCHEDULE_PAUSE,
    SCHEDULE_PUT,
    SCHEDULE_REMOVE,
    WRITE,
)

__all__ = ["RedisBase"]

logger = logging.getLogger("taskbus.stores.redis")


class RedisBase:
    """What the Redis store's halves share (see `RedisStore` for the arguments)."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "taskbus:",
        keep_events: int = 100_000,
        lease: float = 30.0,
    ) -> None:
        if not isinstance(url, str) or "://" not in url:
            raise ValueError(f"a Redis store URL looks like 'redis://host:6379/0', not {url!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"prefix must be non-empty text, not {prefix!r}")
        if isinstance(keep_events, bool) or not isinstance(keep_events, int) or keep_events < 1:
            raise ValueError(f"keep_events must be a positive integer, not {keep_events!r}")
        if isinstance(lease, bool) or not isinstance(lease, int | float) or not 1 <= lease < 1e9:
            raise ValueError(f"lease must be a number of seconds from 1, not {lease!r}")
        #: Seconds a worker's claim lasts unless renewed (every third of it): a task
        #: whose worker died runs again after at most this long.
        self.lease = float(lease)
        self.url = url
        self.prefix = prefix
        self.keep_events = keep_events
        self._client: Redis | None = None
        self._reader: Redis | None = None
        #: The connections of the rate limiter (`RedisStore.rate_limiter`), if used.
        self._rate_pool: ConnectionPool | None = None
        self._rates: Any = None
        self._calls: ScriptCalls | None = None
        self._deliver: Callable[[Event], None] | None = None
        self._last_read = "0-0"  # the id of the last event `follow` delivered
        self._following = False
        self._logged_up_to = (0, 0)  # the newest event this store logged
        self._delivered = anyio.Event()
        self._due_hint: tuple[float | None, float] = (None, -math.inf)
        self._watch = OutageWatch()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_redacted(self.url)!r}, prefix={self.prefix!r})"

    # -- opening ------------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is not None:
            raise StoreError(f"{self!r} is already open")
        try:
            library = sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            library = "none"
        if library != "asyncio":
            raise StoreError(
                f"{self!r}: the Redis store runs on asyncio (redis-py's asyncio client), "
                f"not on {library}"
            )
        client = Redis.from_url(self.url, decode_responses=True)
        reader = Redis.from_url(self.url, decode_responses=True)
        calls = ScriptCalls(
            client,
            {
                "write": WRITE,
                "acquire": ACQUIRE,
                "expired": EXPIRED,
                "delete": DELETE,
                "schedule_put": SCHEDULE_PUT,
                "schedule_pause": SCHEDULE_PAUSE,
                "schedule_remove": SCHEDULE_REMOVE,
                "schedule_fire": SCHEDULE_FIRE,
            },
            repr(self),
            merged={"write": len(self._args())},  # the shared head, then one item per result
            watch=self._watch,
        )
        try:
            await client.ping()
            await calls.load()
            last = await self._last_id(client)
        except (RedisError, OSError) as exc:
            await client.aclose()
            await reader.aclose()
            raise StoreError(f"{self!r}: cannot open: {type(exc).__name__}: {exc}") from None
        self._client, self._reader, self._calls = client, reader, calls
        self._last_read = last or "0-0"

    async def close(self) -> None:
        client, reader, calls = self._client, self._reader, self._calls
        self._client = self._reader = self._calls = None
        if calls is not None:
            try:
                await calls.send_pending()
            except StoreError as exc:
                logger.error("%s; closing anyway", exc)
            await calls.close()
        for each in (client, reader):
            if each is not None:
                await each.aclose()

    @property
    def outage(self) -> StoreOutage | None:
        """Set while the server cannot be reached: writes are being retried, or the
        last read or event-log read failed (see `TaskBus.stats`)."""
        return self._watch.current

    def _require(self) -> tuple[Redis, ScriptCalls]:
        if self._client is None or self._calls is None:
            raise StoreError(f"{self!r} is not open")
        return self._client, self._calls

    def _args(self, *args: str) -> list[str]:
        return [self.prefix, str(self.keep_events), *args]

    async def _read(self, what: Callable[[Redis], Any]) -> Any:
        client, _ = self._require()
        try:
            answer = await what(client)
        except (RedisError, OSError) as exc:
            self._watch.lost("read", exc)
            raise StoreError(f"{self!r}: cannot read: {type(exc).__name__}: {exc}") from None
        self._watch.reached("read")
        return answer

    def _key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def _scope(self, owner: str | None, task_type: str, key: str) -> str:
        return scope_key(self.prefix, owner, task_type, key)

    async def _last_id(self, client: Redis) -> str | None:
        try:
            info = await client.xinfo_stream(self._key("events"))
        except ResponseError:  # no such key: nothing was ever logged
            return None
        last = str(info.get("last-generated-id") or "0-0")
        return None if last == "0-0" else last

    # -- writes ---------------------------------------------------------------------

    def _queued_later(self, record: TaskRecord) -> None:
        """A task this store writes queued with a not-before time: the next due time
        may be sooner than the last `acquire` saw."""
        if record.not_before is not None and record.state is TaskState.QUEUED:
            self._due_hint = (None, -math.inf)

    async def _write(self, *items: str) -> list[Any]:
        _, calls = self._require()
        results: list[Any] = await calls.run("write", self._args(*items))
        self._note_logged(results)
        return results

    def _write_soon(
        self, *items: str, then: Callable[[list[Any] | None], None] | None = None
    ) -> None:
        _, calls = self._require()

        def done(call: Call) -> None:
            if call.error is not None:
                logger.error("%s", call.error)
            else:
                self._note_logged(call.result)
            if then is not None:
                then(None if call.error is not None else call.result)

        calls.queue("write", self._args(*items), done)

    def _note_logged(self, results: list[Any]) -> None:
        for ids in results:
            if ids and ids[0] != "taken":  # 0: not written; [] or "taken": nothing logged
                self._logged_up_to = max(self._logged_up_to, event_order(ids[-1]))

    async def get(self, task_id: str) -> TaskRecord | None:
        stored = await self._read(lambda client: client.hgetall(self._key(f"t:{task_id}")))
        return decode(stored, time.time()) if stored else None

    async def _hashes(self, ids: builtins.list[str]) -> builtins.list[dict[str, str]]:
        """The stored hashes of `ids` (empty for a task no longer stored), in one trip."""
        if not ids:
            return []

        async def fetch(client: Redis) -> builtins.list[dict[str, str]]:
            pipe = client.pipeline(transaction=False)
            for task_id in ids:
                pipe.hgetall(self._key(f"t:{task_id}"))
            return builtins.list(await pipe.execute())

        hashes: builtins.list[dict[str, str]] = await self._read(fetch)
        return hashes

    async def _records(self, ids: builtins.list[str]) -> builtins.list[TaskRecord]:
        now = time.time()
        return [decode(stored, now) for stored in await self._hashes(ids) if stored]


def _redacted(url: str) -> str:
    """`url` without its password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{host}" if user else f"{scheme}{sep}***@{host}"
