"""Cancelling: a queued task never starts; a running one stops at its next check.

Shows `bus.cancel(id, reason=...)` on a queued task and on a running thread
handler (a plain ``def``, which calls ``ctx.progress(...)`` and
``ctx.raise_if_cancelled()`` without await), `TaskCancelledError` from
`handle.result()`, and that cancelling a finished task returns False. Prints
the state and attempts of each task and the reason given.

Run: ``.venv/bin/python examples/cancel.py``
"""

import time

import anyio

from taskbus import TaskBus, TaskCancelledError, TaskContext, TaskProgress

bus = TaskBus(workers=1)  # one worker, so a second task waits in the queue


@bus.task("media:encode", description="Encode a video (blocking code on a thread)")
def encode(ctx: TaskContext, frames: int) -> int:
    for frame in range(1, frames + 1):
        ctx.raise_if_cancelled()  # stops here soon after bus.cancel(...)
        time.sleep(0.02)  # blocking work: fine, this runs on a worker thread
        ctx.progress(current=frame, total=frames, message=f"frame {frame}/{frames}")
    return frames


async def main() -> None:
    async with bus:
        running = await encode.submit(200)
        queued = await encode.submit(50)

        # Wait, by events, until the first task is a quarter done.
        async with bus.subscribe(task_id=running.id, events=[TaskProgress]) as events:
            async for event in events:
                if event.progress >= 25:
                    break

        print("cancel queued:", await bus.cancel(queued.id, reason="no longer needed"))
        print("cancel running:", await bus.cancel(running.id, reason="user pressed stop"))
        try:
            await running.result(timeout=5)
        except TaskCancelledError as exc:
            print(f"result() raised TaskCancelledError: {exc.reason}")

        for name, handle in (("running", running), ("queued", queued)):
            snap = await handle.get()
            progress = f"{snap.progress:.0f}%" if snap.progress is not None else "-"
            print(
                f"{name} task: {snap.state.value}, attempts={snap.attempts}, "
                f"progress={progress}, reason: {snap.cancel_reason}"
            )

        done = await encode.submit(3)
        await done.result(timeout=5)
        print("cancel finished:", await bus.cancel(done.id))  # False: already final


if __name__ == "__main__":
    anyio.run(main)
