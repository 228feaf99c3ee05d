"""Rate limits (`rate=`, `rate_key=`) and keyed concurrency (`concurrency_key=`,
`key_concurrency=`): the options' checks, the keys a task is stored with, and two
buses sharing one store (as two processes would) sharing its limits.

The stories every store must tell are in `test_bus_scenarios.py`; the store-level
claims in `stores/test_leases.py`.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from _redis import redis_store
from pydantic import BaseModel

from taskbus import (
    InvalidSubmission,
    InvalidTaskDefinition,
    TaskBus,
    TaskContext,
    TaskState,
)
from taskbus._record import TaskRecord
from taskbus.stores import Store
from taskbus.testing import FakeClock

pytestmark = pytest.mark.anyio

WAIT = 10.0


class Clone(BaseModel):
    user: str


async def noop(ctx: TaskContext, params: Clone) -> None:
    return None


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"rate": "lots"}, "cannot read the rate 'lots'"),
        ({"rate": "1/second;5/minute"}, "give one rate, not 2"),
        ({"rate_key": "owner"}, "rate_key needs a rate"),
        ({"key_concurrency": 2}, "key_concurrency needs a concurrency_key"),
        ({"concurrency_key": "tenant"}, "concurrency_key"),
        ({"concurrency_key": "owner", "key_concurrency": 0}, "key_concurrency"),
    ],
    ids=["bad-rate", "two-rates", "key-without-rate", "limit-without-key", "bad-key", "zero"],
)
def test_bad_options_are_refused_at_registration(options: dict[str, Any], words: str) -> None:
    bus = TaskBus()
    with pytest.raises(InvalidTaskDefinition, match="rl:bad") as caught:
        bus.task("rl:bad", **options)(noop)
    assert words in str(caught.value)
    assert "rl:bad" not in bus.registry


def test_a_rate_without_the_limits_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "limits", None)  # import limits: ImportError
    with pytest.raises(InvalidTaskDefinition, match=r"pip install 'taskbus\[ratelimit\]'"):
        TaskBus().task("rl:rated", rate="10/minute")(noop)


def test_the_definition_says_its_limits() -> None:
    bus = TaskBus()
    rated = bus.task("rl:rated", rate="10 per 2 seconds")(noop)
    keyed = bus.task("rl:keyed", concurrency_key="owner", key_concurrency=3)(noop)
    plain = bus.task("rl:plain")(noop)
    assert (rated.rate_text(), rated.key_limit) == ("10/2 seconds", None)
    assert (keyed.rate_text(), keyed.key_limit) == (None, 3)
    assert (plain.rate_text(), plain.key_limit) == (None, None)
    per_owner = bus.task("rl:per-owner", concurrency_key="owner")(noop)
    assert per_owner.key_limit == 1, "one at a time per key unless said"


def failing_key(params: Clone) -> str:
    raise KeyError(params.user)


def number_key(params: Clone) -> Any:
    return 7


@pytest.mark.parametrize(
    ("key", "words"),
    [(failing_key, "concurrency_key function raised KeyError"), (number_key, "text or None")],
    ids=["raises", "not-text"],
)
async def test_a_key_function_that_fails_refuses_the_submit_and_stores_nothing(
    key: Callable[[Clone], str], words: str, anyio_backend: str
) -> None:
    bus = TaskBus(workers=1)
    bus.task("rl:clone", concurrency_key=key)(noop)
    async with bus:
        with pytest.raises(InvalidSubmission, match=words):
            await bus.submit("rl:clone", {"user": "alice"})
        with pytest.raises(InvalidSubmission, match=words):
            await bus.submit_batch([("rl:clone", {"user": "alice"})])
        assert await bus.list() == []


async def test_keys_are_computed_at_submit_and_kept_with_the_task(anyio_backend: str) -> None:
    bus = TaskBus(workers=1)
    bus.task(
        "rl:clone",
        concurrency_key=lambda params: params.user,
        rate="100/minute",
        rate_key="owner",
    )(noop)
    bus.task("rl:plain")(noop)
    async with bus:
        one = await bus.submit(
            "rl:clone", {"user": "alice"}, owner="acme", metadata={"concurrency_key": "bob"}
        )
        batch = await bus.submit_batch([("rl:clone", {"user": "carol"})], owner="initech")
        plain = await bus.submit("rl:plain", {"user": "dave"}, metadata={"note": "x"})
        await batch.wait(timeout=WAIT)
        snapshots = [await bus.wait(task_id, timeout=WAIT) for task_id in (one.id, plain.id)]
        [in_batch] = await bus.list(owner="initech")
    assert snapshots[0].metadata == {"concurrency_key": "alice", "rate_key": "acme"}
    assert in_batch.metadata["concurrency_key"] == "carol"
    assert in_batch.metadata["rate_key"] == "initech"
    assert snapshots[1].metadata == {"note": "x"}


async def test_a_task_without_a_key_is_not_limited_per_key(anyio_backend: str) -> None:
    bus = TaskBus(workers=3)
    together = anyio.Event()
    running = 0

    @bus.task("rl:anonymous", concurrency_key="owner")
    async def anonymous(ctx: TaskContext) -> None:
        nonlocal running
        running += 1
        if running == 2:
            together.set()
        await together.wait()

    async with bus:
        handles = [await bus.submit("rl:anonymous") for _ in range(2)]  # no owner
        for handle in handles:
            await handle.result(timeout=WAIT)


# -- two buses on one store, as two processes would share it ----------------------------

SHARED: dict[str, Callable[[Path], Store | str]] = {
    "sqlite": lambda place: f"sqlite:///{place / 'shared.db'}",
    "redis": redis_store,
}


class Tally:
    """Handlers of both buses count, per key, how many of them run at once."""

    def __init__(self) -> None:
        self.running: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.started: list[str] = []

    def register(self, bus: TaskBus) -> None:
        @bus.task("rl:clone", concurrency_key=lambda params: params.user)
        async def clone(ctx: TaskContext, params: Clone) -> None:
            self.running[params.user] += 1
            self.peak[params.user] = max(self.peak[params.user], self.running[params.user])
            try:
                await anyio.sleep(0.05)  # room for the other bus to run one too
            finally:
                self.running[params.user] -= 1

        @bus.task("rl:call", rate="3/minute")
        async def call(ctx: TaskContext) -> None:
            self.started.append(ctx.task_id)


@pytest.mark.parametrize("kind", list(SHARED))
async def test_two_buses_on_one_store_run_one_task_per_key_at_a_time(
    kind: str, tmp_path: Path, anyio_backend: str
) -> None:
    tally = Tally()
    buses = [TaskBus(store=SHARED[kind](tmp_path), workers=3) for _ in range(2)]
    for bus in buses:
        tally.register(bus)
    users = ["alice"] * 4 + ["bob"] * 4 + ["carol"] * 2
    async with buses[0] as first, buses[1]:
        handles = [await first.submit("rl:clone", {"user": user}) for user in users]
        for handle in handles:
            await handle.result(timeout=WAIT)
    assert tally.peak == {"alice": 1, "bob": 1, "carol": 1}


@pytest.mark.parametrize("kind", list(SHARED))
async def test_two_buses_on_one_store_share_one_rate(
    kind: str, tmp_path: Path, anyio_backend: str
) -> None:
    tally = Tally()
    buses = [TaskBus(store=SHARED[kind](tmp_path), workers=2) for _ in range(2)]
    for bus in buses:
        tally.register(bus)
    async with buses[0] as first, buses[1] as second:
        handles = [await first.submit("rl:call") for _ in range(3)]
        handles += [await second.submit("rl:call") for _ in range(3)]
        with anyio.fail_after(WAIT):
            while True:  # the store says who waits, no event does
                snapshots = [await first.get(handle.id) for handle in handles]
                done = [s for s in snapshots if s.state is TaskState.COMPLETED]
                waiting = [s for s in snapshots if s.waiting_for is not None]
                if len(done) == 3 and len(waiting) == 3:
                    break
                await anyio.sleep(0.02)
        for snapshot in waiting:
            assert await first.cancel(snapshot.id, reason="the test is over")
    assert len(tally.started) == 3, "3/minute across both buses"
    assert {s.waiting_for for s in waiting} == {"rate limit 3/minute"}
    assert {(s.state, s.attempts) for s in waiting} == {(TaskState.QUEUED, 0)}


async def test_a_rate_check_that_fails_holds_the_task_back_and_the_worker_goes_on(
    anyio_backend: str,
) -> None:
    clock = FakeClock()
    bus = TaskBus(workers=1, clock=clock)
    rated = bus.task("rl:rated", rate="5/second")(noop)
    checks = 0
    admit = bus.executor.rates.admit

    async def flaky(definition: Any, record: Any) -> float | None:
        nonlocal checks
        checks += 1
        if checks == 1:
            raise ConnectionError("the rate storage is down")
        return await admit(definition, record)

    bus.executor.rates.admit = flaky  # type: ignore[method-assign]
    async with bus:
        handle = await rated.submit(Clone(user="alice"))
        with anyio.fail_after(WAIT):
            while True:  # the store says it, no event does
                waiting = await bus.get(handle.id)
                if waiting.waiting_for is not None:
                    break
                await anyio.sleep(0.01)
        clock.advance(1.0)
        with anyio.fail_after(WAIT):
            await bus.wait(handle.id)
        done = await bus.get(handle.id)
    assert waiting.state is TaskState.QUEUED
    assert waiting.waiting_for == (
        "rate limit 5/second: the limit could not be checked "
        "(ConnectionError: the rate storage is down)"
    )
    assert (done.state, done.attempts, checks) == (TaskState.COMPLETED, 1, 2)


async def test_a_task_refused_by_its_rate_starts_once_the_window_has_room(
    anyio_backend: str,
) -> None:
    bus = TaskBus(workers=3)
    starts: dict[str, float] = {}

    @bus.task("rl:call", rate="2/second")
    async def call(ctx: TaskContext) -> None:
        starts[ctx.task_id] = time.monotonic()

    async with bus:
        handles = [await bus.submit("rl:call") for _ in range(3)]
        for handle in handles:
            await bus.result(handle.id, timeout=WAIT)
        snapshots = [await bus.get(handle.id) for handle in handles]
    first, _, third = sorted(starts.values())
    assert third - first >= 0.9, "the third start waited for the window"
    assert [s.attempts for s in snapshots] == [1, 1, 1]


async def test_a_full_window_is_known_without_asking_the_storage_again(
    anyio_backend: str,
) -> None:
    """Until its oldest start leaves it, a full moving window has no room, whichever
    process looks: the gate refuses without a round trip, and a shared store's claims
    skip a type whose one window is full."""
    bus = TaskBus(workers=1)
    per_type = bus.task("rl:call", rate="1/minute")(noop)
    per_owner = bus.task("rl:tenant", rate="1/minute", rate_key="owner")(noop)
    gate = bus.executor.rates
    first, second, third = (TaskRecord(f"id{n}", "rl:call", None, 5, 0.0) for n in range(3))

    assert await gate.admit(per_type, first) is None
    wait = await gate.admit(per_type, second)
    assert wait is not None and 55 < wait <= 60
    hits = 0
    limiter = gate._limiter()
    real_hit = limiter.hit

    async def counted(*args: Any) -> bool:
        nonlocal hits
        hits += 1
        return bool(await real_hit(*args))

    limiter.hit = counted
    again = await gate.admit(per_type, third)
    assert again is not None and again <= wait
    assert hits == 0
    tenant = [TaskRecord(f"t{n}", "rl:tenant", None, 5, 0.0) for n in range(2)]
    for record in tenant:
        record.metadata = {"rate_key": "acme"}
    assert await gate.admit(per_owner, tenant[0]) is None
    assert await gate.admit(per_owner, tenant[1]) is not None
