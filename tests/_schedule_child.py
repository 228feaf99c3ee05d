"""A process of the multi-process schedule test: it opens a bus on the shared store
(``sqlite:///<path>`` or a Redis prefix), registers the schedule as every process
of an app would at start-up, and runs until the deadline (epoch seconds)."""

from __future__ import annotations

import sys
import time

import anyio

from taskbus import TaskBus, TaskContext
from taskbus.stores import Store


def store_of(spec: str) -> Store | str:
    if spec.startswith("sqlite:"):
        return spec
    from taskbus.stores.redis import RedisStore

    url, _, prefix = spec.partition("|")
    return RedisStore(url, prefix=prefix)


async def main(spec: str, deadline: float) -> None:
    bus = TaskBus(store=store_of(spec), workers=2, shutdown_grace=0.5)

    @bus.task("mp:tick")
    async def tick(ctx: TaskContext) -> None:
        return None

    async with bus:
        await bus.schedule("mp:tick", every=0.2, misfire="all")
        await anyio.sleep(max(0.0, deadline - time.time()))


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], float(sys.argv[2]))
