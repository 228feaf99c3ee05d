"""Retention: how long finished tasks are kept, and the task that purges them."""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, Field

from ._clock import Clock
from .stores import Store

__all__ = ["RetentionPolicy", "retain"]

logger = logging.getLogger("taskbus.retention")


class RetentionPolicy(BaseModel):
    """How long finished tasks are kept. Checked at start and every `interval`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_age: float | None = Field(
        default=86_400.0, gt=0, description="Seconds a finished task is kept (None: forever)."
    )
    max_count: int | None = Field(
        default=None, ge=0, description="Finished tasks kept at most (None: no limit)."
    )
    interval: float = Field(default=60.0, gt=0, description="Seconds between purges.")


async def retain(store: Store, clock: Clock, policy: RetentionPolicy) -> None:
    """Purge by `policy` now and every `policy.interval` seconds, until cancelled."""
    while True:
        cutoff = None if policy.max_age is None else clock.now() - policy.max_age
        try:
            purged = await store.purge(finished_before=cutoff, keep=policy.max_count)
        except Exception:
            logger.exception("retention could not purge finished tasks; will retry")
        else:
            if purged:
                logger.info("retention purged %d finished task(s)", purged)
        await clock.sleep(policy.interval)
