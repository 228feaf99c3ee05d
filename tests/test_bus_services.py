"""`TaskBus.add_service`: async functions that run beside the tasks, from each start
of the bus to its stop."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import pytest

from taskbus import TaskBus, TaskContext

pytestmark = pytest.mark.anyio

WAIT = 10.0


class Service:
    """Counts its runs and says when one begins and when one is cancelled."""

    def __init__(self) -> None:
        self.began = anyio.Event()
        self.ended = anyio.Event()
        self.runs = 0

    async def __call__(self) -> None:
        self.runs += 1
        self.began.set()
        try:
            await anyio.sleep_forever()
        finally:
            self.ended.set()

    def reset(self) -> None:
        self.began, self.ended = anyio.Event(), anyio.Event()


async def test_a_service_runs_from_each_start_to_its_stop() -> None:
    bus = TaskBus(workers=1)
    service = Service()
    bus.add_service(service)
    assert service.runs == 0  # not before the bus starts
    for run in (1, 2):
        async with bus:
            with anyio.fail_after(WAIT):
                await service.began.wait()
            assert not service.ended.is_set()
        assert service.ended.is_set()  # cancelled by the stop
        assert service.runs == run
        service.reset()


async def test_a_service_added_while_the_bus_runs_begins_at_once() -> None:
    bus = TaskBus(workers=1)
    service = Service()
    async with bus:
        bus.add_service(service)
        with anyio.fail_after(WAIT):
            await service.began.wait()
    assert service.ended.is_set()


async def test_a_service_that_raises_is_logged_and_the_bus_runs_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = TaskBus(workers=1)

    @bus.task("svc:add")
    async def add(ctx: TaskContext, n: int) -> int:
        return n + 1

    async def broken() -> None:
        raise RuntimeError("poller bug")

    bus.add_service(broken)
    with caplog.at_level(logging.ERROR, logger="taskbus.bus"):
        async with bus:
            handle = await bus.submit("svc:add", 1)
            assert await handle.result(timeout=WAIT) == 2
    assert any("poller bug" in str(r.exc_info) for r in caplog.records if r.exc_info)


def poll() -> None:
    return None


@pytest.mark.parametrize("service", [None, 3, "poll", poll, print])
async def test_a_service_that_is_not_a_function_is_refused(service: Any) -> None:
    with pytest.raises(TypeError, match="async function"):
        TaskBus().add_service(service)


async def test_a_service_may_be_a_partial_or_a_bound_method() -> None:
    bus = TaskBus(workers=1)
    seen: list[str] = []
    done = anyio.Event()

    async def note(word: str) -> None:
        seen.append(word)
        if len(seen) == 2:
            done.set()

    bus.add_service(partial(note, "partial"))
    bus.add_service(Noter(note).run)
    async with bus:
        with anyio.fail_after(WAIT):
            await done.wait()
    assert sorted(seen) == ["method", "partial"]


class Noter:
    def __init__(self, note: Callable[[str], Awaitable[None]]) -> None:
        self._note = note

    async def run(self) -> None:
        await self._note("method")
