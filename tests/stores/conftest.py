"""Store fixtures: `make_store` opens any store, `make_durable_store` a durable one.

Both are factories: ``store = await make_store()`` opens a store and returns it,
and calling the factory again opens a *new* store object on the same backing
location (the same file for SQLite), so a test can close a store and reopen
it. Memory has no backing location: a new call gives an empty store. Teardown
closes every store the factory opened (closing twice is allowed).

A new store joins the suite by adding one entry to `STORES` (and to `DURABLE`
if it survives a reopen); the tests do not change.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from taskbus.stores import MemoryStore, Store
from taskbus.stores.sqlite import SqliteStore

StoreFactory = Callable[[], Awaitable[Store]]
StoreBuilder = Callable[[Path], Store]


def _memory(tmp_path: Path) -> Store:
    return MemoryStore()


def _sqlite(tmp_path: Path) -> Store:
    return SqliteStore(tmp_path / "store.db")


def _fake(tmp_path: Path) -> Store:
    from ._fake import ValueStore

    return ValueStore()


def _redis(tmp_path: Path) -> Store:
    from _redis import redis_store

    return redis_store(tmp_path)


#: Every store, by the id its tests carry (the fake: value semantics, as Redis).
STORES: dict[str, StoreBuilder] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "fake": _fake,
    "redis": _redis,
}
#: The stores whose records survive a close and reopen.
DURABLE: dict[str, StoreBuilder] = {"sqlite": _sqlite, "redis": _redis}


class StoreOpener:
    """Opens stores of one kind on one location, and remembers them to close them."""

    def __init__(self, build: StoreBuilder, tmp_path: Path) -> None:
        self._build = build
        self._tmp_path = tmp_path
        self.opened: list[Store] = []

    async def __call__(self) -> Store:
        store = self._build(self._tmp_path)
        await store.open()
        self.opened.append(store)
        return store

    async def close_all(self) -> None:
        for store in reversed(self.opened):
            await store.close()


@pytest.fixture(params=list(STORES), ids=list(STORES))
async def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[StoreFactory]:
    """Open a store of each kind (``await make_store()``); closed at teardown."""
    opener = StoreOpener(STORES[request.param], tmp_path)
    try:
        yield opener
    finally:
        await opener.close_all()


@pytest.fixture(params=list(DURABLE), ids=list(DURABLE))
async def make_durable_store(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[StoreFactory]:
    """Like `make_store`, over the durable stores only: reopening keeps the records."""
    opener = StoreOpener(DURABLE[request.param], tmp_path)
    try:
        yield opener
    finally:
        await opener.close_all()
