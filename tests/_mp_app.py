"""The app the multi-process tests run in `taskbus worker` processes.

Its store is the SQLite file named by ``TASKBUS_TEST_DB``, or, when
``TASKBUS_TEST_REDIS_PREFIX`` is set, the Redis store with that key prefix on
``TASKBUS_REDIS_URL`` (the gate file is still named after ``TASKBUS_TEST_DB``). Handlers write what
they do to ``TASKBUS_TEST_LOG`` (one line each: ``start|end|ran <id> <pid>
<time>``), so a test can tell which process ran what, and how many at once.
"""

from __future__ import annotations

import os
import time
from typing import Any

import anyio
from pydantic import BaseModel

from taskbus import RetryableError, RetryPolicy, TaskBus, TaskContext
from taskbus.stores import Store

GATE_SUFFIX = ".open"


class Branch(BaseModel):
    name: str


# a "gated" task waits until <db>.open exists


def _log(kind: str, task_id: str) -> None:
    line = f"{kind} {task_id} {os.getpid()} {time.time():.6f}\n"
    with open(os.environ["TASKBUS_TEST_LOG"], "a") as log:
        log.write(line)


def _store() -> Store | str:
    prefix = os.environ.get("TASKBUS_TEST_REDIS_PREFIX")
    if prefix is None:
        return f"sqlite:///{os.environ['TASKBUS_TEST_DB']}"
    from taskbus.stores.redis import RedisStore

    url = os.environ.get("TASKBUS_REDIS_URL", "redis://127.0.0.1:6379/15")
    return RedisStore(url, prefix=prefix)


def make() -> TaskBus:
    db = os.environ["TASKBUS_TEST_DB"]
    bus = TaskBus(store=_store(), workers=4, shutdown_grace=0.5)

    @bus.task("mp:echo")
    async def echo(ctx: TaskContext, text: str) -> str:
        _log("ran", ctx.task_id)
        await ctx.progress(50, text)
        return text

    @bus.task("mp:count")
    async def count(ctx: TaskContext) -> None:
        _log("ran", ctx.task_id)

    @bus.task("mp:limited", concurrency=2)
    async def limited(ctx: TaskContext) -> None:
        _log("start", ctx.task_id)
        await anyio.sleep(0.05)
        _log("end", ctx.task_id)

    @bus.task("mp:keyed", concurrency_key=lambda user: user)
    async def keyed(ctx: TaskContext, user: str) -> None:
        _log("kstart", user)  # the key in the id's place: the test counts per key
        await anyio.sleep(0.05)
        _log("kend", user)

    @bus.task("mp:rated", rate="5/minute")
    async def rated(ctx: TaskContext) -> None:
        _log("ran", ctx.task_id)

    @bus.task("mp:gated", retry=RetryPolicy(max_attempts=3))
    async def gated(ctx: TaskContext) -> str:
        _log("start", ctx.task_id)
        gate = anyio.Path(db + GATE_SUFFIX)
        while not await gate.exists():  # noqa: ASYNC110 - another process makes the file
            await anyio.sleep(0.01)
        _log("end", ctx.task_id)
        return "through"

    @bus.task("mp:shut", retry=RetryPolicy(max_attempts=2, base_delay=0.01))
    async def shut(ctx: TaskContext, text: str) -> str:
        """Fails (retryably) while the gate is shut: a dead letter until it opens."""
        _log("ran", ctx.task_id)
        if not await anyio.Path(db + GATE_SUFFIX).exists():
            raise RetryableError("the gate is shut")
        return text

    @bus.task("mp:join")
    async def join(ctx: TaskContext, text: str) -> list[Any]:
        _log("ran", ctx.task_id)
        return [text, *(parent.result for parent in ctx.parents)]

    @bus.task("mp:stuck", priority=10)
    async def stuck(ctx: TaskContext) -> None:
        _log("start", ctx.task_id)
        await anyio.sleep_forever()

    @bus.task("mp:ask")
    async def ask(ctx: TaskContext) -> str:
        _log("start", ctx.task_id)
        branch = await ctx.ask("Which branch?", model=Branch)
        _log("end", ctx.task_id)
        return branch.name

    return bus
