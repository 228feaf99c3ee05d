"""The Redis server the tests use: `TASKBUS_REDIS_URL` (default database 15 on
127.0.0.1, which `make test` starts when none answers). Each test gets key
prefixes of its own, under one prefix per test session, removed when the session
ends, so sessions that run at once never see each other's keys."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import redis

from taskbus.stores.redis import RedisStore

URL = os.environ.get("TASKBUS_REDIS_URL", "redis://127.0.0.1:6379/15")
SESSION_PREFIX = f"taskbus-test:{uuid.uuid4().hex[:12]}:"


def prefix_for(place: Path) -> str:
    """The key prefix of the store a test keeps at `place` (its tmp_path): the same
    place gives the same prefix, so a test can close a store and open it again."""
    return f"{SESSION_PREFIX}{hashlib.sha256(str(place).encode()).hexdigest()[:16]}:"


def redis_store(place: Path) -> RedisStore:
    return RedisStore(URL, prefix=prefix_for(place))


def remove_session_keys() -> None:
    """Delete every key this test session made."""
    client = redis.Redis.from_url(URL)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{SESSION_PREFIX}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()
