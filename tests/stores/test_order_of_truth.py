"""Order of truth: a final state is durable before anyone hears of it.

A listener of every final event, and every waiter, reads the SQLite file through
a connection of its own at the moment it hears: the row must already say what
the event says.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import anyio
import pytest

from taskbus import (
    RetryPolicy,
    TaskBus,
    TaskCancelled,
    TaskCompleted,
    TaskContext,
    TaskEvent,
    TaskFailed,
    TaskState,
)
from taskbus.stores.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


def stored_state(db: Path, task_id: str) -> str | None:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT state FROM tasks WHERE id = ?", (task_id,)).fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


async def test_every_final_event_and_waiter_finds_its_state_already_on_disk(
    tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.db"
    bus = TaskBus(store=SqliteStore(db), workers=4, shutdown_grace=1)
    release = anyio.Event()

    @bus.task("truth:ok")
    async def ok(ctx: TaskContext, n: int) -> int:
        return n

    @bus.task("truth:bad", retry=RetryPolicy.never())
    async def bad(ctx: TaskContext) -> None:
        raise ValueError("no")

    @bus.task("truth:slow")
    async def slow(ctx: TaskContext) -> None:
        await release.wait()

    seen: list[tuple[str, str, str | None]] = []

    def on_final(event: TaskEvent) -> None:
        seen.append((event.task_id, event.name, stored_state(db, event.task_id)))

    for kind in (TaskCompleted, TaskFailed, TaskCancelled):
        bus.on(kind, on_final)
    async with bus:
        handles = [await bus.submit("truth:ok", n) for n in range(20)]
        failing = await bus.submit("truth:bad")
        slow_one = await bus.submit("truth:slow")
        queued = await bus.submit("truth:ok", 99, delay=3600)
        for handle in handles:
            assert await handle.result(timeout=5) in range(20)
            assert stored_state(db, handle.id) == "completed", "a waiter woke before the commit"
        snap = await failing.wait(timeout=5)
        assert snap.state is TaskState.FAILED and stored_state(db, failing.id) == "failed"
        assert await bus.cancel(slow_one.id, reason="stop")
        assert stored_state(db, slow_one.id) == "cancelled"
        assert await bus.cancel(queued.id)
        assert stored_state(db, queued.id) == "cancelled"
        release.set()
    assert len(seen) == 23  # 20 completed, 1 failed, 2 cancelled
    for task_id, name, state in seen:
        assert name == f"task-{state}", f"{name} of {task_id} published while the row said {state}"
