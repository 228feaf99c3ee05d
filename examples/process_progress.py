"""CPU-bound work in a worker process that still reports progress and can be cancelled.

A ``run_in="process"`` handler that takes a `ProcessContext` calls
``ctx.progress(...)`` and ``ctx.raise_if_cancelled()`` without await, as a thread
handler would: its reports cross back to the bus (debounced there, like any
other task's) and a cancel reaches it in its process. Prints the first and last
progress of a task that completes, then cancels a second one part-way: its next
``ctx.raise_if_cancelled()`` raises, and `result()` raises `TaskCancelledError`.

Run: ``.venv/bin/python examples/process_progress.py``
"""

import anyio

from taskbus import ProcessContext, TaskBus, TaskCancelledError, TaskProgress

bus = TaskBus()


# A plain module-level function (registered below, not decorated): the worker
# process imports it by name.
def sum_squares(ctx: ProcessContext, limit: int) -> int:
    total = 0
    chunk = limit // 20
    for n in range(limit):
        if n % chunk == 0:
            ctx.raise_if_cancelled()  # a cancel in the bus raises here, in this process
            ctx.progress(current=n, total=limit, message=f"{n:,} of {limit:,}")
        total += n * n
    ctx.progress(current=limit, total=limit, message="done")
    return total


squares = bus.task("math:sum-squares", run_in="process", description="Sum squares")(sum_squares)


async def main() -> None:
    async with bus:
        handle = await squares.submit(2_000_000)
        async with bus.subscribe(task_id=handle.id, events=[TaskProgress]) as events:
            percents = [event.progress async for event in events]
        print(f"sum of squares below 2,000,000: {await handle.result(timeout=30):,}")
        print(f"first report {percents[0]:.0f}%, last report {percents[-1]:.0f}%")
        print("reports in order:", percents == sorted(percents))

        big = await squares.submit(100_000_000)  # a minute of work: cancelled early
        async with bus.subscribe(task_id=big.id, events=[TaskProgress]) as events:
            async for event in events:
                if event.progress > 0:
                    break
        print("cancel running:", await big.cancel("user pressed stop"))
        try:
            await big.result(timeout=10)
        except TaskCancelledError as exc:
            print(f"result() raised TaskCancelledError: {exc.reason}")
        print("cancelled task:", (await big.get()).state.value)


if __name__ == "__main__":
    anyio.run(main)
