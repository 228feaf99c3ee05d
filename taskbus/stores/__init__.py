"""Where tasks are kept: the `Store` protocol and its implementations.

`memory` (default) and `sqlite` are built in; `redis` needs the ``redis`` extra.
"""

from ._base import LiveRecordStore, Store, StoreStats, TaskQuery
from .memory import MemoryStore

__all__ = ["LiveRecordStore", "MemoryStore", "Store", "StoreStats", "TaskQuery", "open_store"]


def open_store(spec: Store | str | None) -> Store:
    """A store from an instance, a URL (``memory://``), or None (memory)."""
    if spec is None:
        return MemoryStore()
    if isinstance(spec, str):
        scheme = spec.split("://", 1)[0] if "://" in spec else spec
        if scheme == "memory":
            return MemoryStore()
        if scheme == "sqlite":
            from .sqlite import SqliteStore

            return SqliteStore.from_url(spec)
        if scheme in ("redis", "rediss", "unix"):
            try:
                from .redis import RedisStore
            except ImportError as exc:
                raise ValueError(
                    f"store {spec!r} needs the Redis client: pip install 'taskbus[redis]' ({exc})"
                ) from None
            return RedisStore.from_url(spec)
        raise ValueError(
            f"unsupported store {spec!r}: this version ships 'memory://', "
            "'sqlite:///path.db' and 'redis://host:6379/0'"
        )
    if isinstance(spec, Store):
        return spec
    raise TypeError(f"store must be a Store or a URL string, not {type(spec).__name__}")
