"""Input required beyond the bus scenarios (`tests/test_bus_scenarios.py` runs the
stories on every store): several questions in one run, keys, typed answers, the
retry of a timed-out question, sync handlers, batches and the threaded facade."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from taskbus import (
    InputTimeout,
    InvalidAnswer,
    RetryableError,
    RetryPolicy,
    TaskBus,
    TaskContext,
    TaskFailedError,
    TaskInputRequired,
    TaskState,
)
from taskbus.testing import EventRecorder, FakeClock

pytestmark = pytest.mark.anyio

MakeBus = Callable[..., TaskBus]
WAIT = 5.0


class Size(BaseModel):
    width: int
    height: int


async def test_each_question_of_a_run_is_asked_in_turn_and_answers_are_replayed(
    make_bus: MakeBus,
) -> None:
    bus = make_bus(workers=1)
    runs: list[tuple[str, ...]] = []
    recorder = EventRecorder(bus, timeout=WAIT)

    @bus.task("in:two")
    async def two(ctx: TaskContext) -> str:
        runs.append(("start",))
        name = await ctx.ask("Your name?")
        size = await ctx.ask("Which size?", model=Size, key="size")
        runs.append((name, str(size.width)))
        return f"{name} {size.width}x{size.height}"

    async with bus:
        handle = await bus.submit("in:two")
        first = await recorder.wait_for(TaskInputRequired, task_id=handle.id)
        await bus.respond(handle.id, "ada")
        second = await recorder.wait_for(TaskInputRequired, task_id=handle.id, count=2)
        answered = await bus.respond(handle.id, {"width": "3", "height": 4})
        assert await handle.result(timeout=WAIT) == "ada 3x4"
    assert (first.key, first.json_schema) == ("ask-1", {"type": "string"})
    assert second.key == "size"
    assert answered.state is not TaskState.WAITING
    assert runs == [("start",), ("start",), ("start",), ("ada", "3")]


async def test_a_timed_out_question_is_asked_again_when_the_type_retries_it(
    make_bus: MakeBus, fake_clock: FakeClock
) -> None:
    bus = make_bus(clock=fake_clock)
    recorder = EventRecorder(bus, timeout=WAIT)
    attempts: list[int] = []

    @bus.task(
        "in:retry",
        retry=RetryPolicy(max_attempts=2, base_delay=0, jitter=0),
        retry_on=(InputTimeout,),
    )
    async def retry(ctx: TaskContext) -> str:
        attempts.append(ctx.attempt)
        return await ctx.ask("Proceed?", timeout=10)

    async with bus:
        handle = await bus.submit("in:retry")
        await recorder.wait_for(TaskInputRequired, task_id=handle.id)
        fake_clock.advance(11)
        await recorder.wait_for(TaskInputRequired, task_id=handle.id, count=2)
        await bus.respond(handle.id, "yes")
        assert await handle.result(timeout=WAIT) == "yes"
    assert attempts == [1, 1, 2, 2]


async def test_a_retry_after_a_later_failure_gets_the_recorded_answer_without_asking(
    make_bus: MakeBus,
) -> None:
    bus = make_bus()
    recorder = EventRecorder(bus, timeout=WAIT)
    runs: list[tuple[int, str]] = []

    @bus.task("in:flaky", retry=RetryPolicy(max_attempts=2, base_delay=0, jitter=0))
    async def flaky(ctx: TaskContext) -> str:
        branch = await ctx.ask("Which branch?")
        runs.append((ctx.attempt, branch))
        if ctx.attempt == 1:
            raise RetryableError("the deploy target hung up")
        return branch

    async with bus:
        handle = await bus.submit("in:flaky")
        await recorder.wait_for(TaskInputRequired, task_id=handle.id)
        await bus.respond(handle.id, "main")
        assert await handle.result(timeout=WAIT) == "main"
    assert runs == [(1, "main"), (2, "main")]
    assert len(recorder.of(TaskInputRequired, handle.id)) == 1


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_an_answer_no_store_can_hold_is_refused_as_invalid(
    make_bus: MakeBus, tmp_path: Any, store: str
) -> None:
    url = f"sqlite:///{tmp_path / 'answers.db'}" if store == "sqlite" else None
    bus = make_bus(store=url)
    recorder = EventRecorder(bus, timeout=WAIT)

    @bus.task("in:text")
    async def text(ctx: TaskContext) -> str:
        return await ctx.ask("Text?")

    async with bus:
        handle = await bus.submit("in:text")
        await recorder.wait_for(TaskInputRequired, task_id=handle.id)
        with pytest.raises(InvalidAnswer, match="surrogate"):
            await bus.respond(handle.id, "bad \ud800")
        assert (await bus.get(handle.id)).state is TaskState.WAITING
        await bus.respond(handle.id, "good")
        assert await handle.result(timeout=WAIT) == "good"


async def test_a_sync_handler_that_asks_fails_with_a_clear_error(make_bus: MakeBus) -> None:
    bus = make_bus()

    @bus.task("in:sync")
    def sync(ctx: TaskContext) -> Any:
        return ctx.ask("Which branch?")

    async with bus:
        handle = await bus.submit("in:sync")
        with pytest.raises(TaskFailedError, match=r"ctx\.ask needs an async handler"):
            await handle.result(timeout=WAIT)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        ({"prompt": 3}, "prompt must be a string"),
        ({"prompt": "ok", "timeout": 0}, "timeout must be a positive"),
        ({"prompt": "ok", "timeout": float("inf")}, "timeout must be a positive"),
        ({"prompt": "ok", "key": 5}, "key must be a string"),
    ],
)
async def test_bad_arguments_to_ask_raise_value_error_in_the_handler(
    make_bus: MakeBus, call: dict[str, Any], match: str
) -> None:
    bus = make_bus()

    @bus.task("in:bad")
    async def bad(ctx: TaskContext) -> Any:
        return await ctx.ask(**call)

    async with bus:
        handle = await bus.submit("in:bad")
        with pytest.raises(TaskFailedError, match=match):
            await handle.result(timeout=WAIT)


async def test_a_batch_counts_its_waiting_tasks_and_cancels_them(make_bus: MakeBus) -> None:
    bus = make_bus()
    recorder = EventRecorder(bus, timeout=WAIT)

    @bus.task("in:batch")
    async def ask(ctx: TaskContext) -> str:
        return await ctx.ask("Go?")

    async with bus:
        batch = await bus.submit_batch([("in:batch", None), ("in:batch", None)])
        await recorder.wait_for(TaskInputRequired, count=2)
        summary = await bus.batch(batch.id)
        assert (summary.waiting, summary.queued, summary.running) == (2, 0, 0)
        assert await bus.cancel_batch(batch.id, reason="stop") == 2
        with anyio.fail_after(WAIT):
            final = await batch.wait()
    assert final.cancelled == 2


def test_the_threaded_facade_answers_from_another_thread() -> None:
    asked = threading.Event()
    with TaskBus.start_threaded(workers=1, shutdown_grace=0.5) as tb:
        tb.on("task-input-required", lambda event: asked.set())

        @tb.task("in:threaded")
        async def threaded(ctx: TaskContext) -> str:
            return await ctx.ask("Colour?")

        handle = tb.submit("in:threaded")
        assert asked.wait(WAIT)
        snapshot = tb.respond(handle.id, "blue")
        assert snapshot.id == handle.id
        assert handle.result(timeout=WAIT) == "blue"
