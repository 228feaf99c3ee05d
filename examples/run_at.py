"""Run at a time: `submit(..., run_at=datetime)` holds a task back until then.

A report is scheduled half a second ahead with a timezone-aware time (a naive
one is refused with a clear error, since "09:00" means nothing without a
zone), a time already past runs at once, and the queued task shows its
`not_before`. Prints when each ran relative to its time.

Run: ``.venv/bin/python examples/run_at.py``
"""

from datetime import UTC, datetime, timedelta

import anyio

from taskbus import InvalidSubmission, TaskBus, TaskContext

bus = TaskBus()


@bus.task("reports:build")
async def build(ctx: TaskContext, name: str) -> datetime:
    return datetime.now(UTC)


async def main() -> None:
    async with bus:
        at = datetime.now(UTC) + timedelta(seconds=0.5)
        later = await build.submit("weekly", run_at=at)
        now = await build.submit("overdue", run_at=at - timedelta(days=1))
        queued = await bus.get(later.id)
        print(f"weekly is {queued.state.value} until {queued.not_before:%H:%M:%S.%f}")
        ran_overdue = await now.result(timeout=5)
        print(f"overdue ran at once: {ran_overdue < at}")
        ran_weekly = await later.result(timeout=5)
        print(f"weekly ran {(ran_weekly - at).total_seconds() * 1000:.0f} ms after its time")
        print(f"weekly ran no sooner than asked: {ran_weekly >= at}")
        try:
            await build.submit("naive", run_at=datetime(2030, 1, 1, 9, 0))
        except InvalidSubmission as exc:
            print(f"refused: {exc}")


if __name__ == "__main__":
    anyio.run(main)
