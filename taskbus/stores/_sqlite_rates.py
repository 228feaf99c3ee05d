"""A `limits` storage on the SQLite store's file, for rate limits shared by every
process on it (`TaskOptions.rate`).

`limits` has no SQLite storage; this one serves its moving-window strategy: each
start is a row of ``rate_hits`` (key, time, end of its window), and taking a slot is
one writer transaction (``BEGIN IMMEDIATE``: one writer at a time across processes)
that drops every row whose window has ended (of any key, so the table holds only
live entries), counts the key's rows, and adds one if there is room. It runs on the store's writer thread, so it never blocks the event loop and
works on asyncio and trio alike. Only the moving window is served: the fixed-window
calls (``incr``, ``get``, ``get_expiry``) raise `NotImplementedError`.
"""

from __future__ import annotations

import sqlite3
import time
from functools import partial
from typing import TYPE_CHECKING

from limits.aio.storage import MovingWindowSupport, Storage

if TYPE_CHECKING:
    from ._sqlite_base import SqliteBase

__all__ = ["SqliteRateStorage"]

_FIXED = "taskbus's SQLite rate storage serves the moving-window strategy only"


def _acquire(
    conn: sqlite3.Connection, *, key: str, limit: int, expiry: float, amount: int, now: float
) -> bool:
    conn.execute("DELETE FROM rate_hits WHERE until <= ?", (now,))
    (count,) = conn.execute(
        "SELECT count(*) FROM rate_hits WHERE key = ? AND at > ?", (key, now - expiry)
    ).fetchone()
    if count + amount > limit:
        return False
    conn.executemany(
        "INSERT INTO rate_hits (key, at, until) VALUES (?, ?, ?)",
        [(key, now, now + expiry)] * amount,
    )
    return True


def _window(conn: sqlite3.Connection, *, key: str, expiry: float, now: float) -> tuple[float, int]:
    start, count = conn.execute(
        "SELECT min(at), count(*) FROM rate_hits WHERE key = ? AND at > ?", (key, now - expiry)
    ).fetchone()
    return (now if start is None else float(start)), int(count)


def _clear(conn: sqlite3.Connection, *, key: str | None) -> int:
    if key is None:
        return int(conn.execute("DELETE FROM rate_hits").rowcount)
    return int(conn.execute("DELETE FROM rate_hits WHERE key = ?", (key,)).rowcount)


class SqliteRateStorage(Storage, MovingWindowSupport):
    """Moving-window rate-limit entries in the SQLite store's file (see the module)."""

    STORAGE_SCHEME = None  # made by the store, never from a URI

    def __init__(self, store: SqliteBase) -> None:
        super().__init__()
        self._store = store

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return sqlite3.Error

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        work = partial(
            _acquire, key=key, limit=limit, expiry=expiry, amount=amount, now=time.time()
        )
        return await self._store._in_writer(work, doing="take a rate-limit slot")

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        work = partial(_window, key=key, expiry=expiry, now=time.time())
        return await self._store._in_writer(work, doing="read a rate-limit window")

    async def clear(self, key: str) -> None:
        await self._store._in_writer(partial(_clear, key=key), doing="clear a rate limit")

    async def reset(self) -> int | None:
        return await self._store._in_writer(partial(_clear, key=None), doing="reset rate limits")

    async def check(self) -> bool:
        return self._store._writer is not None

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        raise NotImplementedError(_FIXED)

    async def get(self, key: str) -> int:
        raise NotImplementedError(_FIXED)

    async def get_expiry(self, key: str) -> float:
        raise NotImplementedError(_FIXED)
