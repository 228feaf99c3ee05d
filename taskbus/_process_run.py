"""Running a process handler that takes a context: progress up, cancel down.

The bus opens a listening socket on 127.0.0.1 for the call and hands the worker
process a `ProcessTicket` (address and a one-time token). The worker connects,
says the token, waits for the bus's acknowledgement, runs the handler, and ends
with a "done" line, so the bus reads every progress report before it settles
the task. On a cancel or timeout the bus sends the reason down; the handler's
``raise_if_cancelled()`` raises, and if the process is still running after
`PROCESS_STOP_GRACE` seconds it is killed (anyio's ``cancellable`` call).
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_process
from anyio.streams.buffered import BufferedByteReceiveStream

from ._context import TaskContext
from ._errors import TaskCancellation
from ._process_context import ACK, DONE, ProcessTicket, run_with_context

__all__ = ["PROCESS_STOP_GRACE", "run_in_process"]

logger = logging.getLogger("taskbus.executor")

#: Seconds a context-taking process handler gets to return after a cancel or a
#: timeout before its process is killed.
PROCESS_STOP_GRACE = 2.0
#: Longest line the bus reads from a worker process (a message is at most 4,096
#: characters, which JSON may spell six bytes each).
_MAX_LINE = 64 * 1024
#: Seconds to wait for the reports a returned process sent before its result.
_DRAIN_WAIT = 5.0
_STREAM_ERRORS = (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, OSError)


async def run_in_process(
    handler: Callable[..., Any],
    ctx: TaskContext,
    args: tuple[Any, ...],
    *,
    grace: float = PROCESS_STOP_GRACE,
) -> Any:
    """``handler(process_ctx, *args)`` in a worker process; its reports reach `ctx`."""
    return await _ProcessRun(ctx, grace).run(handler, args)


async def _listen() -> anyio.abc.SocketListener:
    """A listener on a free port of 127.0.0.1 (no name lookup, unlike anyio's helper)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)
        return await anyio.abc.SocketListener.from_socket(sock)
    except BaseException:
        sock.close()
        raise


class _Outcome:
    __slots__ = ("error", "value")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error


class _ProcessRun:
    def __init__(self, ctx: TaskContext, grace: float) -> None:
        self._ctx = ctx
        self._grace = grace
        self._token = secrets.token_hex(16)
        self._stream: anyio.abc.SocketStream | None = None
        self._cancel_reason: str | None = None
        self._send_lock = anyio.Lock()
        self._read_done = anyio.Event()
        self._serve_scope = anyio.CancelScope(shield=True)
        self._call_scope = anyio.CancelScope()
        self._over = False

    async def run(self, handler: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        listener = await _listen()
        async with listener:
            ticket = self._ticket(listener.extra(anyio.abc.SocketAttribute.local_port))
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._serve, listener)
                tg.start_soon(self._watch)
                # The call is shielded: a cancel reaches the handler as a message
                # first, and the process is killed only once the grace is over.
                with anyio.CancelScope(shield=True):
                    outcome = await self._call(handler, ticket, args)
                    if self._stream is not None:
                        with anyio.move_on_after(_DRAIN_WAIT):
                            await self._read_done.wait()
                self._over = True
                self._serve_scope.cancel()
                tg.cancel_scope.cancel()
        await anyio.lowlevel.checkpoint_if_cancelled()
        if outcome.error is not None:
            raise outcome.error
        return outcome.value

    def _ticket(self, port: int) -> ProcessTicket:
        ctx = self._ctx
        return ProcessTicket(
            "127.0.0.1",
            port,
            self._token,
            ctx.task_id,
            ctx.task_type,
            ctx.attempt,
            ctx.owner,
            dict(ctx.metadata),
            tuple(ctx.parents),
        )

    async def _call(
        self, handler: Callable[..., Any], ticket: ProcessTicket, args: tuple[Any, ...]
    ) -> _Outcome:
        outcome = _Outcome(error=TaskCancellation(ticket.task_id, "its process was killed"))
        with self._call_scope:
            try:
                value = await anyio.to_process.run_sync(
                    run_with_context, handler, ticket, *args, cancellable=True
                )
            except (Exception, TaskCancellation) as exc:  # noqa: BLE001 - settled by the executor
                outcome = _Outcome(error=exc)
            else:
                outcome = _Outcome(value)
        return outcome

    async def _watch(self) -> None:
        """Waits for the attempt to be interrupted; then tells the handler, arms the kill."""
        try:
            await anyio.sleep_forever()
        finally:
            if not self._over:
                self._call_scope.deadline = anyio.current_time() + self._grace
                reason = self._ctx._cancel_reason or "the bus is stopping"
                with anyio.CancelScope(shield=True):
                    await self._tell_cancel(reason)

    async def _tell_cancel(self, reason: str) -> None:
        async with self._send_lock:
            self._cancel_reason = reason
            if self._stream is not None:
                await self._send_cancel(self._stream)

    async def _send_cancel(self, stream: anyio.abc.SocketStream) -> None:
        line = json.dumps({"cancel": self._cancel_reason}).encode() + b"\n"
        try:
            await stream.send(line)
        except _STREAM_ERRORS:
            pass  # the process has ended: nothing to stop

    async def _serve(self, listener: anyio.abc.SocketListener) -> None:
        with self._serve_scope:
            try:
                stream, lines = await self._accept(listener)
                async with stream:
                    async with self._send_lock:
                        self._stream = stream
                        await stream.send(ACK)
                        if self._cancel_reason is not None:
                            await self._send_cancel(stream)
                    await self._read(lines)
            except _STREAM_ERRORS:
                pass  # the process ended without its "done" line (killed, say)
            finally:
                self._read_done.set()

    async def _accept(
        self, listener: anyio.abc.SocketListener
    ) -> tuple[anyio.abc.SocketStream, BufferedByteReceiveStream]:
        """The connection that says this call's token (any other is closed)."""
        while True:
            stream = await listener.accept()
            lines = BufferedByteReceiveStream(stream)
            try:
                with anyio.fail_after(5):
                    hello = json.loads(await lines.receive_until(b"\n", _MAX_LINE))
            except (*_STREAM_ERRORS, TimeoutError, anyio.DelimiterNotFound, ValueError):
                hello = None
            token = hello.get("token") if isinstance(hello, dict) else None
            if isinstance(token, str) and secrets.compare_digest(token, self._token):
                return stream, lines
            await stream.aclose()

    async def _read(self, lines: BufferedByteReceiveStream) -> None:
        ctx = self._ctx
        while True:
            line = await lines.receive_until(b"\n", _MAX_LINE)
            if line + b"\n" == DONE:
                return
            try:
                percent, message, current, total = json.loads(line)
                ctx.progress(percent, message, current=current, total=total)
            except (ValueError, TypeError) as exc:
                logger.warning("task %s sent a progress report it cannot: %s", ctx.task_id, exc)
