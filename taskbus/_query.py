"""The checked `TaskQuery` behind `TaskBus.list`."""

from __future__ import annotations

from datetime import datetime

from pydantic import ValidationError

from ._errors import InvalidSubmission
from ._states import TaskState
from ._validation import check_text, to_epoch
from .stores import TaskQuery

__all__ = ["task_query"]


def task_query(
    *,
    state: TaskState | str | None,
    owner: str | None,
    type_prefix: str | None,
    created_after: datetime | float | None,
    created_before: datetime | float | None,
    limit: int,
    offset: int,
    newest_first: bool = False,
    dead_letter: bool = False,
) -> TaskQuery:
    """A store query for these filters (`created_*`: datetime or epoch); raises
    `InvalidSubmission` for a bad one."""
    if owner is not None:
        check_text(owner, "owner")
    if type_prefix is not None:
        check_text(type_prefix, "type_prefix")
    try:
        return TaskQuery(
            state=state,
            owner=owner,
            type_prefix=type_prefix,
            created_after=to_epoch(created_after),
            created_before=to_epoch(created_before),
            limit=limit,
            offset=offset,
            newest_first=newest_first,
            dead_letter=dead_letter,
        )
    except ValidationError as exc:
        raise InvalidSubmission(f"invalid list query: {exc}") from None
