"""Turning what a caller submits into task records, every argument checked first."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ._dependencies import check_reserved
from ._errors import InvalidSubmission
from ._record import TaskRecord, new_task_id
from ._validation import check_metadata, check_priority, check_text

if TYPE_CHECKING:
    from ._registry import TaskDefinition, TaskRegistry

__all__ = ["prepare_batch"]


def prepare_batch(
    registry: TaskRegistry,
    items: Iterable[tuple[str, Any]],
    *,
    now: float,
    priority: int | None,
    owner: str | None,
    metadata: dict[str, Any] | None,
) -> list[tuple[TaskRecord, TaskDefinition[Any, Any]]]:
    """Records for a batch's ``(task_type, input)`` items; raises on the first bad one,
    before anything is stored."""
    if owner is not None:
        check_text(owner, "owner")
    if priority is not None:
        priority = check_priority(priority)
    if metadata is not None:
        metadata = check_metadata(metadata)
        check_reserved(metadata)
    prepared: list[tuple[TaskRecord, TaskDefinition[Any, Any]]] = []
    for task_type, payload in items:
        definition = registry.get(task_type)
        value = definition.validate_input(payload)
        meta = dict(metadata) if metadata else None
        if definition.keyed:
            meta = {**(meta or {}), **definition.task_keys(owner, value)} or None
        record = TaskRecord(
            new_task_id(),
            task_type,
            value,
            definition.default_priority if priority is None else priority,
            now,
            definition.max_attempts,
            owner,
            meta,
        )
        prepared.append((record, definition))
    if not prepared:
        raise InvalidSubmission("a batch needs at least one task")
    return prepared
