"""The dashboard's live figures: a point every `interval` seconds, for the last ten minutes.

`StatsHistory` hears the bus's final events and, on each tick of the bus's clock,
records one `HistoryPoint`: the tasks that completed, failed and were cancelled
since the previous point, and the queue depth and running count the store reports
(`TaskBus.stats`). The finals are counted cluster-wide: on a store that processes
share (SQLite, Redis) the bus hears every process's final events through the
store's event log, so a dashboard in front of separate workers shows their
throughput. No extra is needed (not ``prometheus``). A ring of
``ceil(HISTORY_WINDOW / interval)`` points bounds the memory.

`run()` takes points while it is entered (the app's lifespan). A sample never
raises: while the store cannot be reached the point repeats the last counts the bus
read and says so (``store_outage``); any other error is logged and leaves a gap
(``queued`` and ``running`` null) in that point.

``GET /stats/history`` shows aggregate figures of every owner, so with auth only an
administrator may read it (401 without a token, 403 for an owner), as ``/metrics``.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio
from starlette.requests import Request
from starlette.responses import Response

from .. import TaskState
from ._http_auth import Identity
from ._http_errors import ApiError
from ._http_json import model_json
from ._http_models import HistoryPoint, StatsHistoryAnswer

if TYPE_CHECKING:
    from .. import TaskBus, TaskEvent

__all__ = [
    "DEFAULT_STATS_INTERVAL",
    "HISTORY_WINDOW",
    "HistoryRoute",
    "StatsHistory",
]

logger = logging.getLogger("taskbus.http")

#: Seconds of history kept, and the default seconds between two points.
HISTORY_WINDOW = 600.0
DEFAULT_STATS_INTERVAL = 5.0
#: Real seconds a sample may take before its point is recorded as a gap.
SAMPLE_TIMEOUT = 10.0

_FINALS = ("task-completed", "task-failed", "task-cancelled")


class StatsHistory:
    """The last `HISTORY_WINDOW` seconds of the bus's figures, one point per `interval`."""

    def __init__(self, bus: TaskBus, interval: float = DEFAULT_STATS_INTERVAL) -> None:
        number = isinstance(interval, int | float) and not isinstance(interval, bool)
        if not (number and 0 < interval <= HISTORY_WINDOW):
            raise ValueError(
                f"the stats interval must be a number of seconds in (0, {HISTORY_WINDOW:g}], "
                f"not {interval!r}"
            )
        self.interval = float(interval)
        self._bus = bus
        self.points: deque[HistoryPoint] = deque(maxlen=math.ceil(HISTORY_WINDOW / interval))
        #: Finals heard since the last point, by event name.
        self._finals = dict.fromkeys(_FINALS, 0)
        self._sampling = 0
        for name in _FINALS:
            bus.on(name, self._heard)

    @property
    def sampling(self) -> bool:
        """Whether `run()` is entered (the app's lifespan runs)."""
        return self._sampling > 0

    def _heard(self, event: TaskEvent) -> None:
        self._finals[event.name] += 1

    async def sample(self) -> HistoryPoint:
        """Record one point now (the sampler's tick; tests may call it too)."""
        queued: int | None = None
        running: int | None = None
        outage = False
        try:
            with anyio.fail_after(SAMPLE_TIMEOUT):
                stats = await self._bus.stats()
        except Exception:  # a sample never takes the app down; the point is a gap
            logger.exception("could not read the bus's stats for the history")
        else:
            queued = stats.by_state.get(TaskState.QUEUED, 0)
            running = stats.by_state.get(TaskState.RUNNING, 0)
            outage = stats.store_outage is not None
        finals, self._finals = self._finals, dict.fromkeys(_FINALS, 0)
        point = HistoryPoint(
            timestamp=datetime.fromtimestamp(self._bus.clock.now(), UTC),
            completed=finals["task-completed"],
            failed=finals["task-failed"],
            cancelled=finals["task-cancelled"],
            queued=queued,
            running=running,
            store_outage=outage,
        )
        self.points.append(point)
        return point

    async def _loop(self) -> None:
        while True:
            await self.sample()
            await self._bus.clock.sleep(self.interval)

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        """Take a point at once and then every `interval` (on the bus's clock) while
        entered."""
        async with anyio.create_task_group() as group:
            self._sampling += 1
            group.start_soon(self._loop)
            try:
                yield
            finally:
                self._sampling -= 1
                group.cancel_scope.cancel()

    def answer(self) -> StatsHistoryAnswer:
        return StatsHistoryAnswer.model_construct(
            interval=self.interval,
            window=HISTORY_WINDOW,
            sampling=self.sampling,
            points=list(self.points),
        )


class HistoryRoute:
    """The handler of ``GET /stats/history``."""

    def __init__(
        self, history: StatsHistory, caller: Callable[[Request], Awaitable[Identity | None]]
    ) -> None:
        self._history = history
        self._caller = caller

    async def get(self, request: Request) -> Response:
        caller = await self._caller(request)
        if caller is not None and not caller.admin:
            raise ApiError(403, "forbidden", "only an administrator may read the stats history")
        return Response(model_json(self._history.answer()), media_type="application/json")
