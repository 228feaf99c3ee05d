"""Events logged by several processes reach each one's listeners in id order,
each once: `OrderedDelivery`, and two SQLite stores on one file."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import anyio
import pytest

from taskbus import Event, TaskProgress
from taskbus._events import build_trusted
from taskbus.stores._sqlite_events import OrderedDelivery
from taskbus.stores.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


def numbered(*ids: int) -> list[Event]:
    events: list[Event] = []
    for number in ids:
        event = progress(f"t{number}")
        event.__dict__["id"] = str(number)
        events.append(event)
    return events


def progress(task_id: str) -> TaskProgress:
    return build_trusted(
        TaskProgress,
        {
            "task_id": task_id,
            "task_type": "t",
            "owner": None,
            "timestamp": 1.0,
            "progress": 1.0,
            "current": None,
            "total": None,
            "message": None,
            "estimated_time_remaining": None,
        },
    )


def _note(log: list[int], event: Event) -> None:
    log.append(int(event.id or 0))


def test_delivery_waits_for_a_gap_and_skips_only_below_what_a_read_must_have_seen() -> None:
    delivered: list[str | None] = []
    delivery = OrderedDelivery()
    delivery.deliver = lambda event: delivered.append(event.id)
    delivery.next_id = 5
    delivery.offer(numbered(5, 6, 9))  # 7 and 8: another process's, not read yet
    assert delivered == ["5", "6"] and delivery.gap_end == 9
    delivery.offer(numbered(12))  # a later commit of this process opens a second gap
    delivery.offer(numbered(7, 8))  # the read that began once 9 was in: it fills the gap
    assert delivered == ["5", "6", "7", "8", "9"] and delivery.gap_end == 12
    # A read that began once 9 was in could not see 10 and 11 (committed after it
    # began, before 12): no skip past them.
    delivery.skip_missing(9)
    assert delivery.next_id == 10 and delivered[-1] == "9"
    delivery.skip_missing(12)  # a read that began once 12 was in found nothing below
    assert delivered[-1] == "12" and delivery.next_id == 13
    delivery.offer(numbered(4, 6, 12))  # already delivered: never again
    assert delivered == ["5", "6", "7", "8", "9", "12"]


async def test_two_stores_on_one_file_each_hear_every_event_once_in_order(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    stores = [SqliteStore(path), SqliteStore(path)]
    heard: list[list[int]] = [[], []]
    for store, log in zip(stores, heard, strict=True):
        store.deliver_events(partial(_note, log))
        await store.open()
    try:
        async with anyio.create_task_group() as tg:
            for store in stores:
                tg.start_soon(store.follow)
            for round_ in range(300):  # both log at once, in many small commits
                for store in stores:
                    store.log_event(progress(f"r{round_}"))
                if round_ % 10 == 0:
                    await anyio.sleep(0.001)
            for store in stores:
                await store.flush()
            total = 2 * 300
            with anyio.fail_after(10):
                while min(len(log) for log in heard) < total:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    finally:
        for store in stores:
            await store.close()
    for log in heard:
        assert log == list(range(1, total + 1))
