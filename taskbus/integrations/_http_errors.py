"""The HTTP API's error shape and its exception handlers.

Every non-2xx answer is ``{"error": {"code": str, "message": str, "details": any}}``.
A handler raises `ApiError` for a client's mistake (4xx); anything else that
escapes a route is a server fault: it is logged with its traceback and answered
as a JSON 500 that says nothing about the cause.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._http_models import ErrorAnswer, ErrorDetail

__all__ = ["EXCEPTION_HANDLERS", "ApiError", "JsonAnswer", "error_response", "pydantic_details"]

logger = logging.getLogger("taskbus.http")

#: Longest message an error answer echoes a client's value in (ids, strings).
MAX_ECHO = 200


class ApiError(Exception):
    """Raised by a handler to answer a non-2xx status in the error shape."""

    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class JsonAnswer(JSONResponse):
    """A JSON answer that always encodes: ASCII only, no NaN, odd values as repr."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content, ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=repr
        ).encode("ascii")


def echo(value: object) -> str:
    """A client's value as it may appear in a message: repr, bounded."""
    text = repr(value)
    return text if len(text) <= MAX_ECHO else text[: MAX_ECHO - 3] + "..."


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An answer in the error shape (`ErrorAnswer`); a 401 says to use a bearer token."""
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    detail = ErrorDetail.model_construct(code=code, message=message, details=details)
    body = ErrorAnswer.model_construct(error=detail).model_dump()
    try:
        return JsonAnswer(body, status_code=status, headers=headers)
    except ValueError:  # details with a NaN or a cycle: the message alone still helps
        body["error"]["details"] = None
        return JsonAnswer(body, status_code=status, headers=headers)


def pydantic_details(exc: ValidationError, *, with_input: bool) -> Any:
    """pydantic's error list as JSON (without urls, and without inputs unless asked)."""
    try:
        return json.loads(exc.json(include_url=False, include_input=with_input))
    except ValueError:  # an input pydantic cannot write as JSON
        return json.loads(exc.json(include_url=False, include_input=False))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.details)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if "Allow" in headers:  # starlette lists a route's methods in set order
        headers["Allow"] = ", ".join(sorted(headers["Allow"].split(", ")))
    return error_response(exc.status_code, code, str(exc.detail), None, headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.exception("HTTP %s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


EXCEPTION_HANDLERS = {
    ApiError: _api_error,
    HTTPException: _http_error,
    Exception: _server_error,
}
