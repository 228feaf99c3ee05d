"""`RegistryScope`: a plugin's view of the registry, confined to its namespace."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._errors import InvalidTaskDefinition, UnknownTaskType

if TYPE_CHECKING:
    from ._registry import TaskDefinition, TaskRegistry, _Decorator

__all__ = ["RegistryScope"]

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
