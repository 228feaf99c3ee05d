"""What an HTTP client sends, checked before any of it reaches the bus.

Bodies: at most `max_body` bytes (413), UTF-8, strict JSON (no ``NaN`` or
``Infinity``, no number that overflows a float, no string with a lone surrogate,
at most `MAX_JSON_DEPTH` levels of nesting) or 400. A submission is then the
strict `SubmitBody` model, a retry's optional body `RetryBody` (422 with
pydantic's details). Query parameters,
cursors, ``Last-Event-ID`` and task ids are checked here too (400, or 404 for
an id that cannot exist).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import ClientDisconnect, Request

from .. import (
    MAX_DELAY,
    MAX_PARENTS,
    MAX_PRIORITY,
    MAX_TEXT,
    MIN_PRIORITY,
    ParentFailurePolicy,
    event_order,
)
from ._http_errors import ApiError, echo, pydantic_details

__all__ = [
    "MAX_JSON_DEPTH",
    "AnswerBody",
    "RetryBody",
    "SubmitBody",
    "decode_cursor",
    "encode_cursor",
    "int_param",
    "last_event_id",
    "read_answer",
    "read_json",
    "read_retry",
    "read_submission",
    "valid_task_id",
]

#: Deepest nesting of arrays and objects a body may have (the whole body counts).
MAX_JSON_DEPTH = 64
#: Highest offset a cursor may carry, and the longest task id worth looking up.
MAX_OFFSET = 10**12
MAX_ID_LENGTH = 256
MAX_NAME_LENGTH = 256

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,24}")
_DIGITS = re.compile(r"[0-9]{1,19}")


class RetryBody(BaseModel):
    """The body of ``POST /tasks/{id}/retry``, all optional (strict, as `SubmitBody`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    priority: int | None = Field(
        default=None,
        ge=MIN_PRIORITY,
        le=MAX_PRIORITY,
        description="Instead of the old task's priority.",
    )
    delay: float | None = Field(default=None, ge=0, le=MAX_DELAY, allow_inf_nan=False)
    run_at: AwareDatetime | None = Field(
        default=None,
        strict=False,  # from JSON text: an RFC 3339 time with its offset
        description="When to run it (with a UTC offset); instead of `delay`.",
    )
    key: str | None = Field(
        default=None,
        max_length=MAX_TEXT,
        description="Idempotency key: retrying again with it while the re-run is "
        "unfinished answers with that re-run.",
    )

    @field_validator("run_at", mode="before")
    @classmethod
    def _run_at_is_text(cls, value: Any) -> Any:
        return _rfc3339_text(value)


def _rfc3339_text(value: Any) -> Any:
    if value is not None and not isinstance(value, str):
        raise ValueError("run_at is an RFC 3339 time as text, e.g. 2030-01-01T09:00:00+01:00")
    return value


class SubmitBody(BaseModel):
    """The body of ``POST /tasks`` (strict: ``"5"`` is not a priority, ``true`` no delay)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)
    input: Any = None
    priority: int | None = Field(default=None, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    metadata: dict[str, Any] | None = None
    delay: float | None = Field(default=None, ge=0, le=MAX_DELAY, allow_inf_nan=False)
    run_at: AwareDatetime | None = Field(
        default=None,
        strict=False,  # from JSON text: an RFC 3339 time with its offset
        description="When to run it (with a UTC offset); instead of `delay`.",
    )
    key: str | None = Field(default=None, max_length=MAX_TEXT)
    after: list[Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]] | None = Field(
        default=None,
        max_length=MAX_PARENTS,
        description="Ids of the caller's tasks this one waits for (its parents).",
    )
    on_parent_failure: ParentFailurePolicy = Field(
        default="cancel",
        description="If a parent fails or is cancelled: cancel this task, fail it, or run it.",
    )

    @field_validator("run_at", mode="before")
    @classmethod
    def _run_at_is_text(cls, value: Any) -> Any:
        return _rfc3339_text(value)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


async def read_json(request: Request, max_body: int) -> Any:
    """The body as checked JSON: 413 past `max_body` bytes, 400 if not strict JSON."""
    return _parse_json(await _read_body(request, max_body))


async def _read_body(request: Request, max_body: int) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and len(length) < 20 and int(length) > max_body:
        raise _too_large(max_body)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                raise _too_large(max_body)
    except ClientDisconnect:
        raise bad_request("the client went away mid-body") from None
    return bytes(body)


def _parse_json(body: bytes) -> Any:
    """`body` as checked JSON (400 if it is not strict JSON)."""
    try:
        text = body.decode("utf-8")
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise bad_request(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # also UnicodeDecodeError and JSONDecodeError
        raise bad_request(f"malformed JSON body: {exc}") from None
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH:
        _check_depth(value)
    if _SURROGATE_ESCAPE.search(text):
        _check_strings(value)
    return value


async def read_submission(request: Request, max_body: int) -> SubmitBody:
    payload = await read_json(request, max_body)
    try:
        return SubmitBody.model_validate(payload)
    except ValidationError as exc:
        details = pydantic_details(exc, with_input=False)
        raise ApiError(422, "invalid_submission", "invalid submission", details) from None


async def read_retry(request: Request, max_body: int) -> RetryBody:
    """The optional body of a retry: none (or only blanks) takes the old task's options."""
    body = await _read_body(request, max_body)
    if not body.strip():
        return RetryBody()
    payload = _parse_json(body)
    try:
        return RetryBody.model_validate(payload)
    except ValidationError as exc:
        details = pydantic_details(exc, with_input=False)
        raise ApiError(422, "invalid_submission", "invalid retry", details) from None


class AnswerBody(BaseModel):
    """The body of ``POST /tasks/{id}/input``: the answer to the task's question."""

    model_config = ConfigDict(extra="forbid")

    value: Any = Field(description="The answer; it must match the question's JSON schema.")


async def read_answer(request: Request, max_body: int) -> AnswerBody:
    payload = await read_json(request, max_body)
    try:
        return AnswerBody.model_validate(payload)
    except ValidationError as exc:
        details = pydantic_details(exc, with_input=False)
        raise ApiError(
            422, "invalid_answer", 'the body is {"value": <the answer>}', details
        ) from None


def _too_large(max_body: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"request body over {max_body} bytes")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number out of range: {echo(text)}")
    return value


def _check_depth(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise bad_request(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def _check_strings(value: Any) -> None:
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict):
            for key, child in item.items():
                _check_text(key)
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)


def is_unicode(text: str) -> bool:
    """Whether `text` encodes to UTF-8 (holds no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_text(text: str) -> None:
    if not is_unicode(text):
        raise bad_request("a JSON string holds a lone surrogate (\\ud800-\\udfff)")


def valid_task_id(task_id: str) -> bool:
    """Whether `task_id` could name a task (bounded, valid Unicode); else it is a 404."""
    return 0 < len(task_id) <= MAX_ID_LENGTH and is_unicode(task_id)


def encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The offset a `next_cursor` carries; 400 for anything this API did not issue."""
    if _CURSOR.fullmatch(cursor):
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        except (binascii.Error, ValueError):
            raw = b""
        if raw.isdigit() and int(raw) <= MAX_OFFSET:
            return int(raw)
    raise bad_request(f"invalid cursor {echo(cursor)}")


def int_param(value: str | None, name: str, default: int, low: int, high: int) -> int:
    if value is None:
        return default
    if not _DIGITS.fullmatch(value) or not low <= int(value) <= high:
        raise bad_request(f"{name} must be an integer in {low}..{high}")
    return int(value)


def last_event_id(request: Request) -> str | None:
    """``Last-Event-ID`` (header, or ``last_event_id`` for clients without headers)."""
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if not raw:
        return None
    raw = raw.strip()
    if len(raw) > 64:
        raise bad_request(f"invalid Last-Event-ID {echo(raw)}")
    try:
        event_order(raw)
    except ValueError:
        raise bad_request(f"invalid Last-Event-ID {echo(raw)}") from None
    return raw
