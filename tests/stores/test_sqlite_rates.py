"""The `limits` storage on the SQLite store's file (`_sqlite_rates`): the moving
window's SQL with explicit times, and the storage through `limits` on an open store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from limits import parse

from taskbus.stores._sqlite_rates import SqliteRateStorage, _acquire, _window
from taskbus.stores._sqlite_schema import migrate
from taskbus.stores.sqlite import SqliteStore

T0 = 1_700_000_000.0


@pytest.fixture
def conn(tmp_path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(":memory:", isolation_level=None)
    migrate(connection, tmp_path / "memory")
    return connection


def take(conn: sqlite3.Connection, key: str, now: float, limit: int = 2) -> bool:
    return _acquire(conn, key=key, limit=limit, expiry=60, amount=1, now=now)


def test_a_window_holds_its_limit_and_has_room_once_its_oldest_start_leaves(
    conn: sqlite3.Connection,
) -> None:
    assert take(conn, "a", T0) and take(conn, "a", T0 + 10)
    assert not take(conn, "a", T0 + 59.9)
    assert take(conn, "b", T0 + 59.9), "another key has a window of its own"
    assert _window(conn, key="a", expiry=60, now=T0 + 30) == (T0, 2)
    assert take(conn, "a", T0 + 60), "the first start left the window"
    assert not take(conn, "a", T0 + 61)


def test_rows_whose_window_ended_are_dropped_whatever_their_key(
    conn: sqlite3.Connection,
) -> None:
    for n in range(5):
        assert take(conn, f"tenant-{n}", T0, limit=1)
    take(conn, "other", T0 + 61)
    (rows,) = conn.execute("SELECT count(*) FROM rate_hits").fetchone()
    assert rows == 1


@pytest.mark.anyio
async def test_the_storage_serves_limits_moving_window_on_an_open_store(
    tmp_path: Path, anyio_backend: str
) -> None:
    store = SqliteStore(tmp_path / "jobs.db")
    await store.open()
    try:
        limiter = store.rate_limiter()
        assert limiter is store.rate_limiter(), "one limiter per store"
        item = parse("2/minute")
        assert [await limiter.hit(item, "t") for _ in range(3)] == [True, True, False]
        stats = await limiter.get_window_stats(item, "t")
        assert stats.remaining == 0 and stats.reset_time > T0
        storage = limiter.storage
        assert isinstance(storage, SqliteRateStorage)
        assert await storage.check()
        await storage.clear(item.key_for("t"))
        assert await limiter.hit(item, "t")
        assert await storage.reset() == 1
        with pytest.raises(NotImplementedError, match="moving-window strategy only"):
            await storage.incr("x", 60)
    finally:
        await store.close()
