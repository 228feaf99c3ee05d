"""Input required: what an answer costs, from `respond` to the task's result.

A task asks one question (``ctx.ask``) and waits, holding no worker; the
benchmark answers it with ``bus.respond`` and times until ``await
handle.result()`` returns: the answer's store step, the claim, and the
handler's run again from the top, where ``ctx.ask`` returns the answer. One
task at a time, 500 of them (50 with ``--quick``), after 20 warm-up tasks,
on the memory store and on a SQLite file.

The reference, on the same bus and store a moment before: a no-op task
submitted and awaited the same way (``submit`` to ``result``), which is what a
new task costs there. ``ratio_p50`` = respond->result p50 / reference p50.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import anyio
from _reference import emit, parser, percentile, rounded

from taskbus import TaskBus, TaskContext, TaskInputRequired

WARMUP = 20


def make_bus(store: str | None) -> TaskBus:
    bus = TaskBus(store=store, workers=10)

    @bus.task("bench:ask")
    async def ask(ctx: TaskContext) -> str:
        return await ctx.ask("Which branch?")

    @bus.task("bench:noop")
    async def noop(ctx: TaskContext) -> None:
        return None

    return bus


async def measure(store: str | None, samples: int) -> tuple[list[float], list[float]]:
    """(respond->result seconds, reference submit->result seconds), one task at a time."""
    bus = make_bus(store)
    asked: dict[str, anyio.Event] = {}

    def on_asked(event: TaskInputRequired) -> None:
        waiter = asked.get(event.task_id)
        if waiter is not None:
            waiter.set()

    bus.on(TaskInputRequired, on_asked)
    answered: list[float] = []
    plain: list[float] = []
    perf_counter = time.perf_counter
    async with bus:
        for index in range(WARMUP + samples):
            started = perf_counter()
            noop = await bus.submit("bench:noop")
            await noop.result(timeout=30)
            reference = perf_counter() - started

            handle = await bus.submit("bench:ask")
            waiter = asked[handle.id] = anyio.Event()
            if (await bus.get(handle.id)).question is None:  # not asked yet: wait for it
                with anyio.fail_after(30):
                    await waiter.wait()
            started = perf_counter()
            await bus.respond(handle.id, "main")
            assert await handle.result(timeout=30) == "main"
            if index >= WARMUP:
                answered.append(perf_counter() - started)
                plain.append(reference)
            asked.pop(handle.id, None)
    return answered, plain


def _line(store: str, answered: list[float], plain: list[float]) -> dict[str, object]:
    p50, p99 = percentile(answered, 50) * 1e6, percentile(answered, 99) * 1e6
    ref50, ref99 = percentile(plain, 50) * 1e6, percentile(plain, 99) * 1e6
    return {
        "bench": "input_required",
        "case": "respond-to-result",
        "store": store,
        "tasks": len(answered),
        "p50_us": rounded(p50, 1),
        "p99_us": rounded(p99, 1),
        "reference_p50_us": rounded(ref50, 1),
        "reference_p99_us": rounded(ref99, 1),
        "ratio_p50": rounded(p50 / ref50),
        "ratio_p99": rounded(p99 / ref99),
        "meets_target": None,
    }


async def main(samples: int) -> None:
    emit(_line("memory", *await measure(None, samples)))
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        emit(_line("sqlite", *await measure(url, samples)))


if __name__ == "__main__":
    arguments = parser(__doc__).parse_args()
    anyio.run(main, 50 if arguments.quick else 500)
