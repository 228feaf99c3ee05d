"""`bus.background(...)`: answer inline when work is quick, with a task id when not."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import anyio
from pydantic import BaseModel, ConfigDict, Field

from ._handle import TaskHandle
from ._registry import TaskDefinition, TaskRegistry

__all__ = ["Queued", "Submit", "make_background"]


class Queued(BaseModel):
    """The answer of a wrapped call whose work did not finish within `inline_for`.

    The work goes on; follow it with `task_id` (events, `bus.get`, `bus.result`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Literal["queued"] = "queued"
    task_id: str = Field(description="Id of the task doing the work.")
    task_type: str


class Submit(Protocol):
    """How the wrapper submits its work (`TaskBus.submit`)."""

    def __call__(
        self,
        task_type: str,
        input: Any = None,
        *,
        priority: int | None = None,
        owner: str | None = None,
    ) -> Awaitable[TaskHandle[Any]]: ...


class _Call(BaseModel):
    """The arguments of a wrapped plain function, as a task's input."""

    positional: list[Any] = Field(default_factory=list)
    keywords: dict[str, Any] = Field(default_factory=dict)


def _register_function(registry: TaskRegistry, fn: Callable[..., Any]) -> TaskDefinition[Any, Any]:
    """The task type that runs `fn`: its own, never another function's of the same name.

    Lambdas and closures made by one factory share a qualified name; the second one
    gets ``-2`` appended, and so on.
    """
    base = f"background:{fn.__module__}.{fn.__qualname__}".replace("<", "").replace(">", "")
    name, n = base, 1
    while (existing := registry.find(name)) is not None:
        if getattr(existing.handler, "_taskbus_function", None) is fn:
            return existing
        n += 1
        name = f"{base}-{n}"
    if inspect.iscoroutinefunction(fn):

        async def run_async(call: _Call) -> Any:
            return await fn(*call.positional, **call.keywords)

        run_async._taskbus_function = fn  # type: ignore[attr-defined]
        return registry.register(name, run_async, description=fn.__doc__)

    def run_sync(call: _Call) -> Any:
        return fn(*call.positional, **call.keywords)

    run_sync._taskbus_function = fn  # type: ignore[attr-defined]
    return registry.register(name, run_sync, description=fn.__doc__)


def make_background(
    registry: TaskRegistry,
    submit: Submit,
    target: str | TaskDefinition[Any, Any] | Callable[..., Any],
    *,
    inline_for: float = 2.0,
    priority: int | None = None,
    owner: str | None = None,
) -> Callable[..., Awaitable[Any]]:
    """See `TaskBus.background`."""
    if inline_for < 0:
        raise ValueError(f"inline_for must be >= 0 seconds, not {inline_for}")
    if isinstance(target, str):
        definition = registry.get(target)
        takes_call = False
    elif isinstance(target, TaskDefinition):
        definition, takes_call = target, False
    elif callable(target):
        definition, takes_call = _register_function(registry, target), True
    else:
        raise TypeError(
            f"background() takes a task type, a definition or a function, not {target!r}"
        )
    name = definition.name

    async def call(*args: Any, **kwargs: Any) -> Any:
        if takes_call:
            payload: Any = _Call(positional=list(args), keywords=kwargs)
        elif kwargs or len(args) > 1:
            raise TypeError(f"{name} takes one input payload, got {args!r} {kwargs!r}")
        else:
            payload = args[0] if args else None
        handle = await submit(name, payload, priority=priority, owner=owner)
        if inline_for > 0:
            with anyio.move_on_after(inline_for):
                return await handle.result()
        return Queued(task_id=handle.id, task_type=name)

    call.__name__ = f"background({name})"
    call.__doc__ = definition.description
    return call
