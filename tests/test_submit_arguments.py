"""Every argument a caller passes is checked at the call: precise errors, nothing stored."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskbus import InvalidSubmission, TaskBus, TaskCompleted, TaskContext, TaskState
from taskbus.stores.sqlite import SqliteStore
from taskbus.testing import EventRecorder, FakeClock

pytestmark = pytest.mark.anyio
MakeBus = Callable[..., TaskBus]

SURROGATE = "k\ud800"


def with_echo(bus: TaskBus) -> TaskBus:
    @bus.task("t:echo")
    async def echo(ctx: TaskContext, n: int) -> int:
        await ctx.progress(50, "half")
        return n

    return bus


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"delay": math.nan}, "delay"),
        ({"delay": math.inf}, "delay"),
        ({"delay": -math.inf}, "delay"),
        ({"delay": 1e300}, "delay"),  # past year 9999
        ({"delay": ""}, "delay"),
        ({"delay": False}, "delay"),
        ({"delay": "5"}, "delay"),
        ({"run_at": datetime(2030, 1, 1)}, "timezone-aware"),  # naive
        ({"run_at": "2030-01-01T00:00:00+00:00"}, "run_at must be a datetime"),
        ({"run_at": 1_900_000_000.0}, "run_at must be a datetime"),
        ({"run_at": datetime(9999, 1, 1, tzinfo=UTC)}, "within 100 years"),
        ({"run_at": datetime.now(UTC), "delay": 1.0}, "delay or run_at, not both"),
        ({"key": -5}, "key"),
        ({"key": b"x"}, "key"),
        ({"key": SURROGATE}, "key"),
        ({"key": "k" * 5000}, "key"),
        ({"owner": SURROGATE}, "owner"),
        ({"owner": 7}, "owner"),
        ({"priority": True}, "priority"),
        ({"priority": 11}, "priority"),
        ({"metadata": {"note": SURROGATE}}, "metadata"),
        ({"metadata": {"n": math.nan}}, "metadata"),
    ],
    ids=lambda value: repr(value)[:40],
)
async def test_a_bad_submit_argument_raises_naming_it_and_stores_nothing(
    make_bus: MakeBus, tmp_path: Path, arguments: dict[str, Any], complaint: str
) -> None:
    async with with_echo(make_bus(store=SqliteStore(tmp_path / "jobs.db"))) as bus:
        with pytest.raises(InvalidSubmission, match=complaint):
            await bus.submit("t:echo", 1, **arguments)
        assert await bus.list() == []
        # ... and the bus goes on working for everyone.
        handle = await bus.submit("t:echo", 2, key="fine", owner="alice", delay=0)
        assert await handle.result(timeout=5) == 2


async def test_a_delay_of_zero_runs_at_once_and_a_float_delay_is_kept(make_bus: MakeBus) -> None:
    async with with_echo(make_bus()) as bus:
        now = await bus.submit("t:echo", 1, delay=0)
        assert await now.result(timeout=5) == 1
        later = await bus.submit("t:echo", 1, delay=3600.5)
        snap = await bus.get(later.id)
        assert snap.state is TaskState.QUEUED and snap.not_before is not None
        assert len(await bus.list()) == 2  # every listed task can be read


async def test_a_bad_cancel_reason_or_list_filter_raises_naming_it(make_bus: MakeBus) -> None:
    async with with_echo(make_bus()) as bus:
        handle = await bus.submit("t:echo", 1, delay=60)
        with pytest.raises(InvalidSubmission, match="reason"):
            await bus.cancel(handle.id, reason=SURROGATE)
        with pytest.raises(InvalidSubmission, match="owner"):
            await bus.list(owner=SURROGATE)
        with pytest.raises(InvalidSubmission, match="offset"):
            await bus.list(offset=2**63)
        with pytest.raises(InvalidSubmission, match="created_after"):
            await bus.list(created_after=math.nan)
        assert await bus.cancel(handle.id, reason="fine")


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"current": 10**20, "total": 10**21}, "current"),
        ({"current": 1, "total": -1}, "total"),
        ({"message": SURROGATE}, "message"),
        ({"message": "m" * 5000}, "message"),
        ({"percent": math.nan}, "progress"),
        ({"percent": 101}, "progress"),
    ],
    ids=lambda value: repr(value)[:40],
)
async def test_bad_progress_raises_in_the_handler_and_the_store_lives_on(
    make_bus: MakeBus, tmp_path: Path, arguments: dict[str, Any], complaint: str
) -> None:
    raised: list[str] = []
    bus = make_bus(store=SqliteStore(tmp_path / "jobs.db"))

    @bus.task("t:report")
    async def report(ctx: TaskContext) -> str:
        try:
            await ctx.progress(**arguments)
        except ValueError as exc:
            raised.append(str(exc))
        return "done"

    async with bus:
        handle = await bus.submit("t:report")
        assert await handle.result(timeout=5) == "done"
        with anyio.fail_after(5):
            second = await bus.submit("t:report")
            assert await second.result(timeout=5) == "done"
    assert len(raised) == 2 and complaint in raised[0]


_ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.binary(max_size=8),
)


def _stored_and_readable_or_refused(delay: Any, key: Any, owner: Any, priority: Any) -> None:
    async def main() -> None:
        bus = with_echo(TaskBus(workers=1, shutdown_grace=0))
        async with bus:
            try:
                handle = await bus.submit(
                    "t:echo", 1, delay=delay, key=key, owner=owner, priority=priority
                )
            except InvalidSubmission:
                assert await bus.list() == []
                return
            snap = await bus.get(handle.id)
            assert snap.id == handle.id
            assert [s.id for s in await bus.list()] == [handle.id]

    anyio.run(main)


@given(delay=_ANY, key=_ANY, owner=_ANY, priority=_ANY)
def test_any_submit_arguments_are_stored_and_readable_or_refused(
    delay: Any, key: Any, owner: Any, priority: Any
) -> None:
    _stored_and_readable_or_refused(delay, key, owner, priority)


@pytest.mark.fuzz
@pytest.mark.timeout(1800)
@settings(max_examples=20_000)
@given(delay=_ANY, key=_ANY, owner=_ANY, priority=_ANY)
def test_fuzz_any_submit_arguments_are_stored_and_readable_or_refused(
    delay: Any, key: Any, owner: Any, priority: Any
) -> None:
    _stored_and_readable_or_refused(delay, key, owner, priority)


async def test_run_at_holds_a_task_back_until_then_in_any_timezone(
    make_bus: MakeBus, fake_clock: FakeClock
) -> None:
    async with with_echo(make_bus(clock=fake_clock)) as bus:
        recorder = EventRecorder(bus)
        paris = timezone(timedelta(hours=1))
        at = datetime.fromtimestamp(fake_clock.now() + 60, paris)
        later = await bus.submit("t:echo", 1, run_at=at)
        past = await bus.submit("t:echo", 2, run_at=at - timedelta(hours=2))
        assert await past.result(timeout=5) == 2, "a time already past runs now"
        snap = await bus.get(later.id)
        assert snap.state is TaskState.QUEUED and snap.not_before == at
        fake_clock.advance(59)
        await anyio.wait_all_tasks_blocked()
        assert (await bus.get(later.id)).state is TaskState.QUEUED
        fake_clock.advance(1)
        await recorder.wait_for(TaskCompleted, task_id=later.id, timeout=5)
