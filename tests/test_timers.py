import anyio
import pytest

from taskbus._timers import Timers
from taskbus.testing import FakeClock


def test_run_due_in_order_and_skips_cancelled(fake_clock: FakeClock) -> None:
    timers = Timers(fake_clock)
    calls: list[str] = []
    start = fake_clock.monotonic()
    timers.call_at(start + 2, lambda: calls.append("b"))
    timers.call_at(start + 1, lambda: calls.append("a"))
    timers.call_at(start + 1.5, lambda: calls.append("never")).cancel()
    assert timers.run_due() == start + 1
    fake_clock.advance(5)
    assert timers.run_due() == float("inf")
    assert calls == ["a", "b"]
    assert len(timers) == 0


def test_a_raising_callback_does_not_stop_the_others(fake_clock: FakeClock) -> None:
    timers = Timers(fake_clock)
    calls: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    timers.call_later(0, boom)
    timers.call_later(0, lambda: calls.append("ok"))
    timers.run_due()
    assert calls == ["ok"]


def test_cancelled_entries_are_compacted(fake_clock: FakeClock) -> None:
    timers = Timers(fake_clock)
    for n in range(2000):
        timers.call_later(100 + n, lambda: None).cancel()
    assert len(timers._heap) < 1000
    assert len(timers) == 0


@pytest.mark.anyio
async def test_timer_task_sleeps_on_the_clock_and_rearms(fake_clock: FakeClock) -> None:
    timers = Timers(fake_clock)
    fired = anyio.Event()
    order: list[str] = []
    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(timers.run)
            await anyio.lowlevel.checkpoint()
            timers.call_later(60, lambda: order.append("late"))
            await anyio.lowlevel.checkpoint()

            def early() -> None:
                order.append("early")
                fired.set()

            timers.call_later(10, early)
            await anyio.lowlevel.checkpoint()
            fake_clock.advance(10)
            await fired.wait()
            assert order == ["early"]
            tg.cancel_scope.cancel()
