"""Worker processes on Redis: one app submits, two `taskbus worker` processes run.

The app's bus has ``workers=0``: it submits, reads and listens, and runs
nothing. Two worker processes (``taskbus worker --app redis_workers:make_bus``)
share its Redis store: they claim the tasks with leases, run them, and every
process hears every event. A second submit with the same idempotency key, made
while the first task still runs, returns that task. Prints each task's outcome
and which process ran it, then checks that each ran once.

Needs a Redis server: ``TASKBUS_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``).
Its keys start with a prefix of their own, removed at the end.

Run: ``.venv/bin/python examples/redis_workers.py``
"""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import redis

from taskbus import TaskBus, TaskContext, TaskEvent
from taskbus.stores.redis import RedisStore

HERE = Path(__file__).parent
URL = os.environ.get("TASKBUS_REDIS_URL", "redis://127.0.0.1:6379/0")


def make_bus() -> TaskBus:
    """The app: the same in the submitting process and in each worker process."""
    prefix = os.environ["TASKBUS_EXAMPLE_PREFIX"]
    bus = TaskBus(store=RedisStore(URL, prefix=prefix), workers=2, shutdown_grace=1)

    @bus.task("thumbs:make")
    async def make(ctx: TaskContext, photo: str) -> str:
        await ctx.progress(50, "resizing")
        await anyio.sleep(0.1)
        return f"{photo} resized by pid {os.getpid()}"

    return bus


def start_worker() -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "taskbus.integrations.cli", "worker", "--app"]
    worker = subprocess.Popen(
        [*command, "redis_workers:make_bus", "--log-level", "WARNING"],
        cwd=HERE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    for line in worker.stdout:  # it says so once it claims
        if "SIGTERM or Ctrl-C to stop" in line:
            return worker
    raise RuntimeError("the worker did not start")


async def main() -> None:
    os.environ["TASKBUS_EXAMPLE_PREFIX"] = prefix = f"taskbus-example:{uuid.uuid4().hex[:8]}:"
    workers = [start_worker(), start_worker()]
    print(f"workers ready: {len(workers)}")
    app = make_bus()
    app.executor.resize(0)  # this process only submits and listens
    finals: list[TaskEvent] = []
    app.on("task-completed", finals.append)
    try:
        async with app:
            photos = [f"photo-{n}.jpg" for n in range(1, 7)]
            handles = [await app.submit("thumbs:make", photo) for photo in photos]
            again = await app.submit("thumbs:make", "photo-1.jpg", key="photo-1")
            same = await app.submit("thumbs:make", "photo-1.jpg", key="photo-1")
            print(f"same key, same task: {same.id == again.id}")
            for photo, handle in zip(photos, handles, strict=True):
                print(f"{photo}: {await handle.result(timeout=20)}")
            await again.result(timeout=20)
            with anyio.fail_after(10):
                while len(finals) < len(handles) + 1:  # noqa: ASYNC110 - other processes' events
                    await anyio.sleep(0.01)
            ran = [event.task_id for event in finals]
            print(f"every task ran once: {sorted(ran) == sorted({*ran})}")
            print(f"completed {len(ran)} of {len(handles) + 1}")
    finally:
        for worker in workers:
            worker.terminate()
            worker.wait(10)
        client = redis.Redis.from_url(URL)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.unlink(key)
        client.close()


if __name__ == "__main__":
    anyio.run(main)
