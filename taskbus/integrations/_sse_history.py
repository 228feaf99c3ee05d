"""The HTTP API's event history and fan-out to server-sent-event clients.

One sync ``bus.on("*", history)`` listener numbers every event (a monotonic
sequence, the SSE ``id:``), keeps the last `maxlen` of them in a ring buffer for
``Last-Event-ID`` resumption, and offers each to every open `EventStream`.
Offering is O(1) per client and never waits: a client whose bounded queue is
full is marked overflowed, dropped from the fan-out and disconnected (it may
reconnect with ``Last-Event-ID`` and replay what the history still holds).
Registering a stream and copying its replay happen in one synchronous step on
the event loop, so nothing is missed or sent twice between replay and live.

An event is encoded once, on first send, as one SSE message shared by every
client; a client sends everything waiting for it as one chunk.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable

import anyio

from .._events import Event

__all__ = ["EventHistory", "EventStream"]

Accept = Callable[[Event], bool]


class _Entry:
    __slots__ = ("_frame", "event", "seq")

    def __init__(self, seq: int, event: Event) -> None:
        self.seq = seq
        self.event = event
        self._frame: bytes | None = None

    def frame(self) -> bytes:
        frame = self._frame
        if frame is None:
            data = self.event.model_dump_json()
            frame = self._frame = (
                f"id: {self.seq}\nevent: {self.event.name}\ndata: {data}\n\n".encode()
            )
        return frame


class EventStream:
    """One client's bounded queue of entries; iterate `frames()` to send them."""

    def __init__(self, history: EventHistory, accept: Accept, limit: int) -> None:
        self._history = history
        self._accept = accept
        self._limit = limit
        self._items: deque[_Entry] = deque()
        self._waiter: anyio.Event | None = None
        self.overflowed = False
        self.closed = False

    def offer(self, entry: _Entry) -> None:
        if self.closed or not self._accept(entry.event):
            return
        if len(self._items) >= self._limit:
            self.overflowed = True
            self._items.clear()
            self.close()
            return
        self._items.append(entry)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._history.streams.discard(self)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    async def frames(self) -> AsyncIterator[bytes]:
        """SSE messages as they come, several at a time; ends on close or overflow."""
        try:
            while True:
                while not self._items:
                    if self.closed:
                        return
                    self._waiter = waiter = anyio.Event()
                    await waiter.wait()
                items = self._items
                self._items = deque()
                yield b"".join([entry.frame() for entry in items])
        finally:
            self.close()


class EventHistory:
    """Numbers, retains and fans out every event of one bus (a sync listener)."""

    def __init__(self, maxlen: int, *, client_limit: int) -> None:
        if maxlen < 0:
            raise ValueError(f"event_history must be >= 0, not {maxlen}")
        self.last_seq = 0
        self.streams: set[EventStream] = set()
        self._entries: deque[_Entry] = deque(maxlen=maxlen)
        self._client_limit = client_limit

    def __call__(self, event: Event) -> None:
        self.last_seq += 1
        entry = _Entry(self.last_seq, event)
        self._entries.append(entry)
        for stream in tuple(self.streams):
            stream.offer(entry)

    def open(self, accept: Accept, *, after: int | None, replay: Accept | None) -> EventStream:
        """A live stream, first holding the retained entries it should replay.

        `after`: replay the accepted entries with a higher sequence. Otherwise,
        `replay` (if given) picks retained entries to replay.
        """
        stream = EventStream(self, accept, self._client_limit)
        if after is not None:
            for entry in self._entries:
                if entry.seq > after:
                    stream.offer(entry)
        elif replay is not None:
            for entry in self._entries:
                if replay(entry.event):
                    stream.offer(entry)
        if not stream.closed:
            self.streams.add(stream)
        return stream
