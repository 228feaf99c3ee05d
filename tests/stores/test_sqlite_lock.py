"""The SQLite store's one-process lock holds for the file, not for the path:
a symlink or a hard link to an open store's file is refused, in this process
and in another one; and the store imports where `fcntl` does not exist."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from taskbus import StoreError
from taskbus.stores.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

IN_USE = "is in use by another open store"

#: Opens the store at argv[1] in a fresh process and says what happened.
OPEN_IN_CHILD = """
import sys, anyio
from taskbus import StoreError
from taskbus.stores.sqlite import SqliteStore

async def main(path):
    store = SqliteStore(path)
    try:
        await store.open()
    except StoreError as exc:
        print("refused:", exc)
        return
    await store.close()
    print("opened")

anyio.run(main, sys.argv[1])
"""


async def open_in_another_process(path: Path) -> str:
    result = await anyio.run_process([sys.executable, "-c", OPEN_IN_CHILD, str(path)], check=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip()


@pytest.fixture
def real(tmp_path: Path) -> Path:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    return tmp_path / "a" / "jobs.db"


def symlink_to(real: Path) -> Path:
    link = real.parent.parent / "b" / "link.db"
    link.symlink_to(real)
    return link


def hard_link_to(real: Path) -> Path:
    link = real.parent.parent / "b" / "hard.db"
    os.link(real, link)
    return link


@pytest.mark.parametrize("make_link", [symlink_to, hard_link_to], ids=["symlink", "hard-link"])
async def test_another_process_cannot_open_the_same_file_through_a_link(
    real: Path, make_link: Callable[[Path], Path]
) -> None:
    store = SqliteStore(real)
    await store.open()
    try:
        link = make_link(real)
        answer = await open_in_another_process(link)
        assert answer.startswith("refused:") and IN_USE in answer, answer
        assert (await open_in_another_process(real)).startswith("refused:")
    finally:
        await store.close()
    assert await open_in_another_process(link) == "opened", "free once the first one closed"


@pytest.mark.parametrize("make_link", [symlink_to, hard_link_to], ids=["symlink", "hard-link"])
async def test_this_process_cannot_open_the_same_file_twice_through_a_link(
    real: Path, make_link: Callable[[Path], Path]
) -> None:
    first = SqliteStore(real)
    await first.open()
    try:
        link = make_link(real)
        for path in (link, real):
            with pytest.raises(StoreError, match=IN_USE):
                await SqliteStore(path).open()
    finally:
        await first.close()
    again = SqliteStore(link)
    await again.open()
    await again.close()


async def test_a_hard_link_opened_first_refuses_the_original_path(real: Path) -> None:
    store = SqliteStore(real)
    await store.open()
    await store.close()  # the file exists now
    link = hard_link_to(real)
    store = SqliteStore(link)
    await store.open()
    try:
        answer = await open_in_another_process(real)
        assert IN_USE in answer, answer
    finally:
        await store.close()


async def test_a_new_file_is_created_and_locked(real: Path) -> None:
    assert not await anyio.Path(real).exists()
    store = SqliteStore(real)
    await store.open()
    try:
        assert await anyio.Path(real).is_file()
        assert IN_USE in await open_in_another_process(real)
    finally:
        await store.close()


def test_the_sqlite_store_imports_where_fcntl_does_not_exist() -> None:
    # As on Windows: no fcntl module at all.
    script = (
        "import sys, warnings; sys.modules['fcntl'] = None; "
        "warnings.simplefilter('ignore'); import taskbus.stores.sqlite"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
