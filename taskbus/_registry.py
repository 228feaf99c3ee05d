"""Task types: `TaskDefinition` (one type) and `TaskRegistry` (all of them)."""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

import tenacity
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from ._chain import ChainStep
from ._compact import packer_for
from ._errors import DuplicateTaskType, InvalidTaskDefinition, InvalidTaskInput, UnknownTaskType
from ._limiting import KeySource, describe_rate, parse_rate, task_keys
from ._retry import RetryPolicy

if TYPE_CHECKING:
    from ._context import TaskContext
    from ._dependencies import ParentFailurePolicy
    from ._handle import TaskHandle
    from ._process_context import ProcessContext

__all__ = [
    "RegistryScope",
    "RunIn",
    "TaskDefinition",
    "TaskOptions",
    "TaskRegistry",
    "TaskSubmitter",
]

InT = TypeVar("InT")
OutT = TypeVar("OutT")
RunIn = Literal["loop", "thread", "process"]

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+(:[A-Za-z0-9_.\-]+)*$")
_CONTEXT_NAMES = frozenset({"ctx", "context"})


class TaskOptions(BaseModel):
    """How a task type runs. Validated once, at registration."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    timeout: float | None = Field(default=None, gt=0, description="Seconds per attempt.")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    concurrency: int | None = Field(default=None, ge=1, description="Running at once, at most.")
    priority: int = Field(default=5, ge=1, le=10, description="Default priority, 10 = urgent.")
    description: str | None = None
    estimated_duration: float | None = Field(default=None, ge=0, description="Seconds.")
    run_in: RunIn | None = Field(
        default=None, description="loop (async def), thread (def) or process; None: by kind."
    )
    retry_on: tuple[type[BaseException], ...] = ()
    fatal_on: tuple[type[BaseException], ...] = ()
    key_ttl: float = Field(
        default=0,
        ge=0,
        description="Seconds after completion during which the same idempotency key "
        "still returns the completed task (0: only while queued or running).",
    )
    on_interrupt: Literal["retry", "fail"] = Field(
        default="retry",
        description="A task found running after a crash: queue it again (attempts "
        "permitting) or fail it as interrupted.",
    )
    rate: str | None = Field(
        default=None,
        description="Starts per window, at most, across every process on the store, in "
        "the limits notation: '100/minute', '10 per 2 seconds' (needs taskbus[ratelimit]). "
        "Per key with rate_key.",
    )
    rate_key: KeySource | None = Field(
        default=None,
        description="Apply `rate` per key: 'owner', or a function of the validated input "
        "returning the key (None: the task counts against the type's own rate).",
    )
    concurrency_key: KeySource | None = Field(
        default=None,
        description="Limit running tasks per key: 'owner', or a function of the validated "
        "input returning the key (None: not limited per key). See key_concurrency.",
    )
    key_concurrency: int | None = Field(
        default=None,
        ge=1,
        description="Running at once per concurrency_key, at most (default 1 with a "
        "concurrency_key); `concurrency` still bounds the whole type.",
    )

    @model_validator(mode="after")
    def _check_limits(self) -> TaskOptions:
        if self.rate is not None:
            parse_rate(self.rate)
        elif self.rate_key is not None:
            raise ValueError("rate_key needs a rate (e.g. rate='10/minute')")
        if self.key_concurrency is not None and self.concurrency_key is None:
            raise ValueError("key_concurrency needs a concurrency_key ('owner' or a function)")
        for name in ("rate_key", "concurrency_key"):
            source = getattr(self, name)
            if source is not None and source != "owner" and not callable(source):
                raise ValueError(f"{name} is 'owner' or a function of the input, not {source!r}")
        return self

    @property
    def key_limit(self) -> int | None:
        """Running at once per concurrency key (None: no per-key limit)."""
        if self.concurrency_key is None:
            return None
        return self.key_concurrency if self.key_concurrency is not None else 1


class TaskSubmitter(typing.Protocol):
    """What a definition needs from the bus to submit itself."""

    def submit(
        self,
        task_type: str,
        input: Any = None,
        *,
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
        delay: float | None = None,
        key: str | None = None,
        run_at: datetime | None = None,
        after: Iterable[str | TaskHandle[Any]] | None = None,
        on_parent_failure: ParentFailurePolicy = "cancel",
    ) -> Coroutine[Any, Any, TaskHandle[Any]]: ...

    async def retire_types(self, names: list[str], *, reason: str, cancel_running: bool) -> None:
        """Settle the tasks of types just removed from the registry."""
        ...


class TaskDefinition(Generic[InT, OutT]):
    """One registered task type: its handler, options, and input/output models.

    `@bus.task(...)` returns one; `await definition.submit(input)` gives a
    `TaskHandle[OutT]` so the result type reaches the caller's type checker.
    """

    def __init__(
        self,
        name: str,
        handler: Callable[..., Any],
        options: TaskOptions,
        registry: TaskRegistry | None = None,
    ) -> None:
        if not _NAME.match(name):
            raise InvalidTaskDefinition(
                f"invalid task type name {name!r}: use letters, digits, '_', '.', '-', "
                "with ':' between namespace parts"
            )
        self.name = name
        self.handler = handler
        self.options = options
        self._registry = registry
        self.is_async = inspect.iscoroutinefunction(handler)
        self.run_in: RunIn = options.run_in or ("loop" if self.is_async else "thread")
        self.takes_context, input_type, output_type = _inspect_handler(name, handler)
        self._context_type = _context_annotation(handler) if self.takes_context else None
        self.takes_input = input_type is not _NO_INPUT
        self.context_only = self.takes_context and not self.takes_input
        self.on_loop_with_context_only = self.context_only and self.run_in == "loop"
        self.input_adapter: TypeAdapter[Any] = TypeAdapter(input_type if self.takes_input else None)
        #: Holds a simple model input compactly while its task is queued (or None).
        self.input_packer = packer_for(input_type) if self.takes_input else None
        #: The one fields-set shared by validated inputs with every field set (or None);
        #: for a packable type, the packer's, which marks the inputs it may pack.
        self.shared_fields_set = (
            None
            if not self.takes_input
            else self.input_packer.fields_set
            if self.input_packer is not None
            else _shareable_fields_set(input_type)
        )
        self.output_adapter: TypeAdapter[Any] = TypeAdapter(output_type)
        #: Whether results are checked against the return annotation (not for Any).
        self.checks_output = output_type not in (Any, None, type(None))
        self._check_run_in()
        self.timeout = options.timeout
        self.default_priority = options.priority
        self.max_attempts = options.retry.max_attempts
        self.retrying: tenacity.Retrying = options.retry.build(
            retry_on=options.retry_on, fatal_on=options.fatal_on
        )
        #: The parsed `rate` (a `limits.RateLimitItem`), or None.
        self.rate_item = None if options.rate is None else parse_rate(options.rate)
        #: Per-key limits and rates need keys computed at submit.
        self.keyed = options.concurrency_key is not None or options.rate_key is not None

    def _check_run_in(self) -> None:
        if self.run_in == "loop" and not self.is_async:
            raise InvalidTaskDefinition(f"{self.name}: run_in='loop' needs an async def handler")
        if self.run_in in ("thread", "process") and self.is_async:
            raise InvalidTaskDefinition(
                f"{self.name}: run_in={self.run_in!r} needs a plain def handler"
            )
        from ._context import TaskContext
        from ._process_context import ProcessContext

        if self.run_in == "process" and self._context_type is TaskContext:
            raise InvalidTaskDefinition(
                f"{self.name}: a process handler gets a ProcessContext, not a TaskContext: "
                "annotate its first parameter as ProcessContext"
            )
        if self.run_in != "process" and self._context_type is ProcessContext:
            raise InvalidTaskDefinition(
                f"{self.name}: a ProcessContext is for run_in='process' handlers; "
                "this one gets a TaskContext"
            )

    def __repr__(self) -> str:
        return f"<TaskDefinition {self.name} run_in={self.run_in}>"

    @property
    def concurrency(self) -> int | None:
        return self.options.concurrency

    @property
    def priority(self) -> int:
        return self.options.priority

    @property
    def key_limit(self) -> int | None:
        """Running at once per concurrency key, at most (None: no per-key limit)."""
        return self.options.key_limit

    def rate_text(self) -> str | None:
        """The type's rate as people write it ("100/minute"), or None."""
        return None if self.rate_item is None else describe_rate(self.rate_item)

    def task_keys(self, owner: str | None, value: Any) -> dict[str, str]:
        """The metadata entries naming a new task's concurrency and rate keys."""
        options = self.options
        return task_keys(options.concurrency_key, options.rate_key, owner, value)

    @property
    def retry(self) -> RetryPolicy:
        return self.options.retry

    @property
    def description(self) -> str | None:
        return self.options.description

    @property
    def estimated_duration(self) -> float | None:
        return self.options.estimated_duration

    def validate_input(self, payload: Any) -> Any:
        """Validate a payload against the input model; raises `InvalidTaskInput`."""
        if payload is None and not self.takes_input:
            return None
        try:
            # The core validator: `TypeAdapter.validate_python` only forwards to it, at the
            # cost of a Python call with eight keywords.
            value = self.input_adapter.validator.validate_python(payload)
        except ValidationError as exc:
            raise InvalidTaskInput.from_validation_error(self.name, exc) from None
        shared = self.shared_fields_set
        if shared is not None and value is not payload and value.__pydantic_fields_set__ == shared:
            _set_fields_set(value, shared)
        return value

    def validate_output(self, value: Any) -> Any:
        """Check a handler's return value against its annotation (pydantic)."""
        if not self.checks_output:
            return value
        return self.output_adapter.validate_python(value)

    def input_schema(self) -> dict[str, Any]:
        """JSON schema of the input."""
        return self.input_adapter.json_schema()

    def submit(
        self,
        input: InT | None = None,
        *,
        priority: int | None = None,
        owner: str | None = None,
        metadata: dict[str, Any] | None = None,
        delay: float | None = None,
        key: str | None = None,
        run_at: datetime | None = None,
        after: Iterable[str | TaskHandle[Any]] | None = None,
        on_parent_failure: ParentFailurePolicy = "cancel",
    ) -> Coroutine[Any, Any, TaskHandle[OutT]]:
        """Submit one task of this type to the bus it is registered on (await it);
        with `after`, it waits for those tasks (fan-in; see `TaskBus.submit`)."""
        submitter = self._registry.submitter if self._registry is not None else None
        if submitter is None:
            raise InvalidTaskDefinition(f"{self.name} is not registered on a TaskBus")
        # The bus's own coroutine, handed back as is: one coroutine per submit.
        return submitter.submit(
            self.name,
            input,
            priority=priority,
            owner=owner,
            metadata=metadata,
            delay=delay,
            key=key,
            run_at=run_at,
            after=after,
            on_parent_failure=on_parent_failure,
        )

    def step(self, input: InT | None = None) -> ChainStep[OutT]:
        """A step of a chain (`TaskBus.chain`): this type with `input`, its handle
        typed by this handler's result."""
        return ChainStep(self.name, input)


class _NoInput:
    pass


_NO_INPUT: Any = _NoInput


#: Stores a model instance's fields-set: the slot's own setter, no attribute lookup.
_set_fields_set: Callable[[Any, set[str]], None] = BaseModel.__dict__[
    "__pydantic_fields_set__"
].__set__


def _shareable_fields_set(input_type: Any) -> set[str] | None:
    """The set of all field names of a model input type, for its instances to share.

    pydantic gives every instance its own ``__pydantic_fields_set__`` (~216 bytes),
    and 100,000 queued tasks hold 100,000 equal sets. pydantic itself only ever
    adds names to it: a field's name on assignment (validated or not), already in
    a full set, or, for ``extra="allow"`` models only, an extra attribute's name;
    copies (``model_copy``, ``copy``, pickling) get sets of their own. So instances
    that a validation created, with every field set, share one set per type, except
    for ``extra="allow"`` models. Code that mutates ``model_fields_set`` in place
    would change it for all of them.
    """
    if not isinstance(input_type, type) or not issubclass(input_type, BaseModel):
        return None
    if input_type.model_config.get("extra") == "allow":
        return None
    return set(input_type.model_fields)


def _inspect_handler(name: str, handler: Callable[..., Any]) -> tuple[bool, Any, Any]:
    """(takes a context?, input type or _NO_INPUT, output type) from the signature."""
    from ._context import TaskContext
    from ._process_context import ProcessContext

    if not callable(handler):
        raise InvalidTaskDefinition(f"{name}: handler {handler!r} is not callable")
    try:
        hints = typing.get_type_hints(handler)
    except (NameError, TypeError) as exc:
        raise InvalidTaskDefinition(
            f"{name}: cannot resolve the handler's annotations: {exc}"
        ) from exc
    params = list(inspect.signature(handler).parameters.values())
    for param in params:
        if param.kind not in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            raise InvalidTaskDefinition(
                f"{name}: handler parameters must be positional, got {param.name!r}"
            )
    takes_context = bool(params) and (
        hints.get(params[0].name) in (TaskContext, ProcessContext)
        or params[0].name in _CONTEXT_NAMES
    )
    rest = params[1:] if takes_context else params
    if len(rest) > 1:
        raise InvalidTaskDefinition(
            f"{name}: a handler takes (ctx, input), (ctx), (input) or (); "
            f"got {[p.name for p in params]}"
        )
    input_type = hints.get(rest[0].name, Any) if rest else _NO_INPUT
    return takes_context, input_type, hints.get("return", Any)


def _context_annotation(handler: Callable[..., Any]) -> Any:
    """The annotation of the handler's first parameter (None without one)."""
    params = list(inspect.signature(handler).parameters.values())
    return typing.get_type_hints(handler).get(params[0].name) if params else None


class TaskRegistry:
    """The registered task types of one bus, by name."""

    def __init__(self) -> None:
        self._definitions: dict[str, TaskDefinition[Any, Any]] = {}
        self._watchers: list[Callable[[str, TaskDefinition[Any, Any] | None], None]] = []
        self.submitter: TaskSubmitter | None = None

    def __contains__(self, name: object) -> bool:
        return name in self._definitions

    def __len__(self) -> int:
        return len(self._definitions)

    def types(self) -> list[str]:
        """Registered type names, sorted."""
        return sorted(self._definitions)

    def definitions(self) -> list[TaskDefinition[Any, Any]]:
        return [self._definitions[name] for name in self.types()]

    def find(self, name: str) -> TaskDefinition[Any, Any] | None:
        """The definition named `name`, or None."""
        return self._definitions.get(name)

    def get(self, name: str) -> TaskDefinition[Any, Any]:
        """The definition named `name`; raises `UnknownTaskType`."""
        try:
            return self._definitions[name]
        except (KeyError, TypeError):
            raise UnknownTaskType(name, list(self._definitions)) from None

    def watch(self, callback: Callable[[str, TaskDefinition[Any, Any] | None], None]) -> None:
        """Call `callback(name, definition)` on register, `(name, None)` on unregister."""
        self._watchers.append(callback)

    def add(self, definition: TaskDefinition[Any, Any]) -> None:
        """Register a built definition; raises `DuplicateTaskType`."""
        if definition.name in self._definitions:
            raise DuplicateTaskType(definition.name)
        definition._registry = self
        self._definitions[definition.name] = definition
        for watcher in self._watchers:
            watcher(definition.name, definition)

    def register(
        self, name: str, handler: Callable[..., Any], **options: Any
    ) -> TaskDefinition[Any, Any]:
        """Register `handler` under `name` with `TaskOptions` given as keywords."""
        definition: TaskDefinition[Any, Any] = TaskDefinition(
            name, handler, _options(name, options), self
        )
        self.add(definition)
        return definition

    def unregister(self, name: str) -> TaskDefinition[Any, Any]:
        """Remove a type; raises `UnknownTaskType`. Queued tasks of it fail when picked."""
        definition = self.get(name)
        del self._definitions[name]
        for watcher in self._watchers:
            watcher(name, None)
        return definition

    def task(self, name: str, **options: Any) -> _Decorator:
        """Decorator form of `register`: ``@registry.task("reports:build", timeout=30)``."""
        return _Decorator(self, name, options)

    def scope(self, namespace: str) -> RegistryScope:
        """A plugin's view: registers ``namespace:name`` types and removes only those."""
        return RegistryScope(self, namespace)


def _options(name: str, options: dict[str, Any]) -> TaskOptions:
    try:
        return TaskOptions(**options)
    except ValidationError as exc:
        raise InvalidTaskDefinition(f"invalid options for task type {name!r}: {exc}") from None


class _Decorator:
    """Turns a handler into a typed `TaskDefinition` (see `TaskRegistry.task`)."""

    def __init__(self, registry: TaskRegistry, name: str, options: dict[str, Any]) -> None:
        self._registry = registry
        self._name = name
        self._options = _options(name, options)
        #: Told the full name once the definition is registered (used by scopes).
        self.on_registered: Callable[[str], None] | None = None

    @overload
    def __call__(
        self, handler: Callable[[TaskContext, InT], Awaitable[OutT]]
    ) -> TaskDefinition[InT, OutT]: ...
    @overload
    def __call__(
        self, handler: Callable[[TaskContext], Awaitable[OutT]]
    ) -> TaskDefinition[None, OutT]: ...
    @overload
    def __call__(
        self, handler: Callable[[TaskContext, InT], OutT]
    ) -> TaskDefinition[InT, OutT]: ...
    @overload
    def __call__(self, handler: Callable[[TaskContext], OutT]) -> TaskDefinition[None, OutT]: ...
    @overload
    def __call__(
        self, handler: Callable[[ProcessContext, InT], OutT]
    ) -> TaskDefinition[InT, OutT]: ...
    @overload
    def __call__(self, handler: Callable[[ProcessContext], OutT]) -> TaskDefinition[None, OutT]: ...
    @overload
    def __call__(self, handler: Callable[[InT], OutT]) -> TaskDefinition[InT, OutT]: ...
    @overload
    def __call__(self, handler: Callable[[], OutT]) -> TaskDefinition[None, OutT]: ...
    def __call__(self, handler: Callable[..., Any]) -> TaskDefinition[Any, Any]:
        definition: TaskDefinition[Any, Any] = TaskDefinition(
            self._name, handler, self._options, self._registry
        )
        self._registry.add(definition)
        if self.on_registered is not None:
            self.on_registered(definition.name)
        return definition


_NAMESPACE = re.compile(r"^[A-Za-z0-9_.\-]+$")


class RegistryScope:
    """Registers task types as ``<namespace>:<name>`` and removes only those.

    ``scope = bus.registry.scope("site-builder")``; ``@scope.task("site-build")``
    registers ``site-builder:site-build``; ``await scope.close()`` removes every
    type the scope registered: queued tasks of them fail at once with a clear
    error, running ones finish (or are cancelled with ``cancel_running=True``).
    Names given to a scope are relative: it cannot reach another namespace.
    """

    def __init__(self, registry: TaskRegistry, namespace: str) -> None:
        if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
            raise InvalidTaskDefinition(
                f"invalid namespace {namespace!r}: use letters, digits, '_', '.', '-'"
            )
        self.registry = registry
        self.namespace = namespace
        self._names: list[str] = []
        self.closed = False

    def __repr__(self) -> str:
        return f"<RegistryScope {self.namespace} types={len(self._names)}>"

    def full_name(self, name: str) -> str:
        """``namespace:name``; raises for names that try to leave the namespace."""
        if not isinstance(name, str) or not name or ":" in name:
            raise InvalidTaskDefinition(
                f"scope {self.namespace!r} takes plain names like 'site-build', not {name!r}"
            )
        return f"{self.namespace}:{name}"

    def _check_open(self) -> None:
        if self.closed:
            raise InvalidTaskDefinition(f"scope {self.namespace!r} is closed")

    def task(self, name: str, **options: Any) -> _Decorator:
        """``@scope.task("site-build", timeout=60)``: same options as `TaskBus.task`."""
        self._check_open()
        decorator = self.registry.task(self.full_name(name), **options)
        decorator.on_registered = self._names.append
        return decorator

    def register(
        self, name: str, handler: Callable[..., Any], **options: Any
    ) -> TaskDefinition[Any, Any]:
        self._check_open()
        definition = self.registry.register(self.full_name(name), handler, **options)
        self._names.append(definition.name)
        return definition

    def types(self) -> list[str]:
        """Full names of the types this scope registered and has not removed."""
        return sorted(self._names)

    def get(self, name: str) -> TaskDefinition[Any, Any]:
        full = self.full_name(name)
        if full not in self._names:
            raise UnknownTaskType(full, self.types())
        return self.registry.get(full)

    async def unregister(self, name: str, *, cancel_running: bool = False) -> None:
        """Remove one of this scope's types (see the class docstring for its tasks)."""
        full = self.full_name(name)
        if full not in self._names:
            raise UnknownTaskType(full, self.types())
        await self._retire([full], cancel_running)

    async def close(self, *, cancel_running: bool = False) -> None:
        """Remove every type this scope registered; idempotent."""
        if not self.closed:
            self.closed = True
            await self._retire(list(self._names), cancel_running)

    async def _retire(self, names: list[str], cancel_running: bool) -> None:
        for name in names:
            self.registry.unregister(name)
            self._names.remove(name)
        submitter = self.registry.submitter
        if submitter is not None and names:
            await submitter.retire_types(
                names,
                reason=f"task type removed: plugin {self.namespace!r} unregistered it",
                cancel_running=cancel_running,
            )
