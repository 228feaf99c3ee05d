"""Where a task keeps its concurrency and rate keys: its metadata.

A task's keys are computed once, at submit (see `_limiting`), and kept as
``metadata["concurrency_key"]`` and ``metadata["rate_key"]`` (as a batch's id is
kept as ``metadata["batch_id"]``), so every process sharing the store enforces
them from the stored task alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._record import TaskRecord

__all__ = ["CONCURRENCY_KEY", "RATE_KEY", "concurrency_key_of", "key_reason", "rate_key_of"]

CONCURRENCY_KEY = "concurrency_key"
RATE_KEY = "rate_key"


def _metadata_text(record: TaskRecord, name: str) -> str | None:
    metadata = record.metadata
    if not metadata:
        return None
    value = metadata.get(name)
    return value if isinstance(value, str) else None


def concurrency_key_of(record: TaskRecord) -> str | None:
    """The key a task's per-key concurrency counts it under, if any."""
    return _metadata_text(record, CONCURRENCY_KEY)


def key_reason(limit: int, key: str) -> str:
    """What a task held back by its key's concurrency shows as ``waiting_for`` (the
    Redis acquire script writes the same text)."""
    return f"concurrency {limit} per key '{key}'"


def rate_key_of(record: TaskRecord) -> str | None:
    """The key a task's rate counts it under, if any (else the type's own rate)."""
    return _metadata_text(record, RATE_KEY)
