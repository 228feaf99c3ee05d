"""Task types shared by the HTTP tests."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import BaseModel

from taskbus import TaskBus, TaskContext


class Order(BaseModel):
    item: str
    quantity: int


class Gates:
    """Events the tests set to let a gated task go on."""

    def __init__(self) -> None:
        self.release = anyio.Event()


def register(bus: TaskBus, gates: Gates | None = None) -> Gates:
    gates = gates or Gates()

    @bus.task("shop:order", description="Place an order.", timeout=30, concurrency=4)
    async def order(data: Order) -> dict[str, object]:
        return {"item": data.item, "total": data.quantity * 2}

    @bus.task("noop")
    async def noop() -> None:
        return None

    @bus.task("echo")
    async def echo(value: Any) -> Any:
        return value

    @bus.task("steps")
    async def steps(ctx: TaskContext) -> str:
        await gates.release.wait()
        for percent in (25, 50, 75):
            await ctx.progress(percent, f"at {percent}")
            await anyio.sleep(0.01)
        return "done"

    @bus.task("gated")
    async def gated() -> str:
        await gates.release.wait()
        return "released"

    return gates
