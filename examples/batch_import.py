"""Batches: import many files as one batch, follow it, survive one failure.

Submits six imports with `submit_batch`, prints batch-progress events (counts,
current operation, ETA from the average item time), and the final summary: one
bad file fails, the others complete.

Run: ``.venv/bin/python examples/batch_import.py``
"""

import anyio

from taskbus import BatchFinished, BatchProgress, RetryPolicy, TaskBus, TaskContext

bus = TaskBus(workers=2)


@bus.task("files:import", retry=RetryPolicy.never())
async def import_file(ctx: TaskContext, name: str) -> int:
    for step in range(1, 4):
        await anyio.sleep(0.03)
        await ctx.progress(current=step, total=3, message=f"importing {name}")
    if name.endswith(".bad"):
        raise ValueError(f"{name}: not a CSV file")
    return len(name)


def on_progress(event: BatchProgress) -> None:
    eta = (
        "?" if event.estimated_time_remaining is None else f"{event.estimated_time_remaining:.2f}s"
    )
    print(
        f"  {event.progress:5.1f}%  done {event.completed + event.failed}/{event.total}  eta {eta}"
    )


async def main() -> None:
    bus.on(BatchProgress, on_progress)
    bus.on(BatchFinished, lambda e: print(f"  batch finished: {e.completed} ok, {e.failed} failed"))
    names = ["a.csv", "b.csv", "c.bad", "d.csv", "e.csv", "f.csv"]
    async with bus:
        batch = await bus.submit_batch([("files:import", name) for name in names])
        summary = await batch.wait(timeout=10)
    print(f"summary: total={summary.total} completed={summary.completed} failed={summary.failed}")


if __name__ == "__main__":
    anyio.run(main)
