"""Schedules: `bus.schedule(...)` stores a rule that fires a task type on an
interval or a cron expression, once per fire across every process on the store.

A heartbeat fires every second on a SQLite file (as a deployment would, so two
processes could share it); each fire is a normal task whose metadata names its
schedule. Registering the schedule again at start-up keeps one schedule and its
next fire time; a cron schedule in a time zone shows its next fire; pausing
stops a schedule, a bad cron expression is refused. Exits after three beats.

Run: ``.venv/bin/python examples/schedules.py`` (cron needs ``taskbus[cron]``)
"""

import tempfile
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import anyio

from taskbus import InvalidSchedule, TaskBus, TaskCompleted, TaskContext


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        bus = TaskBus(store=f"sqlite:///{Path(folder) / 'jobs.db'}")

        @bus.task("ops:heartbeat")
        async def heartbeat(ctx: TaskContext, service: str) -> str:
            return f"{service} is alive"

        beats: list[TaskCompleted] = []
        three = anyio.Event()

        def done(event: TaskCompleted) -> None:
            beats.append(event)
            if len(beats) == 3:
                three.set()

        bus.on(TaskCompleted, done)
        async with bus:
            first = await bus.schedule("ops:heartbeat", every=timedelta(seconds=1), input="api")
            again = await bus.schedule("ops:heartbeat", every=timedelta(seconds=1), input="api")
            print(f"registered twice, one schedule: {len(await bus.schedules())}")
            print(f"next fire kept: {again.next_fire_at == first.next_fire_at}")
            nightly = await bus.schedule(
                "ops:heartbeat", id="nightly", cron="30 2 * * *", tz="Europe/Paris", input="db"
            )
            assert nightly.next_fire_at is not None
            paris = nightly.next_fire_at.astimezone(ZoneInfo("Europe/Paris"))
            print(f"nightly next fires at {paris:%H:%M} in Paris")
            await bus.pause_schedule("nightly")
            with anyio.fail_after(10):
                await three.wait()
            for event in beats[:3]:
                task = await bus.get(event.task_id)
                print(f"beat: {event.result} (schedule {task.metadata['schedule_id']})")
            try:
                await bus.schedule("ops:heartbeat", cron="every night", input="x")
            except InvalidSchedule as exc:
                print(f"refused: {exc}")
            print(f"paused: {(await bus.get_schedule('nightly')).paused}")


if __name__ == "__main__":
    anyio.run(main)
