"""Opt-in CORS for the HTTP API: starlette's `CORSMiddleware` for exactly the
origins given, with a refused preflight answered in the API's error shape."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from ._http_errors import error_response

__all__ = ["cors_middleware"]

METHODS = ["GET", "POST", "DELETE"]
HEADERS = ["Authorization", "Content-Type", "Last-Event-ID"]


class _Cors(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        refused = error_response(
            response.status_code, "cors_refused", bytes(response.body).decode("latin-1")
        )
        refused.headers.update({k: v for k, v in response.headers.items() if k.startswith("vary")})
        return refused


def cors_middleware(origins: Sequence[str]) -> list[Middleware]:
    """The middleware that lets browser pages from `origins` call the API."""
    if isinstance(origins, str):
        raise TypeError("cors_origins takes a list of origins, not one string")
    for origin in origins:
        if not isinstance(origin, str) or not origin or origin.endswith("/"):
            raise ValueError(
                f"invalid CORS origin {origin!r}: use scheme://host[:port], or '*' for any"
            )
    return [
        Middleware(
            _Cors,
            allow_origins=list(origins),
            allow_methods=METHODS,
            allow_headers=HEADERS,
            expose_headers=["Location"],
        )
    ]
