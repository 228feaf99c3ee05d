"""Event ids: numbered as published, durable on SQLite, and resumable with
``events_after`` and ``subscribe(after=)`` on every store, across restarts where
the store survives them."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import anyio
import pytest

from taskbus import (
    Event,
    InvalidSubmission,
    TaskBus,
    TaskCompleted,
    TaskContext,
    TaskEvent,
    event_order,
)
from taskbus.stores.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

MakeBus = Callable[..., TaskBus]


def register(bus: TaskBus) -> None:
    @bus.task("echo")
    async def echo(ctx: TaskContext, text: str) -> str:
        await ctx.progress(50, text)
        return text


def ids(events: list[Any]) -> list[int]:
    return [event_order(event.id)[0] for event in events]


def kinds(events: list[Any]) -> list[tuple[str, str]]:
    return [(event.task_id, event.name) for event in events]


async def run(bus: TaskBus, *texts: str) -> list[str]:
    handles = [await bus.submit("echo", text) for text in texts]
    for handle in handles:
        await handle.result(timeout=10)
    return [handle.id for handle in handles]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_every_published_event_has_an_increasing_id_and_can_be_read_back(
    make_bus: MakeBus, tmp_path: Path, store: str
) -> None:
    bus = make_bus(store=None if store == "memory" else f"sqlite:///{tmp_path / 'log.db'}")
    register(bus)
    heard: list[Event] = []
    bus.on("*", heard.append)
    async with bus:
        await run(bus, "a", "b")
        await bus.flush_events()
        logged = await bus.events_after(None)
    assert all(event.id is not None for event in heard)
    assert ids(heard) == sorted(ids(heard)) and len(set(ids(heard))) == len(heard)
    assert [(e.id, e.name) for e in logged] == [(e.id, e.name) for e in heard]
    assert {e.name for e in heard} >= {"task-queued", "task-started", "task-completed"}


async def test_sqlite_ids_survive_a_restart_and_the_log_replays_what_was_missed(
    make_bus: MakeBus, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    bus = make_bus(store=url)
    register(bus)
    heard: list[Event] = []
    async with bus:
        bus.on("*", heard.append)
        await run(bus, "seen")
        await bus.flush_events()
        last_seen = heard[-1].id
        bus.off("*", heard.append)
        missed_tasks = await run(bus, "missed-1", "missed-2")
    assert last_seen is not None

    again = make_bus(store=url)
    register(again)
    async with again:
        missed = await again.events_after(last_seen)
        assert {e.task_id for e in missed if isinstance(e, TaskEvent)} == set(missed_tasks)
        assert ids(missed) == list(range(int(last_seen) + 1, int(last_seen) + 1 + len(missed)))
        assert [e.name for e in missed if getattr(e, "task_id", None) == missed_tasks[0]] == [
            "task-queued",
            "task-started",
            "task-progress",
            "task-completed",
        ]
        later = await run(again, "after-restart")
        await again.flush_events()
        newest = await again.events_after(missed[-1].id)
    assert {e.task_id for e in newest if isinstance(e, TaskEvent)} == set(later)
    assert ids(newest)[0] == ids(missed)[-1] + 1  # numbering goes on, no id reused


async def test_subscribe_after_replays_then_goes_live_without_duplicates(
    make_bus: MakeBus, tmp_path: Path, anyio_backend: str
) -> None:
    bus = make_bus(store=f"sqlite:///{tmp_path / 'log.db'}")
    register(bus)
    async with bus:
        first = await run(bus, "one")
        await bus.flush_events()
        start = (await bus.events_after(None))[0].id  # task-queued of "one"
        async with bus.subscribe(after=start) as stream:
            second = await run(bus, "two")
            seen: list[Any] = []
            with anyio.fail_after(10):
                async for event in stream:
                    seen.append(event)
                    if event.name == "task-completed" and event.task_id == second[0]:
                        break
    assert ids(seen) == sorted(set(ids(seen)))  # in order, each once
    assert ids(seen)[0] == int(start or 0) + 1
    assert kinds(seen) == [
        (first[0], "task-started"),
        (first[0], "task-progress"),
        (first[0], "task-completed"),
        (second[0], "task-queued"),
        (second[0], "task-started"),
        (second[0], "task-progress"),
        (second[0], "task-completed"),
    ]


async def test_memory_subscribe_after_replays_from_the_bus_history(make_bus: MakeBus) -> None:
    bus = make_bus(event_history=100)
    register(bus)
    heard: list[Event] = []
    bus.on("*", heard.append)
    async with bus:
        done = await run(bus, "x")
        async with bus.subscribe(after=heard[0].id, task_id=done[0]) as stream:
            replayed = [event async for event in stream]
    assert [e.name for e in replayed] == ["task-started", "task-progress", "task-completed"]


async def test_the_final_event_is_logged_in_the_commit_of_the_final_state(
    make_bus: MakeBus, tmp_path: Path
) -> None:
    path = tmp_path / "log.db"
    bus = make_bus(store=f"sqlite:///{path}")
    register(bus)
    async with bus:
        await run(bus, *(f"t{i}" for i in range(30)))
    with closing(sqlite3.connect(path)) as conn:
        final_rows = {
            row[0] for row in conn.execute("SELECT id FROM tasks WHERE state = 'completed'")
        }
        final_events = {
            row[0]
            for row in conn.execute("SELECT task_id FROM events WHERE name = 'task-completed'")
        }
    assert len(final_rows) == 30
    assert final_events == final_rows


async def test_the_sqlite_log_keeps_the_newest_events_and_never_reuses_an_id(
    tmp_path: Path, make_bus: MakeBus
) -> None:
    store = SqliteStore(tmp_path / "log.db", keep_events=20)
    bus = make_bus(store=store)
    register(bus)
    async with bus:
        await run(bus, *(f"t{i}" for i in range(30)))  # 4 events each
        await bus.flush_events()
        kept = await bus.events_after(None, limit=1000)
        newest = ids(kept)[-1]
    assert newest >= 120
    assert 20 <= len(kept) <= 22  # trimmed in steps of a tenth
    assert ids(kept) == list(range(newest - len(kept) + 1, newest + 1))
    with closing(sqlite3.connect(tmp_path / "log.db")) as conn:
        conn.execute("DELETE FROM events")  # even an emptied log goes on numbering
        conn.commit()
    again = make_bus(store=SqliteStore(tmp_path / "log.db", keep_events=20))
    register(again)
    async with again:
        await run(again, "more")
        await again.flush_events()
        assert ids(await again.events_after(None))[0] == newest + 1


async def test_a_result_json_does_not_know_is_logged_as_its_repr(
    make_bus: MakeBus, tmp_path: Path
) -> None:
    bus = make_bus(store=f"sqlite:///{tmp_path / 'log.db'}")

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    @bus.task("odd")
    async def odd() -> Any:
        return Opaque()

    async with bus:
        handle = await bus.submit("odd")
        await handle.result(timeout=10)
        await bus.flush_events()
        logged = await bus.events_after(None)
    completed = [e for e in logged if isinstance(e, TaskCompleted)]
    assert len(completed) == 1 and "opaque" in str(completed[0].result)


@pytest.mark.parametrize("bad", ["", "x", "-1", "1-", "9" * 30, "1.5", "\u0663"])
async def test_a_bad_after_is_refused_at_the_call(make_bus: MakeBus, bad: str) -> None:
    bus = make_bus()
    async with bus:
        with pytest.raises(InvalidSubmission, match="event id"):
            await bus.events_after(bad)
        with pytest.raises(InvalidSubmission, match="event id"):
            async with bus.subscribe(after=bad):
                pass


def test_event_order_reads_counters_and_stream_ids() -> None:
    assert event_order("41") == (41, 0)
    assert event_order("1700000000000-3") == (1700000000000, 3)
    assert event_order("9") < event_order("10") < event_order("10-1")
    for bad in ("", "a", "1-2-3", "-", "1e3", "1" * 21):
        with pytest.raises(ValueError, match="not an event id"):
            event_order(bad)
