"""`EventBus`: typed publish/subscribe over pyee, with isolated listeners.

pyee's emitter holds the listeners (`on`, `remove_listener`, `listeners`); the
bus delivers from a cached tuple of them, rebuilt whenever they change.

Sync listeners are called in the publishing task; each is wrapped so an
exception is logged and counted, never raised into the runtime or other
listeners. Async listeners each get an `EventBuffer` drained by a task of
their own, so one that blocks only fills its own buffer. Events are built only
when `wants(name)` says someone listens.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, TypeVar, overload

import anyio
from anyio.abc import TaskGroup
from pyee import EventEmitter

from ._errors import SubscriptionOverflow
from ._events import BATCH_EVENT_TYPES, EVENT_TYPES, Event
from ._subscription import EventBuffer

__all__ = ["ALL_EVENTS", "EventBus", "Listener"]

logger = logging.getLogger("taskbus.bus")

E = TypeVar("E", bound=Event)
Listener = Callable[[Any], Any]
#: Subscribe to this name to receive every event.
ALL_EVENTS = "*"

_EventKey = str | type[Event]


def _event_name(event: _EventKey) -> str:
    if isinstance(event, str):
        if event != ALL_EVENTS and event not in EVENT_TYPES and event not in BATCH_EVENT_TYPES:
            known = ", ".join([*EVENT_TYPES, *BATCH_EVENT_TYPES])
            raise ValueError(f"unknown event name {event!r}; known: {known} or '*'")
        return event
    if isinstance(event, type) and issubclass(event, Event):
        name = event.model_fields["name"].default
        if name in EVENT_TYPES or name in BATCH_EVENT_TYPES:
            return str(name)
    raise ValueError(f"not an event name or class: {event!r}")


def _bus_cancelled() -> bool:
    """True when the task running a listener is itself being cancelled (the bus stops)."""
    return anyio.current_effective_deadline() == -math.inf


class _AsyncListener:
    """Feeds one async listener from its own buffer, in its own task."""

    def __init__(self, bus: EventBus, fn: Callable[[Any], Awaitable[Any]], maxsize: int) -> None:
        self.fn = fn
        self.buffer = EventBuffer(maxsize)
        self.done: anyio.Event | None = None
        self._bus = bus

    def __call__(self, event: Event) -> None:
        self.buffer.put(event)

    def start(self, task_group: TaskGroup) -> None:
        if self.buffer.closed:
            self.buffer = EventBuffer(self.buffer.maxsize)
        self.done = anyio.Event()
        task_group.start_soon(self._run, self.done)

    async def _run(self, done: anyio.Event) -> None:
        try:
            while True:
                try:
                    async for event in self.buffer:
                        try:
                            await self.fn(event)
                        except BaseException:
                            if _bus_cancelled():
                                raise
                            self._bus._listener_failed(self.fn, event)
                    return
                except SubscriptionOverflow:
                    # Too slow to be told every lifecycle event: say so, count it,
                    # and go on with a fresh buffer rather than stop the bus.
                    self._bus.listener_errors += 1
                    logger.error(
                        "async listener %r fell more than %d events behind; "
                        "%d events were not delivered to it",
                        self.fn,
                        self.buffer.hard_limit,
                        len(self.buffer) + self.buffer.dropped,
                    )
                    self.buffer = EventBuffer(self.buffer.maxsize)
        finally:
            done.set()


class EventBus:
    """Publishes task events to listeners and subscribers.

    ``bus.on("task-progress", fn)`` or ``bus.on(TaskProgress, fn)``; `fn` may be
    sync or async. ``"*"`` receives every event.
    """

    def __init__(self, *, listener_buffer: int = 1000, history: int = 1000) -> None:
        if type(history) is not int or history < 0:
            raise ValueError(f"history must be an int >= 0, not {history!r}")
        self._emitter = EventEmitter()
        #: Whether `publish` numbers events itself (no store log numbers them).
        self.numbering = True
        self._last_id = 0
        self._recent: deque[Event] = deque(maxlen=history)
        self._listener_buffer = listener_buffer
        self._counts: dict[str, int] = {}
        self._wrappers: dict[tuple[str, Any], list[Callable[[Event], None]]] = {}
        self._async_listeners: list[_AsyncListener] = []
        self._snapshots: dict[str, tuple[Callable[[Event], None], ...]] = {}
        self._task_group: TaskGroup | None = None
        self._streams: set[EventBuffer] = set()
        self._any = 0
        self.listener_errors = 0
        self._dropped_closed = 0

    def wants(self, name: str) -> bool:
        """True when at least one listener or subscriber would receive `name`."""
        return self._any > 0 or name in self._counts

    @property
    def dropped_events(self) -> int:
        """Progress events dropped from subscriptions that read too slowly, so far."""
        return self._dropped_closed + sum(stream.dropped for stream in self._streams)

    def listener_count(self, event: _EventKey = ALL_EVENTS) -> int:
        name = _event_name(event)
        return self._any if name == ALL_EVENTS else self._counts.get(name, 0)

    @overload
    def on(self, event: _EventKey) -> Callable[[Listener], Listener]: ...
    @overload
    def on(self, event: _EventKey, listener: Listener) -> Listener: ...
    def on(
        self, event: _EventKey, listener: Listener | None = None
    ) -> Listener | Callable[[Listener], Listener]:
        """Call `listener(event)` for each event of that name or class.

        Returns the listener, so it also works as a decorator.
        """
        name = _event_name(event)
        if listener is None:
            return lambda fn: self.on(name, fn)
        if not callable(listener):
            raise TypeError(f"listener must be callable, not {listener!r}")
        registered = self._wrappers.setdefault((name, listener), [])
        wrapper = self._wrap(listener, duplicate=bool(registered))
        registered.append(wrapper)
        self._emitter.on(name, wrapper)
        self._count(name, +1)
        return listener

    def off(self, event: _EventKey, listener: Listener) -> None:
        """Remove a listener added with `on`; raises KeyError if it was not added."""
        name = _event_name(event)
        wrappers = self._wrappers.get((name, listener))
        if not wrappers:
            raise KeyError(f"{listener!r} is not listening to {name!r}")
        wrapper = wrappers.pop()
        if not wrappers:
            del self._wrappers[(name, listener)]
        self._emitter.remove_listener(name, wrapper)
        self._count(name, -1)
        if isinstance(wrapper, _AsyncListener):
            wrapper.buffer.close()
            self._async_listeners.remove(wrapper)

    def _count(self, name: str, delta: int) -> None:
        self._snapshots.pop(name, None)
        if name == ALL_EVENTS:
            self._any += delta
            return
        count = self._counts.get(name, 0) + delta
        if count:
            self._counts[name] = count
        else:
            self._counts.pop(name, None)

    def _wrap(self, listener: Listener, *, duplicate: bool) -> Callable[[Event], None]:
        if inspect.iscoroutinefunction(listener) or inspect.iscoroutinefunction(
            getattr(listener, "__call__", None)  # noqa: B004
        ):
            feeder = _AsyncListener(self, listener, self._listener_buffer)
            self._async_listeners.append(feeder)
            if self._task_group is not None:
                feeder.start(self._task_group)
            return feeder

        # pyee keys listeners by identity: a second registration of the same
        # function gets a distinct callable so that it is called twice.
        return partial(listener) if duplicate else listener

    def _listener_failed(self, listener: Any, event: Event) -> None:
        self.listener_errors += 1
        logger.exception(
            "listener %r raised on %s for %s",
            listener,
            event.name,
            getattr(event, "task_id", None) or getattr(event, "batch_id", None),
        )

    def publish(self, event: Event) -> None:
        """Deliver `event` to its listeners and to every-event subscribers.

        Unless a store's event log numbered it already, the bus gives it the next
        id and keeps it among the `history` most recent (see `recent_after`).
        """
        if self.numbering:
            self._last_id += 1
            event.__dict__["id"] = str(self._last_id)
            self._recent.append(event)
        name = event.name
        if name in self._counts:
            self._deliver(self._snapshots.get(name) or self._snapshot(name), event)
        if self._any:
            self._deliver(self._snapshots.get(ALL_EVENTS) or self._snapshot(ALL_EVENTS), event)

    def recent_after(self, after: str | None) -> list[Event]:
        """The events this bus numbered and still keeps, after the one with id `after`
        (all it keeps for None; none for an id it never issued)."""
        if not self.numbering:
            return []
        try:
            last = 0 if after is None else int(after)
        except ValueError:
            return []
        if last > self._last_id:
            return []
        return [event for event in self._recent if int(event.id or 0) > last]

    def _deliver(self, handlers: tuple[Callable[[Event], None], ...], event: Event) -> None:
        for handler in handlers:
            try:
                handler(event)
            # Not only Exception: a KeyboardInterrupt or custom BaseException raised by a
            # listener is that listener's bug. A sync call cannot carry a real cancellation.
            except BaseException:  # noqa: BLE001 - a listener never breaks the runtime; logged
                self._listener_failed(getattr(handler, "func", handler), event)

    def _snapshot(self, name: str) -> tuple[Callable[[Event], None], ...]:
        # pyee keeps the listeners; its emit() locks and copies them on every call,
        # which cost more than building the event, so the bus reads a tuple of
        # pyee's listeners that is rebuilt whenever they change.
        handlers = tuple(self._emitter.listeners(name))
        self._snapshots[name] = handlers
        return handlers

    @asynccontextmanager
    async def subscribe(
        self,
        *,
        task_id: str | None = None,
        task_type: str | None = None,
        events: list[_EventKey] | None = None,
        buffer: int = 1000,
    ) -> AsyncIterator[Any]:
        """An async iterator of matching events (see `EventBuffer` for overflow).

        With `task_id`, iteration ends after that task's final event.
        """
        names = frozenset(_event_name(e) for e in events) if events else None

        def accept(event: Event) -> bool:
            return (
                (task_id is None or getattr(event, "task_id", None) == task_id)
                and (task_type is None or getattr(event, "task_type", None) == task_type)
                and (names is None or event.name in names)
            )

        stream = EventBuffer(buffer, accept=accept, until_final_of=task_id)
        self._emitter.on(ALL_EVENTS, stream.put)
        self._count(ALL_EVENTS, +1)
        self._streams.add(stream)
        try:
            yield stream
        finally:
            self._streams.discard(stream)
            self._dropped_closed += stream.dropped
            self._emitter.remove_listener(ALL_EVENTS, stream.put)
            self._count(ALL_EVENTS, -1)
            stream.close()

    def close_subscriptions(self) -> None:
        """End every open subscription once it has read what it holds (at shutdown)."""
        for stream in list(self._streams):
            stream.close()

    def attach(self, task_group: TaskGroup) -> None:
        """Start delivering to async listeners from `task_group`."""
        self._task_group = task_group
        for feeder in self._async_listeners:
            feeder.start(task_group)

    async def drain(self, timeout: float) -> None:
        """Let async listeners finish what they hold, for at most `timeout` seconds."""
        self._task_group = None
        for feeder in self._async_listeners:
            feeder.buffer.close()
        with anyio.move_on_after(timeout):
            for feeder in self._async_listeners:
                if feeder.done is not None:
                    await feeder.done.wait()
