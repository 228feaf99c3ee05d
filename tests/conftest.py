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
from hypothesis import HealthCheck, settings

from taskbus import TaskBus
from taskbus.testing import FakeClock

# Property-based tests run a bounded number of examples in `make test`; `make fuzz`
# (``--run-fuzz``) runs the tests marked `fuzz` with many more.
settings.register_profile(
    "default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "fuzz", max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck)
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-fuzz", action="store_true", help="run the large `fuzz` runs")


def pytest_configure(config: pytest.Config) -> None:
    settings.load_profile("fuzz" if config.getoption("--run-fuzz") else "default")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_fuzz = config.getoption("--run-fuzz")
    deselected = [
        item
        for item in items
        if (item.get_closest_marker("fuzz") and not run_fuzz) or _redis_on_trio(item)
    ]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        chosen = set(map(id, deselected))
        items[:] = [item for item in items if id(item) not in chosen]


def _redis_on_trio(item: pytest.Item) -> bool:
    """The Redis store runs on asyncio only (redis-py's asyncio client; a test of its
    own checks that it refuses trio): its trio variants do not exist."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    return params.get("anyio_backend") == "trio" and "redis" in params.values()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from _redis import remove_session_keys

    remove_session_keys()


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
