"""Three OS processes share one store (a SQLite file, a Redis prefix) and one
`every` schedule, each registering it at start-up and each free to fire it: every
fire time makes exactly one task (none twice, none skipped)."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import anyio
import pytest
from _redis import URL, prefix_for

from taskbus.stores import Store, TaskQuery
from taskbus.stores.redis import RedisStore
from taskbus.stores.sqlite import SqliteStore

CHILD = Path(__file__).with_name("_schedule_child.py")
RUN_FOR = 3.0  # seconds the three processes run together (at least)


async def fired_for(store: Store) -> list[float]:
    await store.open()
    try:
        records = await store.list(TaskQuery(limit=10_000))
    finally:
        await store.close()
    metadata = [r.metadata or {} for r in records]
    return sorted(
        datetime.fromisoformat(m["scheduled_for"]).timestamp()
        for m in metadata
        if m.get("schedule_id") == "mp:tick"
    )


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_three_processes_fire_each_time_of_a_schedule_exactly_once(
    kind: str, tmp_path: Path
) -> None:
    if kind == "sqlite":
        spec = f"sqlite:///{tmp_path / 'jobs.db'}"
        store: Store = SqliteStore(tmp_path / "jobs.db")
    else:
        prefix = prefix_for(tmp_path)
        spec = f"{URL}|{prefix}"
        store = RedisStore(URL, prefix=prefix)
    deadline = time.time() + RUN_FOR + 2.0  # the processes' start-up counted in
    children = [
        subprocess.Popen([sys.executable, str(CHILD), spec, str(deadline)]) for _ in range(3)
    ]
    try:
        codes = [child.wait(timeout=RUN_FOR + 30) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    assert codes == [0, 0, 0]
    times = anyio.run(fired_for, store, backend="asyncio")
    assert len(times) >= 5, times
    assert len(set(times)) == len(times), "a fire time made two tasks"
    steps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert set(steps) == {0.2}, f"a fire time was skipped: {steps}"
