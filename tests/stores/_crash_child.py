"""The child process of `test_crash.py`: a SQLite-backed bus that gets SIGKILLed.

``python _crash_child.py DB BACKEND`` opens ``TaskBus(store="sqlite:///DB",
workers=4)``, registers `TASK_TYPE`, submits `TASK_COUNT` tasks one at a time
and prints, one line each, flushed (the parent kills it on one of them):

- ``submitting`` before the first submit;
- ``ack <task id> <input>`` after each `submit` returned (the task is durable);
- ``submitted <count>`` after the last one;
- ``done <task id>`` from a ``task-completed`` listener (the event comes only
  once the final row is committed, so a ``done`` task is completed on disk);
- ``all-done`` once every task completed; it then waits to be killed (at most
  `LINGER` seconds, so an orphan never outlives a broken test run).

The module also holds what the parent shares with it: the task type, its
handler, and how to register it.
"""

from __future__ import annotations

import sys

import anyio

from taskbus import RetryPolicy, TaskBus, TaskCompleted, TaskContext

TASK_TYPE = "crash:echo"
TASK_COUNT = 1000
WORKERS = 4
HANDLER_SECONDS = 0.001
#: The last `TAIL` tasks take `TAIL_SECONDS` each, so tasks are still running on disk
#: right after the last submit (the workers may otherwise have caught up already).
TAIL = 40
TAIL_SECONDS = 0.025
MAX_ATTEMPTS = 3
LINGER = 30.0


def register(bus: TaskBus, ran: list[str] | None = None) -> None:
    """Register `TASK_TYPE`: sleep a few ms (the tail longer), return the input; note
    each run in `ran`."""

    async def echo(ctx: TaskContext, value: int) -> int:
        if ran is not None:
            ran.append(ctx.task_id)
        await anyio.sleep(TAIL_SECONDS if value >= TASK_COUNT - TAIL else HANDLER_SECONDS)
        return value

    bus.task(TASK_TYPE, retry=RetryPolicy(max_attempts=MAX_ATTEMPTS, base_delay=0.01))(echo)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(db: str) -> None:
    bus = TaskBus(store=f"sqlite:///{db}", workers=WORKERS)
    register(bus)
    all_done = anyio.Event()
    completed = 0

    def on_completed(event: TaskCompleted) -> None:
        nonlocal completed
        say(f"done {event.task_id}")
        completed += 1
        if completed == TASK_COUNT:
            all_done.set()

    bus.on("task-completed", on_completed)
    async with bus:
        say("submitting")
        for value in range(TASK_COUNT):
            handle = await bus.submit(TASK_TYPE, value)
            say(f"ack {handle.id} {value}")
        say(f"submitted {TASK_COUNT}")
        await all_done.wait()
        say("all-done")
        await anyio.sleep(LINGER)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], backend=sys.argv[2])
