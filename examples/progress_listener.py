"""Listening to events: sync and async listeners, and a per-task subscription.

Shows `bus.on(...)` with a sync listener (called in the publishing task: keep
it quick) and an async one (fed from its own bounded buffer, in its own task),
then ``async with bus.subscribe(task_id=...)``, whose iteration ends by itself
after the task's final event, and the replay of that final event to a late
subscriber. Prints the listeners' lines, the subscribed events, and
``late subscriber got: ['task-completed']``.

Run: ``.venv/bin/python examples/progress_listener.py``
"""

import anyio

from taskbus import TaskBus, TaskCompleted, TaskContext, TaskProgress, TaskQueued

bus = TaskBus()


@bus.task("files:copy", description="Copy files", estimated_duration=0.5)
async def copy_files(ctx: TaskContext, count: int) -> int:
    for done in range(1, count + 1):
        await anyio.sleep(0.02)
        await ctx.progress(current=done, total=count, message=f"copied {done}/{count}")
    return count


def on_queued(event: TaskQueued) -> None:
    """A sync listener: runs in the task that publishes, so it must not block."""
    print(f"[sync listener]  queued {event.task_type}, about {event.estimated_duration}s")


async def on_completed(event: TaskCompleted) -> None:
    """An async listener: it may await (I/O, a database) without slowing the bus."""
    await anyio.sleep(0.01)
    print(f"[async listener] {event.task_type} completed in {event.duration:.2f}s")


async def main() -> None:
    bus.on("task-queued", on_queued)  # by name ...
    bus.on(TaskCompleted, on_completed)  # ... or by event class
    async with bus:
        handle = await copy_files.submit(20)
        async with bus.subscribe(task_id=handle.id) as events:
            async for event in events:
                if isinstance(event, TaskProgress):
                    print(f"[subscription]   {event.name}: {event.progress:.0f}% {event.message}")
                else:
                    print(f"[subscription]   {event.name}")
        print("subscription ended after the final event")

        # Subscribing to a task that has already finished replays its final event.
        async with bus.subscribe(task_id=handle.id) as events:
            late = [event.name async for event in events]
        print(f"late subscriber got: {late}")


if __name__ == "__main__":
    anyio.run(main)
