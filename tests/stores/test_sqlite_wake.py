"""Wake-ups between processes that share a SQLite file (`_sqlite_wake`).

Two `SqliteStore` objects on one file stand for two processes: each follows the
log on its own. With polling slowed to a minute, an event committed by one
reaches the other within seconds only because of the wake-up.
"""

from __future__ import annotations

import shutil
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from taskbus._events import Event
from taskbus._record import new_task_id
from taskbus.stores import _sqlite_eventlog, _sqlite_wake
from taskbus.stores._sqlite_wake import WakeChannel
from taskbus.stores.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

WAIT = 5.0


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Sockets under this test's own temporary directory (short: Unix socket paths
    are limited to ~100 bytes)."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="tbw", dir="/tmp"))
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def slow_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sqlite_eventlog, "_POLL_MIN", 60.0)
    monkeypatch.setattr(_sqlite_eventlog, "_POLL_MAX", 60.0)


def sockets_of(store: SqliteStore) -> list[Path]:
    directory = store._wake_channel._directory
    return sorted(directory.glob("*.sock")) if directory.exists() else []


async def test_an_event_committed_by_one_process_wakes_the_others_follower(
    tmp_path: Path, slow_polls: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    bound = anyio.Event()
    drain = _sqlite_wake._remove_dead

    def watched(directory: Path) -> None:  # the socket binds right after, with no await
        drain(directory)
        bound.set()

    monkeypatch.setattr(_sqlite_wake, "_remove_dead", watched)
    path = tmp_path / "jobs.db"
    writer, follower = SqliteStore(path), SqliteStore(path)
    await writer.open()
    await follower.open()
    heard: list[str] = []
    arrived = anyio.Event()

    def deliver(event: Event) -> None:
        heard.append(event.name)
        arrived.set()

    follower.deliver_events(deliver)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower.follow)
            with anyio.fail_after(WAIT):
                await bound.wait()
            assert len(sockets_of(follower)) == 1
            writer.request_cancel(new_task_id(), "wake up")
            with anyio.fail_after(WAIT):  # polling alone would take a minute
                await arrived.wait()
            tg.cancel_scope.cancel()
        assert heard == ["cancel-requested"]
    finally:
        await writer.close()
        await follower.close()
    assert sockets_of(follower) == [], "a follower that stops removes its socket"
    assert not follower._wake_channel._directory.exists(), "and its directory, if last"


async def test_the_socket_of_a_process_that_is_gone_is_removed(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    channel = WakeChannel(path)
    directory = channel._directory
    directory.parent.mkdir(mode=0o700, exist_ok=True)
    directory.mkdir(mode=0o700)
    stale = directory / "999999-dead.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(stale))
    sock.close()  # bound, never unlinked: as after a SIGKILL
    assert stale.exists()
    channel.notify()
    channel.close()
    assert not stale.exists()


async def test_a_directory_other_users_may_write_to_is_not_used(
    tmp_path: Path, private_tmp: Path
) -> None:
    channel = WakeChannel(tmp_path / "jobs.db")
    shared = channel._directory.parent
    shared.mkdir()
    shared.chmod(0o777)
    woken: list[int] = []
    with anyio.fail_after(WAIT):
        await channel.listen(lambda: woken.append(1))  # returns: nothing to listen on
    assert not channel._directory.exists()
    assert stat.S_IMODE(shared.stat().st_mode) == 0o777
    channel.notify()  # and sending is off too: no error
    channel.close()


async def test_a_store_on_a_machine_without_wake_ups_still_polls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unavailable(*args: object, **kwargs: object) -> None:
        raise OSError("no Unix datagram sockets here")

    monkeypatch.setattr(_sqlite_wake, "_remove_dead", unavailable)
    path = tmp_path / "jobs.db"
    writer, follower = SqliteStore(path), SqliteStore(path)
    await writer.open()
    await follower.open()
    arrived = anyio.Event()
    follower.deliver_events(lambda event: arrived.set())
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(follower.follow)
            writer.request_cancel(new_task_id(), "polled")
            await writer.flush()
            with anyio.fail_after(WAIT):  # the 5-100 ms poll finds it
                await arrived.wait()
            tg.cancel_scope.cancel()
    finally:
        await writer.close()
        await follower.close()


async def test_a_new_follower_removes_the_sockets_of_killed_processes(tmp_path: Path) -> None:
    channel = WakeChannel(tmp_path / "jobs.db")
    directory = channel._directory
    directory.parent.mkdir(mode=0o700, exist_ok=True)
    directory.mkdir(mode=0o700)
    dead_pid = 2**22 + 12345  # above Linux's pid_max: never a running process
    stale = directory / f"{dead_pid}-0badc0de.sock"
    stale.touch()
    async with anyio.create_task_group() as tg:
        tg.start_soon(channel.listen, lambda: None)
        with anyio.fail_after(WAIT):
            while stale.exists():  # noqa: ASYNC110 - a file, no event to wait on
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()
    channel.close()
