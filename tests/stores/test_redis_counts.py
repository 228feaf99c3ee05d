"""The Redis store's queued counts by priority (``P nq``, `_redis_counts`): kept by
the scripts themselves, and recounted for a store that an older taskbus wrote
(no ``P nq``) or still writes (a rolling upgrade). The figure itself is checked on
every store by the contract suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import cast

import pytest
import redis.asyncio
from _redis import URL, prefix_for, redis_store

from taskbus import TaskState
from taskbus.stores.redis import RedisStore

from .test_contract import T0, claim, make_record

pytestmark = pytest.mark.anyio

QUEUED = {"mail:send": {5: 2, 1: 1}, "reports:build": {2: 2}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[RedisStore]:
    opened = redis_store(tmp_path)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def client() -> AsyncIterator[redis.asyncio.Redis]:
    connection = redis.asyncio.Redis.from_url(URL, decode_responses=True)
    try:
        yield connection
    finally:
        await connection.aclose()


async def hash_of(client: redis.asyncio.Redis, key: str) -> dict[str, str]:
    # redis-py types its hash methods for the sync and the async client at once.
    return await cast("Awaitable[dict[str, str]]", client.hgetall(key))


async def fill(store: RedisStore) -> None:
    """Tasks that leave `QUEUED` queued: ready, delayed, claimed, retried, final."""
    for priority in (5, 5, 9, 1):
        await store.add(make_record("mail:send", priority=priority))
    delayed = make_record(priority=2)
    delayed.not_before = T0 + 3600
    await store.add(delayed)
    retried = make_record(priority=2)
    await store.add(retried)
    await claim(store, retried)
    retried.move(TaskState.QUEUED)
    retried.queued_at = retried.not_before = T0 + 5
    await store.update(retried)
    await store.add(make_record(priority=7))
    claimed = await store.acquire("w1", 1, 30.0, types=["reports:build"], now=T0 + 1)
    assert [r.priority for r in claimed] == [7]
    claimed = await store.acquire("w1", 1, 30.0, types=["mail:send"], now=T0 + 1)
    assert [r.priority for r in claimed] == [9]


async def test_the_scripts_keep_the_counts_so_a_read_recounts_nothing(
    store: RedisStore, client: redis.asyncio.Redis, tmp_path: Path
) -> None:
    key = prefix_for(tmp_path) + "nq"
    assert (await store.stats()).queued_by_priority == {}  # a new store: counted at once
    assert await hash_of(client, key) == {"_all": "1"}

    await fill(store)

    kept = await hash_of(client, key)
    assert kept == {"_all": "1", "5:mail:send": "2", "1:mail:send": "1", "2:reports:build": "2"}
    assert (await store.stats()).queued_by_priority == QUEUED


async def test_a_store_an_older_taskbus_wrote_is_counted_at_the_first_read(
    store: RedisStore, client: redis.asyncio.Redis, tmp_path: Path
) -> None:
    await fill(store)
    await client.delete(prefix_for(tmp_path) + "nq")  # an older taskbus never wrote it

    assert (await store.stats()).queued_by_priority == QUEUED
    assert (await hash_of(client, prefix_for(tmp_path) + "nq"))["_all"] == "1"


async def test_counts_an_older_process_leaves_wrong_are_recounted(
    store: RedisStore, client: redis.asyncio.Redis, tmp_path: Path
) -> None:
    await store.stats()
    await fill(store)
    # An older process claimed a priority 5 task: it updated ``P n`` but not ``P nq``.
    older = await store.acquire("old", 1, 30.0, types=["mail:send"], now=T0 + 2)
    assert [r.priority for r in older] == [5]
    await cast("Awaitable[int]", client.hincrby(prefix_for(tmp_path) + "nq", "5:mail:send", 1))

    stats = await store.stats()

    assert stats.queued_by_priority == {"mail:send": {5: 1, 1: 1}, "reports:build": {2: 2}}
    assert stats.by_state[TaskState.QUEUED] == 4
