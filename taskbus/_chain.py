"""Chains: tasks that run one after the other, each submitted ``after`` the one before.

`ChainStep` is one step, typed by its handler's result: ``defn.step(input)``
checks the input against the definition's type, and `TaskBus.chain` gives back
handles typed step by step (up to four steps; more give ``TaskHandle[Any]``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ._errors import InvalidSubmission
from ._handle import TaskHandle

if TYPE_CHECKING:
    from ._dependencies import ParentFailurePolicy

__all__ = ["ChainStep", "submit_chain"]

OutT_co = TypeVar("OutT_co", covariant=True)


class ChainStep(Generic[OutT_co]):
    """One step of a chain: a task type and its input (``defn.step(input)``, or
    ``ChainStep("type", input)`` untyped)."""

    __slots__ = ("input", "task_type")

    def __init__(self, task_type: str, input: Any = None) -> None:
        self.task_type = task_type
        self.input = input

    def __repr__(self) -> str:
        return f"ChainStep({self.task_type!r}, {self.input!r})"


class _Submit(Protocol):
    def __call__(
        self,
        task_type: str,
        input: Any = None,
        *,
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
        after: Iterable[str | TaskHandle[Any]] | None = None,
        on_parent_failure: ParentFailurePolicy = "cancel",
    ) -> Coroutine[Any, Any, TaskHandle[Any]]: ...


async def submit_chain(
    submit: _Submit,
    check: Callable[[str, Any], object],
    steps: Iterable[ChainStep[Any] | tuple[str, Any]],
    *,
    after: Iterable[str | TaskHandle[Any]] | None,
    on_parent_failure: ParentFailurePolicy,
    priority: int | None,
    owner: str | None,
    metadata: dict[str, Any] | None,
) -> list[TaskHandle[Any]]:
    """Submit `steps` in order, each after the one before (the first after `after`).

    Every step's type and input are checked first (``check(task_type, input)``
    raises for a bad one): then nothing is stored. A step can still be refused as it is submitted (the bus stopping,
    say): the steps submitted before it stay.
    """
    items = [step if isinstance(step, ChainStep) else ChainStep(*step) for step in steps]
    if not items:
        raise InvalidSubmission("a chain needs at least one step")
    for step in items:
        check(step.task_type, step.input)
    handles: list[TaskHandle[Any]] = []
    previous = list(after) if after is not None else None
    for step in items:
        handle = await submit(
            step.task_type,
            step.input,
            priority=priority,
            owner=owner,
            metadata=metadata,
            after=previous,
            on_parent_failure=on_parent_failure,
        )
        handles.append(handle)
        previous = [handle]
    return handles
