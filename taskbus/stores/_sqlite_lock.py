"""The SQLite store's one-process lock, taken on the database file's identity.

Two locks through filelock (``flock`` on POSIX, ``LockFileEx`` on Windows), both
held while the store is open:

1. ``<name>.lock`` beside the file the path resolves to (symlinks followed): a
   path or symlink that leads to the file meets it, and so does any process that
   can open the database, whatever its temporary directory;
2. ``<device>-<inode>.lock`` in a private directory under the temporary
   directory (``taskbus-locks-<uid>``), named after the file itself: a hard
   link (another name for the same file, in any directory) meets it too. A file
   that does not exist yet is created first (empty: SQLite takes it as a new
   database) so that it has an identity.

Lock 2 is per user and per temporary directory: a hard link opened by another
user, or by a service with a private /tmp, is not seen (lock 1 still guards the
same path and symlinks). SQLite itself warns against opening one database
through two names: it names the -wal and -shm files after the path.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile
from pathlib import Path

import filelock

from .._errors import StoreError

__all__ = ["FileIdentityLock"]

logger = logging.getLogger("taskbus.stores.sqlite")


class FileIdentityLock:
    """Both locks of one database file; `acquire` raises `StoreError` when in use."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._held: list[filelock.BaseFileLock] = []
        self._created: Path | None = None

    def acquire(self) -> None:
        try:
            real = self.path.resolve()
        except (OSError, RuntimeError) as exc:  # a symlink loop
            raise StoreError(
                f"SQLite store {str(self.path)!r}: cannot resolve its path: {exc}"
            ) from exc
        beside = real.with_name(real.name + ".lock")
        created = not beside.exists()
        try:
            self._take(beside, "")
            if created:
                self._created = beside
            identity = self._identity_lock(real)
            if identity is not None:
                self._take(identity, f" (the same file as another path: {str(real)!r})")
        except BaseException:
            self.release(forget=created)
            raise

    def release(self, *, forget: bool = False) -> None:
        """Let go of both locks; with `forget`, remove the lock file beside the
        database if this lock created it (an open that failed leaves no trace)."""
        while self._held:
            self._held.pop().release(force=True)
        if forget and self._created is not None:
            self._created.unlink(missing_ok=True)
        self._created = None

    def _take(self, lock_path: Path, hint: str) -> None:
        lock = filelock.FileLock(
            lock_path, thread_local=False, blocking=False, fallback_to_soft=False
        )
        try:
            lock_path.touch(exist_ok=True)  # filelock would make missing directories
            lock.acquire()
        except filelock.Timeout:
            raise StoreError(
                f"SQLite store {str(self.path)!r} is in use by another open store (in this "
                f"or another process){hint}; one per file (use the Redis store to share work)"
            ) from None
        except OSError as exc:
            raise StoreError(
                f"SQLite store {str(self.path)!r}: cannot create its lock file: {exc}"
            ) from exc
        self._held.append(lock)

    def _identity_lock(self, real: Path) -> Path | None:
        try:
            try:
                info = real.stat()
            except FileNotFoundError:
                _create_empty(real)
                info = real.stat()
        except OSError as exc:
            raise StoreError(f"SQLite store {str(self.path)!r}: cannot open: {exc}") from exc
        if not info.st_ino:  # a file system without file ids
            return None
        directory = _lock_directory()
        if directory is None:
            return None
        return directory / f"{info.st_dev:x}-{info.st_ino:x}.lock"


def _create_empty(path: Path) -> None:
    # O_EXCL: only a file made here is opened (and closed) here; closing a descriptor
    # of a database another connection of this process uses would drop its locks.
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    os.close(fd)


def _lock_directory() -> Path | None:
    """This user's directory for identity locks, or None if it cannot be trusted."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    directory = Path(tempfile.gettempdir()) / (
        "taskbus-locks" if uid is None else f"taskbus-locks-{uid}"
    )
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        info = directory.lstat()
    except OSError as exc:
        logger.warning(
            "SQLite store locks: cannot use %s (%s); hard links go unseen", directory, exc
        )
        return None
    if not stat.S_ISDIR(info.st_mode) or (uid is not None and info.st_uid != uid):
        logger.warning(
            "SQLite store locks: %s is not a directory of this user; hard links go unseen",
            directory,
        )
        return None
    return directory
