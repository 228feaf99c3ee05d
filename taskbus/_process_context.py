"""`ProcessContext`: the context of a ``run_in="process"`` handler, in its worker process.

It talks to the task's bus over a local socket that the bus opened for this one
call (see `_process_run`): progress reports go up as JSON lines, a cancel comes
down as one. This module runs in the worker process, so it imports nothing that
needs an event loop.
"""

from __future__ import annotations

import json
import select
import socket
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from ._context import _checked
from ._errors import TaskCancellation
from ._snapshot import TaskSnapshot

__all__ = ["ProcessContext", "ProcessTicket", "run_with_context"]

#: Seconds the worker process waits for the bus to answer its hello.
_HELLO_TIMEOUT = 30.0
#: The line that ends a call (after its last progress report).
DONE = b'"done"\n'
ACK = b'"ok"\n'


class ProcessTicket(NamedTuple):
    """What a worker process needs to reach its task's bus (it pickles)."""

    host: str
    port: int
    token: str
    task_id: str
    task_type: str
    attempt: int
    owner: str | None
    metadata: dict[str, Any]
    parents: tuple[TaskSnapshot, ...] = ()


class ProcessContext:
    """Handed to a ``run_in="process"`` handler that takes a context.

    Call ``ctx.progress(...)`` (without await) and ``ctx.raise_if_cancelled()``
    as a thread handler would: reports cross to the bus and are debounced there;
    a cancel or timeout of the task makes ``raise_if_cancelled()`` raise
    `TaskCancellation`. A handler that does not stop within the grace is killed.
    """

    __slots__ = ("_buffer", "_cancel_reason", "_lock", "_socket", "_ticket")

    def __init__(self, ticket: ProcessTicket) -> None:
        self._ticket = ticket
        self._cancel_reason: str | None = None
        self._buffer = b""
        self._lock = threading.Lock()  # the handler's own threads may report too
        self._socket = socket.create_connection((ticket.host, ticket.port), _HELLO_TIMEOUT)
        try:
            self._socket.sendall(json.dumps({"token": ticket.token}).encode() + b"\n")
            while b"\n" not in self._buffer:
                self._receive()
            line, _, self._buffer = self._buffer.partition(b"\n")
            if line + b"\n" != ACK:
                raise RuntimeError(f"the bus of task {ticket.task_id} answered {line!r}")
            self._socket.setblocking(False)
            self._take_lines()
        except BaseException:
            self._socket.close()
            raise

    @property
    def task_id(self) -> str:
        return self._ticket.task_id

    @property
    def task_type(self) -> str:
        return self._ticket.task_type

    @property
    def attempt(self) -> int:
        """1 for the first attempt, 2 for the first retry, ..."""
        return self._ticket.attempt

    @property
    def owner(self) -> str | None:
        return self._ticket.owner

    @property
    def metadata(self) -> dict[str, Any]:
        return self._ticket.metadata

    @property
    def parents(self) -> list[TaskSnapshot]:
        """The parents' snapshots, as `TaskContext.parents` (pickled across)."""
        return list(self._ticket.parents)

    @property
    def cancelled(self) -> bool:
        """True once cancellation (or the timeout) was requested for this attempt."""
        self._poll()
        return self._cancel_reason is not None

    def raise_if_cancelled(self) -> None:
        """Raise `TaskCancellation` if this attempt should stop; for long loops."""
        self._poll()
        if self._cancel_reason is not None:
            raise TaskCancellation(self._ticket.task_id, self._cancel_reason)

    def progress(
        self,
        percent: float | None = None,
        message: str | None = None,
        *,
        current: int | None = None,
        total: int | None = None,
    ) -> None:
        """Report progress: a percent (0-100) or `current` of `total`, and a message."""
        percent = _checked(percent, message, current, total)
        if self._cancel_reason is not None:
            return  # the attempt is over; nothing it reports is published
        line = json.dumps([percent, message, current, total]).encode() + b"\n"
        with self._lock:
            try:
                self._socket.setblocking(True)
                self._socket.sendall(line)
                self._socket.setblocking(False)
            except OSError:
                self._lost()

    def ask(self, prompt: str, model: Any = str, **options: Any) -> Any:
        """Not available in a worker process: raises `TypeError` (see `TaskContext.ask`)."""
        raise TypeError(
            "ctx.ask needs an async handler on the bus's event loop, not a process handler"
        )

    def _poll(self) -> None:
        if self._cancel_reason is not None:
            return
        with self._lock:
            try:
                readable, _, _ = select.select([self._socket], [], [], 0)
                if readable:
                    self._receive()
            except OSError:
                self._lost()
            self._take_lines()

    def _receive(self) -> None:
        data = self._socket.recv(4096)
        if not data:
            raise ConnectionResetError("the task's bus closed the connection")
        self._buffer += data

    def _take_lines(self) -> None:
        while b"\n" in self._buffer:
            line, _, self._buffer = self._buffer.partition(b"\n")
            message = json.loads(line)
            if isinstance(message, dict) and "cancel" in message:
                self._request_cancel(str(message["cancel"]))

    def _lost(self) -> None:
        self._request_cancel("the worker process lost its connection to the bus")

    def _request_cancel(self, reason: str) -> None:
        if self._cancel_reason is None:
            self._cancel_reason = reason

    def _close(self) -> None:
        try:
            self._socket.setblocking(True)
            self._socket.sendall(DONE)
        except OSError:
            pass  # the bus is gone: nobody waits for the end
        finally:
            self._socket.close()


def run_with_context(handler: Callable[..., Any], ticket: ProcessTicket, *args: Any) -> Any:
    """Call `handler(ctx, *args)` in a worker process, with a context reaching the bus."""
    ctx = ProcessContext(ticket)
    try:
        return handler(ctx, *args)
    finally:
        ctx._close()
