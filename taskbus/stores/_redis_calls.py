"""The Redis store's script calls, sent in order, many per round trip.

Every change a store makes is a script call queued here. Calls go out in the
order they were queued, in one pipeline per round trip (calls queued while a
round trip is under way share the next one: a group commit), so a change that
nobody waits for (progress, a cancel request) is never overtaken by a later
one. A caller who awaits its call sends the pending ones itself; the others are
sent by `serve` (which the store runs inside `follow`), or by the next awaited
call.

A round trip that fails on the way (connection lost, server restarting) is sent
again with back-off for up to `retry_for` seconds; the scripts make that safe
(a row write sent twice is written once, see `WRITE`). Past that, each call of
the round trip fails with `StoreError`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import anyio
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from .._errors import StoreError
from ._outage import OutageWatch

__all__ = ["Call", "ScriptCalls"]

logger = logging.getLogger("taskbus.stores.redis")

#: Failures on the way to the server or back: the round trip is sent again.
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, OSError)


class Call:
    """One script call; `done` once it has an outcome (`result` or `error`)."""

    __slots__ = ("args", "done", "error", "result", "script", "then")

    def __init__(self, script: str, args: list[str], then: Callable[[Call], None] | None) -> None:
        self.script = script
        self.args = args
        self.then = then
        self.result: Any = None
        self.error: StoreError | None = None
        self.done = False


class ScriptCalls:
    """Queues script calls and sends them in order (see the module docstring)."""

    def __init__(
        self,
        client: Redis,
        scripts: Mapping[str, str],
        where: str,
        *,
        merged: Mapping[str, int] | None = None,
        retry_for: float = 10.0,
        watch: OutageWatch | None = None,
    ) -> None:
        """`merged`: the scripts whose calls may go out as one, by how many leading
        arguments they share (the rest are items, each with one result)."""
        self._client = client
        self._merged = dict(merged or {})
        self._connection: AbstractConnection | None = None
        self._retry_for = retry_for
        self._outage = False
        self._watch = watch if watch is not None else OutageWatch()
        self._sources = dict(scripts)
        self._shas: dict[str, str] = {}
        self._where = where
        self._pending: list[Call] = []
        self._lock = asyncio.Lock()  # asyncio only, as redis-py's client: the cheaper lock
        self._wanted = anyio.Event()

    async def load(self) -> None:
        """Load the scripts into the server (again after it forgot them)."""
        for name, source in self._sources.items():
            self._shas[name] = await self._client.script_load(source)

    def queue(
        self, script: str, args: list[str], then: Callable[[Call], None] | None = None
    ) -> Call:
        """Queue a call; `then(call)` runs once it has an outcome."""
        call = Call(script, args, then)
        self._pending.append(call)
        self._wanted.set()
        return call

    async def run(self, script: str, args: list[str]) -> Any:
        """Queue a call and wait for its result; raises `StoreError` if it failed."""
        call = self.queue(script, args)
        await self.wait(call)
        if call.error is not None:
            raise call.error
        return call.result

    async def wait(self, call: Call) -> None:
        """Send what is pending until `call` has its outcome. Shielded: a cancelled
        caller still leaves its call (and those before it) sent."""
        with anyio.CancelScope(shield=True):
            while not call.done:
                await self.send_pending()

    async def send_pending(self) -> None:
        """Send every pending call in one round trip (after the one under way)."""
        async with self._lock:
            calls, self._pending = self._pending, []
            if calls:
                await self._send(calls)

    async def serve(self) -> None:
        """Send the calls nobody waits for, as they come, until cancelled."""
        while True:
            await self._wanted.wait()
            self._wanted = anyio.Event()
            with anyio.CancelScope(shield=True):
                await self.send_pending()

    async def _send(self, calls: list[Call]) -> None:
        try:
            results = await self._send_retrying(calls)
        except (RedisError, OSError) as exc:
            error = StoreError(f"{self._where}: cannot write: {type(exc).__name__}: {exc}")
            error.__cause__ = exc
            results = [error] * len(calls)
        for call, result in zip(calls, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, StoreError):
                    call.error = result
                else:
                    call.error = StoreError(f"{self._where}: a script failed: {result}")
                    call.error.__cause__ = result
            else:
                call.result = result
            call.done = True
            if call.then is not None:
                try:
                    call.then(call)
                except Exception:
                    logger.exception("%s: after a write", self._where)

    async def _send_retrying(self, calls: list[Call]) -> list[Any]:
        try:
            results = await self._send_once(calls)  # the common case: no retry machinery
        except _TRANSIENT as exc:
            self._lost_once(exc)
        else:
            self._reached()
            return results
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_TRANSIENT),
            stop=stop_after_delay(self._retry_for),
            wait=wait_exponential(multiplier=0.05, max=2.0),
            before_sleep=self._lost,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                results = await self._send_once(calls)
        self._reached()
        return results

    def _reached(self) -> None:
        if self._outage:
            self._outage = False
            self._watch.reached("write")
            logger.warning("%s: writing works again", self._where)

    def _lost(self, state: RetryCallState) -> None:
        self._lost_once(state.outcome.exception() if state.outcome is not None else None)

    def _lost_once(self, failure: BaseException | None) -> None:
        self._watch.lost("write", failure)
        if not self._outage:
            self._outage = True
            logger.error("%s: cannot reach the server (%s); trying again", self._where, failure)

    async def _send_once(self, calls: list[Call]) -> list[Any]:
        results = await self._pipeline(calls)
        missing = [at for at, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            await self.load()  # the server restarted or was flushed: none of these ran
            again = await self._pipeline([calls[at] for at in missing])
            for at, result in zip(missing, again, strict=True):
                results[at] = result
        for result in results:  # a connection lost mid-reply: the whole trip again
            if isinstance(result, RedisConnectionError | RedisTimeoutError):
                raise result
        return results

    async def _pipeline(self, calls: list[Call]) -> list[Any]:
        """Send `calls` on the writer's own connection in one write and read their
        replies in order (an error reply is returned in its place). Consecutive calls
        of a script that takes many items (`merged`) go out as one call."""
        connection = self._connection
        if connection is None:
            pool: Any = self._client.connection_pool  # typed in some redis-py versions only
            connection = self._connection = await pool.get_connection()
        groups: list[list[Call]] = []
        for call in calls:
            if groups and call.script in self._merged and groups[-1][0].script == call.script:
                groups[-1].append(call)
            else:
                groups.append([call])
        commands = [self._command(group) for group in groups]
        try:
            await connection.send_packed_command(connection.pack_commands(commands))
            results: list[Any] = []
            for group in groups:
                try:
                    reply = await connection.read_response()
                except ResponseError as error:
                    results += [error] * len(group)
                    continue
                results += self._split(group, reply)
        except BaseException:
            with anyio.CancelScope(shield=True):  # replies may be pending: never reuse it
                await connection.disconnect()
            raise
        return results

    def _command(self, group: list[Call]) -> tuple[str | int, ...]:
        first = group[0]
        if len(group) == 1:
            return ("EVALSHA", self._shas[first.script], 0, *first.args)
        head = self._merged[first.script]
        items = [arg for call in group for arg in call.args[head:]]
        return ("EVALSHA", self._shas[first.script], 0, *first.args[:head], *items)

    def _split(self, group: list[Call], reply: Any) -> list[Any]:
        """Each call's share of a merged call's reply (one result per item)."""
        if len(group) == 1:
            return [reply]
        head = self._merged[group[0].script]
        shares: list[Any] = []
        at = 0
        for call in group:
            count = len(call.args) - head
            shares.append(reply[at : at + count])
            at += count
        return shares

    async def close(self) -> None:
        """Give the writer's connection back to its pool."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._client.connection_pool.release(connection)
