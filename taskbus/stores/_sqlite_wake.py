"""Wake-ups between the processes that share a SQLite file, on the same machine.

SQLite has no notifications, so each process polls the events table (see
`SqliteEventLog.follow`). A process that commits events also sends a one-byte
datagram to every other process following the same file, which then reads the
log at once instead of at its next poll: a task submitted by `taskbus serve` is
claimed by a `taskbus worker` within a fraction of a millisecond, not after up
to 100 ms of idle polling.

Each following store binds a Unix datagram socket in a directory of its own
user, named after the database file (``$TMPDIR/taskbus-<uid>/<hash>/``); the
senders list that directory (at most every half second) and send without ever
blocking. A wake-up carries nothing: it only says "read the log". Where any of
this is impossible (no Unix sockets, another temporary directory, a path too
long), nothing breaks: the processes poll as before.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import anyio

__all__ = ["WakeChannel"]

logger = logging.getLogger("taskbus.stores.sqlite")

_REFRESH = 0.5  # seconds a listing of the peers is used before it is read again
_SUFFIX = ".sock"


def _directory(database: Path) -> Path:
    """Where the followers of `database` bind their sockets."""
    digest = hashlib.sha256(str(database.resolve()).encode("utf-8", "surrogatepass"))
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"taskbus-{uid}" / digest.hexdigest()[:20]


class WakeChannel:
    """Sends wake-ups to the other followers of one database file, and receives
    theirs while `listen` runs."""

    def __init__(self, database: Path) -> None:
        self._own: Path | None = None
        self._sender: socket.socket | None = None
        self._peers: list[str] = []
        self._listed_at = -_REFRESH
        self._broken = not hasattr(socket, "AF_UNIX")
        try:
            self._directory = _directory(database)
        except (OSError, RuntimeError) as exc:  # no temporary directory, a symlink loop
            logger.debug("no wake-ups between processes (%s): polling only", exc)
            self._directory = Path()
            self._broken = True

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` for the wake-ups other processes send, until cancelled
        (returns at once if this machine cannot receive them)."""
        if self._broken:
            return
        path = self._directory / f"{os.getpid()}-{secrets.token_hex(4)}{_SUFFIX}"
        receiver: socket.socket | None = None
        try:
            self._directory.parent.mkdir(mode=0o700, exist_ok=True)
            _check_private(self._directory.parent)
            self._directory.mkdir(mode=0o700, exist_ok=True)
            _remove_dead(self._directory)
            receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            receiver.setblocking(False)
            receiver.bind(str(path))
        except OSError as exc:
            if receiver is not None:
                receiver.close()
            logger.debug("no wake-ups between processes (%s): polling only", exc)
            self._broken = True
            return
        self._own = path
        try:
            while True:
                # `wait_readable`, not a socket stream: its receive can fail with
                # InvalidStateError when cancelled as a datagram arrives (anyio 4.16).
                await anyio.wait_readable(receiver)
                if _drain(receiver):
                    wake()
        finally:
            receiver.close()
            self._own = None
            _unlink(path)
            try:
                self._directory.rmdir()  # the last follower of the file leaves no trace
            except OSError:
                pass

    def notify(self) -> None:
        """Wake every other follower of the file (never blocks, never raises)."""
        if self._broken:
            return
        peers = self._listed_peers()
        if not peers:
            return
        sender = self._sender
        if sender is None:
            try:
                sender = self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                sender.setblocking(False)
            except OSError:
                self._broken = True
                return
        for peer in peers:
            try:
                sender.sendto(b"!", peer)
            except (ConnectionRefusedError, FileNotFoundError):
                _unlink(Path(peer))  # its process is gone (or its socket is)
                self._listed_at = -_REFRESH
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS):
                    logger.debug("wake-up to %s failed: %s", peer, exc)
                # A full queue already holds a wake-up for that process.

    def close(self) -> None:
        if self._sender is not None:
            self._sender.close()
            self._sender = None

    def _listed_peers(self) -> list[str]:
        now = time.monotonic()
        if now - self._listed_at >= _REFRESH:
            self._listed_at = now
            own = str(self._own) if self._own is not None else None
            try:
                with os.scandir(self._directory) as entries:
                    self._peers = [
                        entry.path
                        for entry in entries
                        if entry.name.endswith(_SUFFIX) and entry.path != own
                    ]
            except OSError:
                self._peers = []
        return self._peers


def _drain(receiver: socket.socket) -> bool:
    """Read every wake-up waiting; whether there was any."""
    woken = False
    while True:
        try:
            receiver.recv(16)
        except (BlockingIOError, InterruptedError):
            return woken
        except OSError:  # an error queued on the socket: it still says "read"
            return True
        woken = True


def _check_private(directory: Path) -> None:
    """Refuse a directory another user owns or may write to (they could plant
    sockets there); raises OSError."""
    status = directory.stat()
    if hasattr(os, "getuid") and status.st_uid != os.getuid():
        raise OSError(f"{directory} belongs to another user")
    if status.st_mode & 0o022:
        raise OSError(f"{directory} is writable by other users")


def _remove_dead(directory: Path) -> None:
    """Remove the sockets of processes of this machine that are gone (killed)."""
    for entry in directory.glob(f"*{_SUFFIX}"):
        pid_text = entry.name.split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        try:
            os.kill(int(pid_text), 0)
        except ProcessLookupError:
            _unlink(entry)
        except (OSError, OverflowError):  # it runs as another user; or no such pid
            continue


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
