"""Durable jobs: tasks in a SQLite file outlive the bus that took them.

The first bus takes three report jobs, runs one, and closes with the other two
still queued (one worker, a short grace). A second bus on the same file picks
them up, runs them in priority order, and a repeated submit with the same
idempotency key returns the finished job instead of a new one. Prints what each
bus did and the typed result read back from the file.

Run: ``.venv/bin/python examples/durable_jobs.py``
"""

import tempfile
from pathlib import Path

import anyio
from pydantic import BaseModel

from taskbus import TaskBus, TaskContext


class Report(BaseModel):
    year: int


class Summary(BaseModel):
    year: int
    rows: int


def make_bus(path: Path) -> TaskBus:
    bus = TaskBus(store=f"sqlite:///{path}", workers=1, shutdown_grace=0)

    @bus.task("reports:build", key_ttl=3600)
    async def build(ctx: TaskContext, report: Report) -> Summary:
        await anyio.sleep(0.05)
        return Summary(year=report.year, rows=report.year % 100)

    return bus


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "jobs.db"

        async with make_bus(path) as bus:
            first = await bus.submit("reports:build", {"year": 2023}, key="report-2023")
            later = [
                await bus.submit("reports:build", {"year": year}, priority=priority)
                for year, priority in ((2024, 3), (2025, 9))
            ]
            await first.result(timeout=5)
            print("first bus finished 2023 and closed with", len(later), "jobs queued")

        async with make_bus(path) as bus:
            for handle in later:
                summary = await bus.result(handle.id, timeout=5)
                print(f"second bus ran {summary.year}: {type(summary).__name__}")
            again = await bus.submit("reports:build", {"year": 2023}, key="report-2023")
            print("same key returns the finished job:", again.id == first.id)
            print("typed result from the file:", await again.result(timeout=5))


if __name__ == "__main__":
    anyio.run(main)
