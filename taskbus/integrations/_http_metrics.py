"""``GET /metrics``: the bus's Prometheus figures in the text exposition format.

Only aggregate counts by type are shown; with auth, only an administrator may read
them (401 without a token, 403 for an owner).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from ._http_auth import Identity
from ._http_errors import ApiError

if TYPE_CHECKING:
    from .. import TaskBus
    from ..metrics import BusMetrics

__all__ = ["MetricsRoute", "app_metrics"]


def app_metrics(bus: TaskBus, metrics: BusMetrics | bool | None) -> BusMetrics | None:
    """The metrics an app serves: those given, or (None, True) new ones in a registry
    of their own when ``taskbus[prometheus]`` is installed; False: none."""
    if metrics is False:
        return None
    if metrics is None or metrics is True:
        try:
            from prometheus_client import CollectorRegistry

            from ..metrics import instrument
        except ImportError:
            if metrics is True:
                raise
            return None
        return instrument(bus, CollectorRegistry())
    return metrics


class MetricsRoute:
    """The handler of ``GET /metrics``."""

    def __init__(
        self, metrics: BusMetrics, caller: Callable[[Request], Awaitable[Identity | None]]
    ) -> None:
        self._metrics = metrics
        self._caller = caller

    async def get(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        caller = await self._caller(request)
        if caller is not None and not caller.admin:
            raise ApiError(403, "forbidden", "only an administrator may read the metrics")
        await self._metrics.refresh()
        return Response(generate_latest(self._metrics.registry), media_type=CONTENT_TYPE_LATEST)
