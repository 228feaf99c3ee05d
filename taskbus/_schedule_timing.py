"""When a schedule fires: an interval, or a cron expression read by croniter in a
time zone (zoneinfo). Times are epoch seconds.

Daylight saving: on a spring-forward day, a wall time that does not exist fires
at the first time after the gap (croniter's rule); on a fall-back day, a wall
time that occurs twice fires only the first time, so a daily 02:30 job fires
once each day.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ._errors import InvalidSchedule
from ._schedule import fire_instant

__all__ = ["CronTiming", "EveryTiming", "Timing", "check_tz", "timing_of"]

#: Fire times walked forward to find the missed ones before walking back instead.
_WALK_MOST = 10_000


class Timing(Protocol):
    """The fire times of one schedule."""

    def first(self, now: float) -> float:
        """The first fire time of a schedule stored (or resumed) at `now`."""
        ...

    def following(self, stamp: float) -> float:
        """The fire time after `stamp`, a fire time of this timing."""
        ...

    def latest_due(self, first: float, now: float, most: int) -> list[float]:
        """The latest `most` fire times from `first` (a fire time) to `now`, oldest
        first; empty if `first` is after `now`."""
        ...


class EveryTiming:
    """Every `seconds`, counted from the first fire (no drift: each fire time is
    the first plus a whole number of intervals)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def first(self, now: float) -> float:
        return fire_instant(now + self.seconds)

    def following(self, stamp: float) -> float:
        return fire_instant(stamp + self.seconds)

    def latest_due(self, first: float, now: float, most: int) -> list[float]:
        if first > now:
            return []
        last = int((now - first) // self.seconds)
        start = max(0, last - most + 1)
        return [fire_instant(first + n * self.seconds) for n in range(start, last + 1)]


class CronTiming:
    """A cron expression (5 fields, or 6 with seconds) read in time zone `tz`."""

    def __init__(self, expression: str, tz: ZoneInfo) -> None:
        try:
            from croniter import croniter
        except ImportError:  # pragma: no cover - the cron extra is installed in tests
            raise InvalidSchedule(
                "cron= needs croniter: pip install 'taskbus[cron]' (every= needs nothing)"
            ) from None
        self._croniter = croniter
        self.expression = expression
        self.tz = tz
        try:
            valid = croniter.is_valid(expression)
        except (ValueError, TypeError, KeyError):
            valid = False
        if not valid:
            raise InvalidSchedule(f"not a cron expression: {expression!r}")

    def _iter(self, stamp: float) -> Any:
        return self._croniter(
            self.expression, datetime.fromtimestamp(stamp, UTC).astimezone(self.tz)
        )

    def _repeated(self, when: datetime) -> bool:
        """Whether `when` is the second occurrence of a wall time (a fall-back hour)."""
        wall = when.replace(tzinfo=None)
        early = wall.replace(tzinfo=self.tz, fold=0).utcoffset()
        late = wall.replace(tzinfo=self.tz, fold=1).utcoffset()
        return early != late and when.utcoffset() == late

    def following(self, stamp: float) -> float:
        found = self._iter(stamp)
        while True:
            when: datetime = found.get_next(datetime)
            if not self._repeated(when):
                return fire_instant(when.timestamp())

    def first(self, now: float) -> float:
        return self.following(now)

    def latest_due(self, first: float, now: float, most: int) -> list[float]:
        if first > now:
            return []
        times: deque[float] = deque([first], maxlen=most)
        stamp = first
        for _ in range(_WALK_MOST):
            stamp = self.following(stamp)
            if stamp > now:
                return list(times)
            times.append(stamp)
        # Missed for long (a minutely job down for weeks): the latest, walking back.
        back: list[float] = []
        found = self._iter(now + 1.0)
        while len(back) < most:
            when: datetime = found.get_prev(datetime)
            if when.timestamp() < first:
                break
            if not self._repeated(when) and when.timestamp() <= now:
                back.append(fire_instant(when.timestamp()))
        return sorted(back)


def check_tz(tz: Any) -> ZoneInfo:
    """The time zone named `tz` (IANA, e.g. "Europe/Paris"); `InvalidSchedule` if unknown."""
    if not isinstance(tz, str) or not tz:
        raise InvalidSchedule(f"tz must be an IANA time zone name, not {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(
            f"unknown time zone {tz!r} (an IANA name, e.g. 'Europe/Paris')"
        ) from None


def timing_of(cron: str | None, every: float | None, tz: str) -> Timing:
    """The timing of a schedule; `InvalidSchedule` unless exactly one of cron/every."""
    zone = check_tz(tz)
    if (cron is None) == (every is None):
        raise InvalidSchedule("give exactly one of cron= and every=")
    if cron is not None:
        if not isinstance(cron, str):
            raise InvalidSchedule(f"cron must be text, not {cron!r}")
        return CronTiming(cron, zone)
    assert every is not None
    return EveryTiming(every)
