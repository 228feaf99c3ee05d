"""Rate limits and per-key limits of a task type: the checks of their options, and the
keys a new task is limited under (computed at submit from its owner or its validated
input; kept in its metadata, see `_task_keys`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ._errors import InvalidSubmission
from ._task_keys import CONCURRENCY_KEY, RATE_KEY
from ._validation import check_text

if TYPE_CHECKING:
    from limits import RateLimitItem

__all__ = ["KeySource", "describe_rate", "parse_rate", "task_keys"]

#: How a task's key is found: ``"owner"``, or a function of its validated input that
#: returns the key (text), or None for a task not limited per key.
KeySource = Literal["owner"] | Callable[[Any], str | None]

_EXTRA = "rate= needs the limits library: pip install 'taskbus[ratelimit]'"


def parse_rate(text: str) -> RateLimitItem:
    """One rate in the `limits` notation ("100/minute", "10 per second"); ValueError
    for text that is not exactly one rate, or when `limits` is not installed."""
    try:
        from limits import parse_many
    except ImportError:
        raise ValueError(_EXTRA) from None
    try:
        items = parse_many(text)
    except ValueError:
        raise ValueError(
            f"cannot read the rate {text!r}: write it as '<count>/<unit>' "
            "(second, minute, hour, day), e.g. '100/minute' or '10 per 2 seconds'"
        ) from None
    if len(items) != 1:
        raise ValueError(f"give one rate, not {len(items)}: {text!r}")
    return items[0]


def describe_rate(item: RateLimitItem) -> str:
    """``100/minute``, ``10/2 seconds``: a rate as people write it."""
    unit = item.GRANULARITY.name
    if item.multiples == 1:
        return f"{item.amount}/{unit}"
    return f"{item.amount}/{item.multiples} {unit}s"


def _key_of(source: KeySource | None, owner: str | None, value: Any, what: str) -> str | None:
    if source is None:
        return None
    if source == "owner":
        return owner
    assert callable(source)
    try:
        key = source(value)
    except Exception as exc:
        raise InvalidSubmission(f"{what} function raised {type(exc).__name__}: {exc}") from exc
    if key is None:
        return None
    if not isinstance(key, str):
        raise InvalidSubmission(f"{what} function must return text or None, not {key!r}")
    check_text(key, what)
    return key


def task_keys(
    concurrency: KeySource | None, rate: KeySource | None, owner: str | None, value: Any
) -> dict[str, str]:
    """The metadata entries naming a new task's keys (raises `InvalidSubmission`)."""
    keys: dict[str, str] = {}
    if (key := _key_of(concurrency, owner, value, "concurrency_key")) is not None:
        keys[CONCURRENCY_KEY] = key
    if (key := _key_of(rate, owner, value, "rate_key")) is not None:
        keys[RATE_KEY] = key
    return keys
