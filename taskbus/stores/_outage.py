"""Whether a store's server can be reached, from what its connections last saw."""

from __future__ import annotations

from datetime import UTC, datetime

from ._base import StoreOutage

__all__ = ["OutageWatch"]


class OutageWatch:
    """The outage of a store whose paths (writes, reads, the event log) each fail and
    recover on their own: it lasts while any path's last attempt failed."""

    def __init__(self) -> None:
        #: path -> (first failure, last failure, the last error)
        self._failing: dict[str, tuple[datetime, datetime, str]] = {}

    def lost(self, path: str, error: BaseException | None) -> None:
        """`path`'s attempt failed with `error`."""
        now = datetime.now(UTC)
        since = self._failing[path][0] if path in self._failing else now
        what = "unknown error" if error is None else f"{type(error).__name__}: {error}"
        self._failing[path] = (since, now, f"{path}: {what}")

    def reached(self, path: str) -> None:
        """`path`'s attempt reached the server."""
        if self._failing:
            self._failing.pop(path, None)

    @property
    def current(self) -> StoreOutage | None:
        if not self._failing:
            return None
        since = min(first for first, _, _ in self._failing.values())
        last = max(self._failing.values(), key=lambda failing: failing[1])
        return StoreOutage(since=since, error=last[2])
