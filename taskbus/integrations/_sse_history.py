"""The HTTP API's event history and fan-out to server-sent-event clients.

One sync ``bus.on("*", history)`` listener takes every event (its `Event.id`,
numbered by the bus or by the store's event log, is the SSE ``id:``), encodes it once as an SSE message shared by every
client (`model_json`: any result encodes), keeps the newest ones for
``Last-Event-ID`` resumption, and offers each to every open `EventStream`.

The history is bounded twice: at most `maxlen` events and at most `max_bytes`
of encoded messages (the oldest go first; an event larger than `max_bytes` on
its own reaches the open streams but is not kept). Offering is O(1) per client
and never waits: a client whose queue is full (in events or in bytes) is marked
overflowed, dropped from the fan-out and disconnected (it may reconnect with
``Last-Event-ID`` and replay what the history still holds). Registering a
stream and copying its replay happen in one synchronous step on the event loop,
so nothing is missed or sent twice between replay and live.

A one-task stream (`until_final`) ends after that task's final event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime

import anyio

from .. import (
    ErrorType,
    Event,
    TaskCancelled,
    TaskCompleted,
    TaskEvent,
    TaskFailed,
    TaskSnapshot,
    TaskState,
    event_order,
)
from ._http_json import model_json

Order = tuple[int, int]

__all__ = ["DEFAULT_HISTORY_BYTES", "EventHistory", "EventStream", "final_event_of"]

Accept = Callable[[Event], bool]

#: Default bound of the retained history (and of each client's queue), in bytes.
DEFAULT_HISTORY_BYTES = 8 * 1024 * 1024


class _Entry:
    __slots__ = ("event", "final", "frame", "seq")

    def __init__(self, seq: Order, event: Event) -> None:
        self.seq = seq
        self.event = event
        self.final = isinstance(event, TaskEvent) and event.final
        # An event the log could not number goes without an id: nobody resumes from it.
        head = b"" if event.id is None else b"id: %s\n" % event.id.encode()
        self.frame = b"%sevent: %s\ndata: %s\n\n" % (head, event.name.encode(), model_json(event))


class EventStream:
    """One client's bounded queue of entries; iterate `frames()` to send them."""

    def __init__(
        self,
        history: EventHistory,
        accept: Accept,
        *,
        limit: int,
        max_bytes: int,
        until_final: bool,
    ) -> None:
        self._history = history
        self._accept = accept
        self._limit = limit
        self._max_bytes = max_bytes
        self._until_final = until_final
        self._items: deque[_Entry] = deque()
        self._bytes = 0
        self._waiter: anyio.Event | None = None
        self.overflowed = False
        self.closed = False
        #: Events numbered at or below this were replayed (or seen): not sent again.
        self.floor: Order | None = None
        #: A one-task stream holds its task's final event: it takes nothing more.
        self.finished = False
        #: A one-task stream resumed (``Last-Event-ID``) after its final event.
        self.final_already_sent = False

    def offer(self, entry: _Entry) -> None:
        if self.closed or self.finished or not self._accept(entry.event):
            return
        if self.floor is not None and entry.event.id is not None and entry.seq <= self.floor:
            return  # replayed already
        if self._items and (
            len(self._items) >= self._limit or self._bytes + len(entry.frame) > self._max_bytes
        ):
            self.overflowed = True
            self._items.clear()
            self.close()
            return
        self._put(entry)

    def put_final(self, event: TaskEvent) -> None:
        """Queue a final event the history does not hold (numbered as "up to now")."""
        if not (self.closed or self.finished):
            self._put(_Entry(self._history.last_seq, event))

    def put_older(self, events: Sequence[Event]) -> None:
        """Queue events from the bus's log, older than anything the history holds:
        the newest of them that fit this stream's bounds, as a replay from the
        history would."""
        history = self._history
        entries = [
            _Entry(event_order(event.id), event)
            for event in events
            if event.id is not None and self._accept(event)
        ]
        size = 0
        keep = 0
        for entry in reversed(entries):
            size += len(entry.frame)
            if keep >= history.maxlen or size > history.max_bytes:
                break
            keep += 1
        for entry in entries[len(entries) - keep :]:
            self.offer(entry)

    def _put(self, entry: _Entry) -> None:
        self._items.append(entry)
        self._bytes += len(entry.frame)
        if self._until_final and entry.final:
            self.finished = True
            self._history.streams.discard(self)
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
        """SSE messages as they come, several at a time; ends on close, overflow
        or (one-task stream) after the final event."""
        try:
            while True:
                while not self._items:
                    if self.closed or self.finished:
                        return
                    self._waiter = waiter = anyio.Event()
                    await waiter.wait()
                items = self._items
                self._items = deque()
                self._bytes = 0
                yield b"".join([entry.frame for entry in items])
        finally:
            self.close()


class EventHistory:
    """Numbers, retains and fans out every event of one bus (a sync listener)."""

    def __init__(
        self,
        maxlen: int,
        *,
        max_bytes: int = DEFAULT_HISTORY_BYTES,
        client_limit: int,
        client_bytes: int = DEFAULT_HISTORY_BYTES,
    ) -> None:
        if maxlen < 0:
            raise ValueError(f"event_history must be >= 0, not {maxlen}")
        if max_bytes < 0:
            raise ValueError(f"event_history_bytes must be >= 0, not {max_bytes}")
        #: The order of the newest numbered event seen.
        self.last_seq: Order = (0, 0)
        self.streams: set[EventStream] = set()
        self.max_bytes = max_bytes
        self.maxlen = maxlen
        self._entries: deque[_Entry] = deque()
        self._bytes = 0
        self.client_limit = client_limit
        self._client_bytes = client_bytes

    @property
    def retained_bytes(self) -> int:
        """Bytes of the encoded events the history holds now."""
        return self._bytes

    def retained(self) -> list[Event]:
        """The events the history holds now, oldest first."""
        return [entry.event for entry in self._entries]

    @property
    def oldest_seq(self) -> Order | None:
        """The order of the oldest event the history holds (None: it holds none)."""
        return self._entries[0].seq if self._entries else None

    def __call__(self, event: Event) -> None:
        if event.id is not None:
            self.last_seq = max(self.last_seq, event_order(event.id))
        entry = _Entry(self.last_seq, event)
        self._retain(entry)
        for stream in tuple(self.streams):
            stream.offer(entry)

    def _retain(self, entry: _Entry) -> None:
        size = len(entry.frame)
        if size > self.max_bytes or self.maxlen == 0:
            return
        entries = self._entries
        entries.append(entry)
        self._bytes += size
        while len(entries) > self.maxlen or self._bytes > self.max_bytes:
            self._bytes -= len(entries.popleft().frame)

    def open(
        self,
        accept: Accept,
        *,
        after: str | None,
        replay: Accept | None,
        until_final: bool = False,
        older: list[Event] | None = None,
    ) -> EventStream:
        """A live stream, first holding the retained entries it should replay.

        `after` (an event id): replay `older` (the store's log after that id, when
        the history does not reach back so far), then the accepted entries numbered
        above it (an `after` above anything seen and nothing `older` counts as None).
        Otherwise, `replay` (if given) picks retained entries to replay.
        `until_final`: the stream ends after the first final task event it sends.
        """
        floor = None if after is None else event_order(after)
        if older:
            floor = max(floor or (0, 0), *(event_order(e.id) for e in older if e.id))
        elif floor is not None and floor > self.last_seq:
            floor = None
        stream = EventStream(
            self,
            accept,
            limit=self.client_limit,
            max_bytes=self._client_bytes,
            until_final=until_final,
        )
        if older:
            stream.put_older(older)
        stream.floor = floor
        for entry in self._entries:
            if floor is None:
                if replay is not None and replay(entry.event):
                    stream.offer(entry)
            elif entry.seq > floor:
                stream.offer(entry)
            elif until_final and entry.final and accept(entry.event):
                stream.final_already_sent = True
        if not (stream.closed or stream.finished):
            self.streams.add(stream)
        return stream


def final_event_of(snapshot: TaskSnapshot) -> TaskEvent:
    """The final event of a finished task, rebuilt from its snapshot (for replay)."""
    common = {
        "task_id": snapshot.id,
        "task_type": snapshot.type,
        "owner": snapshot.owner,
        "timestamp": snapshot.finished_at or datetime.now(UTC),
    }
    if snapshot.state is TaskState.COMPLETED:
        return TaskCompleted.trusted(
            **common, result=snapshot.result, duration=snapshot.run_time or 0.0
        )
    if snapshot.state is TaskState.CANCELLED:
        return TaskCancelled.trusted(**common, reason=snapshot.cancel_reason)
    if snapshot.state is not TaskState.FAILED:
        raise ValueError(f"task {snapshot.id} is {snapshot.state.value}, not final")
    error = snapshot.error
    error_type = error.error_type if error is not None else ErrorType.FATAL
    return TaskFailed.trusted(
        **common,
        error=error.message if error is not None else "unknown error",
        error_type=error_type,
        suggested_action=error.suggested_action if error is not None else None,
        retryable=error_type is ErrorType.RETRYABLE,
        attempt_count=snapshot.attempts,
    )
