"""Shared fixtures.

Async tests use anyio's pytest plugin (``@pytest.mark.anyio``), and every one
runs on asyncio and on trio through the parametrised `anyio_backend` fixture.
A bus is opened *inside* the test body (``async with make_bus() as bus:``),
never held open across a fixture's ``yield``: task groups must be entered and
left in the same task. Waits are bounded (`EventRecorder` and
`anyio.fail_after`), so a hang fails in seconds instead of stalling the suite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from taskbus import TaskBus
from taskbus.testing import FakeClock


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_bus() -> Callable[..., TaskBus]:
    """Build a TaskBus with test-friendly defaults (2 workers, short grace)."""

    def make(**kwargs: Any) -> TaskBus:
        kwargs.setdefault("workers", 2)
        kwargs.setdefault("shutdown_grace", 1.0)
        return TaskBus(**kwargs)

    return make
