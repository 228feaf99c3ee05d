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
"""

from __future__ import annotations

import builtins
import itertools
import json
import logging
import math
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

import anyio
import sniffio
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from .._errors import StoreError, UnstorableValue
from .._events import CancelRequested, Event, event_order
from .._queue import MAX_PRIORITY, MIN_PRIORITY
from .._record import TaskRecord
from .._states import TaskState
from ._base import KeyInUse, StoreStats, TaskQuery
from ._codec import COLUMNS, Row, escape_text, row_from_record, unstorable_row
from ._event_codec import event_from_text, event_text
from ._leases import (
    ClaimArgs,
    check_ids,
    check_now,
    check_reason,
    check_worker,
    lease_end,
    settle_expired,
)
from ._redis_calls import Call, ScriptCalls
from ._redis_rows import decode, fields, scope_key, text
from ._redis_scripts import ACQUIRE, DELETE, EXPIRED, WRITE

__all__ = ["RedisStore"]

logger = logging.getLogger("taskbus.stores.redis")

_ANY = "*"
_NONE = ""
_PROGRESS = ("progress", "current", "total", "message", "eta")
_AT = {name: index for index, name in enumerate(COLUMNS)}
_READ_BATCH = 1000
_BLOCK_MS = 1000
_RETRY_PAUSE = 0.5
_DUE_HINT_FOR = 1.0  # seconds an acquire's view of the next due time is used


def _logged(events: Iterable[Event | None]) -> list[str]:
    """``[name, body, ...]`` of the events to log (None: nothing)."""
    out: list[str] = []
    for event in events:
        if event is not None:
            out += (event.name, event_text(event))
    return out


def _item(
    task_id: str,
    *,
    state: str = _ANY,
    worker: str = _ANY,
    lease: str = _ANY,
    row: Row | None = None,
    set_: Mapping[str, Any] | None = None,
    events: Iterable[Event | None] = (),
    scope: str = "",
) -> str:
    """One item of the `WRITE` script, as JSON: a whole row, or the columns in `set_`
    (None: deleted), on the conditions given."""
    to_delete: list[str] = []
    token = ""
    if row is not None:
        mode, to_set, token = "row", fields(row), _token()
    else:
        mode, to_set = "patch", []
        for name, value in (set_ or {}).items():
            if value is None:
                to_delete.append(name)
            else:
                to_set += (name, text(value))
    item = [task_id, state, worker, lease, mode, token, to_set, to_delete, _logged(events), scope]
    return json.dumps(item, ensure_ascii=False, separators=(",", ":"))


_TOKEN_BASE = secrets.token_hex(6)
_token_numbers = itertools.count()


def _token() -> str:
    """A write token, unique per row write across processes (see `WRITE`)."""
    return f"{_TOKEN_BASE}.{os.getpid()}.{next(_token_numbers)}"


def _storable(record: TaskRecord) -> Row:
    """The record's row; a value that cannot be stored fails the task."""
    try:
        return row_from_record(record)
    except UnstorableValue as exc:
        return unstorable_row(record, exc, time.time())


def _hash(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RedisStore:
    """`TaskStore` (and so `Store` and `EventBroker`) on Redis.

    `url` is a redis-py URL (``redis://host:6379/0``, ``rediss://`` for TLS,
    ``unix:///path``); `prefix` starts every key this store uses, so several
    stores share a database; `keep_events` bounds the event stream (approximate
    trimming, as Redis's ``MAXLEN ~``); `lease` is how long a worker's claim lasts
    unless renewed (every third of it), so how soon a dead worker's tasks run again.
    """

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
        self._calls: ScriptCalls | None = None
        self._deliver: Callable[[Event], None] | None = None
        self._last_read = "0-0"  # the id of the last event `follow` delivered
        self._following = False
        self._logged_up_to = (0, 0)  # the newest event this store logged
        self._delivered = anyio.Event()
        self._due_hint: tuple[float | None, float] = (None, -math.inf)

    def __repr__(self) -> str:
        return f"RedisStore({_redacted(self.url)!r}, prefix={self.prefix!r})"

    @classmethod
    def from_url(cls, url: str) -> RedisStore:
        """``redis://host:port/db`` (``rediss://`` and ``unix://`` too)."""
        return cls(url)

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
            {"write": WRITE, "acquire": ACQUIRE, "expired": EXPIRED, "delete": DELETE},
            repr(self),
            merged={"write": 2},  # prefix and keep, then one item per result
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

    def _require(self) -> tuple[Redis, ScriptCalls]:
        if self._client is None or self._calls is None:
            raise StoreError(f"{self!r} is not open")
        return self._client, self._calls

    def _args(self, *args: str) -> list[str]:
        return [self.prefix, str(self.keep_events), *args]

    async def _read(self, what: Callable[[Redis], Any]) -> Any:
        client, _ = self._require()
        try:
            return await what(client)
        except (RedisError, OSError) as exc:
            raise StoreError(f"{self!r}: cannot read: {type(exc).__name__}: {exc}") from None

    def _key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def _scope(self, owner: str | None, task_type: str, key: str) -> str:
        return scope_key(self.prefix, owner, task_type, key)

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
            if ids and ids != 0 and ids[0] != "taken":
                self._logged_up_to = max(self._logged_up_to, event_order(ids[-1]))

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
            _item(record.id, state=_NONE, row=row, events=[event], scope=scope)
        )
        if result and result[0] == "taken":
            raise KeyInUse(result[1])

    async def claim(self, record: TaskRecord, *, event: Event | None = None) -> None:
        await self._write(_item(record.id, row=_storable(record), events=[event]))

    async def update(self, record: TaskRecord, *, event: Event | None = None) -> None:
        self._queued_later(record)
        await self._write(_item(record.id, row=_storable(record), events=[event]))

    async def finish(self, record: TaskRecord, *, event: Event | None = None) -> None:
        await self._write(_item(record.id, row=_storable(record), events=[event]))

    # -- reads --------------------------------------------------------------------------

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
        source = self._key(f"s:{query.state.value}" if query.state is not None else "all")
        low = "-inf" if query.created_after is None else text(query.created_after)
        high = "+inf" if query.created_before is None else f"({text(query.created_before)}"
        if query.owner is None and query.type_prefix is None:
            ids = await self._read(
                lambda client: client.zrangebyscore(
                    source, low, high, start=query.offset, num=query.limit
                )
            )
            return await self._records(ids)
        matches: builtins.list[TaskRecord] = []
        wanted = query.offset + query.limit
        start = 0
        while len(matches) < wanted:
            ids = await self._read(partial(_window, source, low, high, start))
            if not ids:
                break
            start += len(ids)
            matches += [r for r in await self._records(ids) if query.matches(r)]
        return matches[query.offset : wanted]

    async def stats(self) -> StoreStats:
        counts = await self._read(lambda client: client.hgetall(self._key("n")))
        by_state: Counter[TaskState] = Counter()
        by_type: dict[str, Counter[TaskState]] = {}
        for field, value in counts.items():
            state_name, _, task_type = field.partition(":")
            state, number = TaskState(state_name), int(value)
            if number > 0:
                by_state[state] += number
                by_type.setdefault(task_type, Counter())[state] += number
        return StoreStats(by_state=dict(by_state), by_type={k: dict(v) for k, v in by_type.items()})

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

    async def next_due(self) -> float | None:
        """The earliest not-before time among queued tasks not yet due: as the last
        `acquire` of this store saw it, if that was a moment ago (a task added since
        wakes the claims, whose `acquire` sees it), else read."""
        due, when = self._due_hint
        if time.monotonic() - when < _DUE_HINT_FOR:
            return due
        first = await self._read(
            lambda client: client.zrange(self._key("delayed"), 0, 0, withscores=True)
        )
        return float(first[0][1]) if first else None

    async def running_workers(self) -> builtins.list[str]:
        """The workers holding leases, expired or not (reaping decides)."""
        ids = await self._read(lambda client: client.zrange(self._key("leases"), 0, -1))
        return sorted({r.worker for r in await self._records(ids) if r.worker is not None})

    # -- leases ---------------------------------------------------------------------

    async def acquire(
        self,
        worker_id: str,
        limit: int,
        lease: float,
        *,
        limits: Mapping[str, int] | None = None,
        types: Collection[str] | None = None,
        aging: float | None = None,
        now: float | None = None,
    ) -> builtins.list[TaskRecord]:
        """Claim up to `limit` ready queued tasks (see `TaskStore.acquire`), in one step."""
        pick = ClaimArgs(worker_id, limit, lease, limits=limits, types=types, aging=aging, now=now)
        if pick.types is not None and not pick.types:
            return []
        _, calls = self._require()
        wanted = sorted(pick.types) if pick.types is not None else []
        bounds = [(t, n) for t, n in sorted(pick.limits.items())]
        claimed = await calls.run(
            "acquire",
            self._args(
                pick.worker,
                str(pick.limit),
                text(pick.until),
                text(pick.now),
                "" if pick.aging is None else text(pick.aging),
                str(MAX_PRIORITY),
                str(MIN_PRIORITY),
                str(len(wanted)),
                *wanted,
                str(len(bounds)),
                *(a for t, n in bounds for a in (t, str(n))),
            ),
        )
        *claimed, due = claimed
        self._due_hint = (float(due) if due else None, time.monotonic())
        return [decode(_hash(flat), pick.now) for flat in claimed]

    async def release(
        self, worker_id: str, record: TaskRecord, *, event: Event | None = None
    ) -> bool:
        """Write a final or re-queued record, lease dropped, and log `event`, if
        `worker_id` holds the task's lease; else write and log nothing: False."""
        item = self._release_item(worker_id, record, event)
        (result,) = await self._write(item)
        return bool(result != 0)

    def release_soon(
        self,
        worker_id: str,
        record: TaskRecord,
        *,
        event: Event | None = None,
        done: Callable[[bool | None], None],
    ) -> None:
        item = self._release_item(worker_id, record, event)
        self._write_soon(
            item, then=lambda results: done(None if results is None else results[0] != 0)
        )

    def _release_item(self, worker_id: str, record: TaskRecord, event: Event | None) -> str:
        worker = check_worker(worker_id)
        if record.state is TaskState.RUNNING:
            raise ValueError(f"release takes a final or re-queued record, not {record!r}")
        self._queued_later(record)
        row = _storable(record)
        row = (*row[:-2], None, None)  # worker, lease_until: dropped
        return _item(record.id, state="running", worker=worker, row=row, events=[event])

    async def extend_leases(
        self, worker_id: str, ids: Collection[str], lease: float, *, now: float | None = None
    ) -> set[str]:
        """Move to ``now + lease`` the leases `worker_id` holds on `ids`; return the
        ids it holds none on."""
        worker, wanted = check_worker(worker_id), check_ids(ids)
        until = lease_end(check_now(now), lease)
        if not wanted:
            return set()
        items = [
            _item(task_id, state="running", worker=worker, set_={"lease_until": until})
            for task_id in wanted
        ]
        results = await self._write(*items)
        return {task_id for task_id, result in zip(wanted, results, strict=True) if result == 0}

    async def reap_expired(
        self,
        *,
        now: float | None = None,
        workers: Collection[str] = (),
        fail_types: Collection[str] = (),
        alive: Collection[str] = (),
        events_for: Callable[[TaskRecord], Event | None] | None = None,
    ) -> builtins.list[TaskRecord]:
        """Settle the running tasks whose lease ended, that hold none, or whose worker
        is dead (see `TaskStore.reap_expired`); each is written only if it is still
        as read (its worker may renew or release meanwhile)."""
        moment = check_now(now)
        dead, living, failing = set(workers), set(alive), set(fail_types)
        _, calls = self._require()
        ids = await calls.run("expired", self._args(text(moment), *sorted(dead)))
        stored_rows = await self._hashes(ids)
        reaped: builtins.list[TaskRecord] = []
        items: builtins.list[str] = []
        for stored in stored_rows:
            if not stored or stored.get("state") != "running":
                continue
            record = decode(stored, moment)
            worker, lease_until = record.worker, record.lease_until
            expired = lease_until is None or lease_until < moment or worker in dead
            if not expired or worker in living:
                continue
            settle_expired(record, moment, retry_allowed=record.type not in failing)
            items.append(
                _item(
                    record.id,
                    state="running",
                    worker=stored.get("worker", _NONE),
                    lease=stored.get("lease_until", _NONE),
                    row=_storable(record),
                    events=[events_for(record) if events_for is not None else None],
                )
            )
            reaped.append(record)
        if not items:
            return []
        results = await self._write(*items)
        return [record for record, result in zip(reaped, results, strict=True) if result != 0]

    async def cancel_queued(
        self,
        task_id: str,
        reason: str | None,
        *,
        now: float | None = None,
        event_for: Callable[[TaskRecord], Event | None] | None = None,
    ) -> TaskRecord | None:
        """Cancel the task if it is queued, in one step (written only if it is still
        queued when the write runs); its new record, else None."""
        reason, moment = check_reason(reason), check_now(now)
        for _ in range(10):  # each pass loses only to a claim or a cancel in between
            record = await self.get(task_id)
            if record is None or record.state is not TaskState.QUEUED:
                return None
            record.state, record.finished_at = TaskState.CANCELLED, moment
            record.cancel_reason = reason
            row = _storable(record)
            cancelled = decode(_hash(fields(row)), moment)  # the reason as stored
            event = event_for(cancelled) if event_for is not None else None
            (result,) = await self._write(_item(task_id, state="queued", row=row, events=[event]))
            if result != 0:
                return cancelled
        return None

    def report_progress(self, worker_id: str, record: TaskRecord, event: Event | None) -> None:
        """Write the progress fields of `record` and log `event` while `worker_id`
        holds the task's lease. Not waited for."""
        if self._client is None:
            logger.error("%r is not open: progress of %s is lost", self, record.id)
            return
        progress = _progress(record)
        self._write_soon(
            _item(record.id, state="running", worker=worker_id, set_=progress, events=[event])
        )

    def request_cancel(self, task_id: str, reason: str | None) -> None:
        """Log a `CancelRequested` (the worker running the task hears it), and note
        the reason on the task if it runs, so reaping cancels it if its worker dies."""
        if self._client is None:
            logger.error("%r is not open: the cancel of %s is lost", self, task_id)
            return
        noted = escape_text(reason) if reason is not None else "cancelled"
        now = datetime.now(UTC)
        event = CancelRequested(task_id=task_id, task_type="", timestamp=now, reason=reason)
        self._write_soon(
            _item(task_id, state="running", set_={"cancel_reason": noted}),
            _item("", events=[event]),
        )

    # -- the event log ------------------------------------------------------------------

    def deliver_events(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback(event)`` for each logged event, in log order, as `follow`
        reads it (this store's own and every other process's)."""
        self._deliver = callback

    def log_event(self, event: Event) -> None:
        """Log an event that changes no task (progress, a batch's), not waited for."""
        if self._client is None:
            logger.error("%r is not open: %s is lost", self, event.name)
            return
        self._write_soon(_item("", events=[event]))

    async def events_after(self, after: str | None, *, limit: int = 1000) -> builtins.list[Event]:
        """Up to `limit` events logged after the one with id `after` (from the oldest
        kept for None), oldest first; none for an id this log never issued."""
        if after is None:
            start = "-"
        else:
            try:
                ms, seq = event_order(after)
            except ValueError:
                return []
            start = f"({ms}-{seq}"
        entries = await self._read(
            lambda client: client.xrange(self._key("events"), start, "+", count=limit)
        )
        return _events(entries)

    async def last_event_id(self) -> str | None:
        client, _ = self._require()
        try:
            return await self._last_id(client)
        except (RedisError, OSError) as exc:
            raise StoreError(f"{self!r}: cannot read: {type(exc).__name__}: {exc}") from None

    async def _last_id(self, client: Redis) -> str | None:
        try:
            info = await client.xinfo_stream(self._key("events"))
        except ResponseError:  # no such key: nothing was ever logged
            return None
        last = str(info.get("last-generated-id") or "0-0")
        return None if last == "0-0" else last

    async def flush(self) -> None:
        """Wait until every write made so far is on the server and, while `follow`
        runs, until its events are delivered."""
        _, calls = self._require()
        await calls.send_pending()
        with anyio.move_on_after(10):
            while self._following and event_order(self._last_read) < self._logged_up_to:
                await self._delivered.wait()

    async def follow(self) -> None:
        """Send the writes nobody waits for, and deliver every logged event in log
        order, until cancelled. A lost connection is retried (and logged once)."""
        _, calls = self._require()
        self._following = True
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(calls.serve)
                await self._read_log()
        finally:
            self._following = False

    async def _read_log(self) -> None:
        failing = False
        while True:
            reader = self._reader
            if reader is None:
                raise StoreError(f"{self!r} is not open")
            try:
                answer: Any = await reader.xread(
                    {self._key("events"): self._last_read}, count=_READ_BATCH, block=_BLOCK_MS
                )
            except (RedisError, OSError) as exc:
                if not failing:
                    logger.error("%r: reading the event log failed: %s", self, exc)
                failing = True
                await anyio.sleep(_RETRY_PAUSE)
                continue
            if failing:
                logger.warning("%r: reading the event log works again", self)
                failing = False
            for _stream, entries in answer or []:
                if entries:
                    self._last_read = entries[-1][0]
                for event in _events(entries):
                    if self._deliver is not None:
                        try:
                            self._deliver(event)
                        except Exception:
                            logger.exception("%r: delivering %s", self, event.name)
            delivered, self._delivered = self._delivered, anyio.Event()
            delivered.set()


async def _window(source: str, low: str, high: str, start: int, client: Redis) -> Any:
    return await client.zrangebyscore(source, low, high, start=start, num=_READ_BATCH)


async def _everything(key: str, client: Redis) -> Any:
    return await client.zrange(key, 0, -1)


def _events(entries: Iterable[tuple[str, Mapping[str, str]]]) -> builtins.list[Event]:
    events: builtins.list[Event] = []
    for event_id, body in entries:
        event = event_from_text(event_id, body.get("n", ""), body.get("b", ""))
        if event is not None:
            events.append(event)
    return events


def _progress(record: TaskRecord) -> dict[str, Any]:
    """The progress columns of `record`, as stored (None: cleared)."""
    row = _storable(record)
    return {name: row[_AT[name]] for name in _PROGRESS}


def _redacted(url: str) -> str:
    """`url` without its password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{host}" if user else f"{scheme}{sep}***@{host}"
