"""Bounded event buffers behind `subscribe()` and async listeners.

Overflow policy, once `maxsize` events wait: the oldest waiting progress event
is dropped to make room (a newer one follows it, and the debouncer already
keeps the last value). Lifecycle events (queued, started, retrying and the
final ones) are never dropped: they may push the buffer past `maxsize`, up to
`hard_limit`; past that the subscriber is too slow to be told the truth, so the
buffer closes and the reader gets `SubscriptionOverflow` instead of silent loss.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Self

import anyio

from ._errors import SubscriptionOverflow
from ._events import Event, event_order

__all__ = ["EventBuffer"]

_PROGRESS = "task-progress"


class EventBuffer:
    """A bounded queue of events with the documented overflow policy.

    Iterate it with ``async for``; iteration ends once it is closed and empty.
    """

    def __init__(
        self,
        maxsize: int = 1000,
        *,
        hard_limit: int | None = None,
        accept: Callable[[Event], bool] | None = None,
        until_final_of: str | None = None,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, not {maxsize}")
        self.maxsize = maxsize
        self.hard_limit = hard_limit if hard_limit is not None else maxsize * 10
        self.dropped = 0
        self._accept = accept
        self._until_final_of = until_final_of
        self._items: deque[Event] = deque()
        self._progress_held = 0
        self._waiter: anyio.Event | None = None
        self._closed = False
        self._overflowed = False
        #: Events numbered at or below this were replayed: not delivered again.
        self._floor: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, event: Event) -> None:
        """Offer an event (sync, from the publishing task or the bus's thread)."""
        if self._closed:
            return
        if (
            self._floor is not None
            and event.id is not None
            and event_order(event.id) <= self._floor
        ):
            return
        if self._accept is not None and not self._accept(event):
            # The filter may leave out the final event; the iteration still ends with it.
            if event.final and getattr(event, "task_id", None) == self._until_final_of:
                self.close()
            return
        items = self._items
        if len(items) >= self.maxsize and not self._make_room(event):
            return
        items.append(event)
        if event.name == _PROGRESS:
            self._progress_held += 1
        if event.final and getattr(event, "task_id", None) == self._until_final_of:
            self._closed = True
        self._wake()

    def replay(self, events: list[Event]) -> None:
        """Put older, numbered `events` ahead of what is buffered; what they cover (an
        event numbered at or below the last of them) is not delivered again."""
        if not events or events[-1].id is None:
            return
        floor = event_order(events[-1].id)
        live = [e for e in self._items if e.id is None or event_order(e.id) > floor]
        self._items.clear()
        self._progress_held = 0
        closed, self._closed = self._closed, False
        for event in [*events, *live]:
            self.put(event)
        self._closed = self._closed or closed
        self._floor = floor

    def _make_room(self, event: Event) -> bool:
        if self._progress_held:
            for index, waiting in enumerate(self._items):
                if waiting.name == _PROGRESS:
                    del self._items[index]
                    self._progress_held -= 1
                    self.dropped += 1
                    return True
        if event.name == _PROGRESS:
            self.dropped += 1
            return False
        if len(self._items) >= self.hard_limit:
            self._overflowed = True
            self.close()
            return False
        return True

    def close(self) -> None:
        """No more events; readers finish what is buffered, then stop."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    def _take(self) -> Event:
        event = self._items.popleft()
        if event.name == _PROGRESS:
            self._progress_held -= 1
        return event

    def get_nowait(self) -> Event | None:
        return self._take() if self._items else None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        while not self._items:
            if self._overflowed:
                raise SubscriptionOverflow(
                    f"subscriber fell more than {self.hard_limit} lifecycle events behind"
                )
            if self._closed:
                raise StopAsyncIteration
            self._waiter = waiter = anyio.Event()
            await waiter.wait()
        return self._take()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
