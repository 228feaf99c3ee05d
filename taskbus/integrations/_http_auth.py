"""Who is asking: the HTTP API's auth hook and the default bearer-token table.

An `AuthHook` maps a request to its owner (a string), to an `Identity` (an
owner, and whether they administer every owner's tasks), or to None (401). It
may be sync or async. `bearer_tokens` builds the default one from a token table;
the token comes from ``Authorization: Bearer <token>`` or, only where the route
allows it (`allow_query_token`: ``GET /events``, for a browser's EventSource,
which cannot send headers), from ``?access_token=<token>``. Tokens in URLs end
up in logs, so every other route ignores that parameter.
"""

from __future__ import annotations

import hmac
import inspect
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request

from taskbus import Identity

__all__ = [
    "QUERY_TOKEN_ALLOWED",
    "AuthHook",
    "Identity",
    "allow_query_token",
    "bearer_tokens",
    "resolve_identity",
]


AuthHook = Callable[[Request], str | Identity | Awaitable[str | Identity | None] | None]

#: The request scope key that says ``?access_token=`` counts on this route.
QUERY_TOKEN_ALLOWED = "taskbus.query_token_allowed"


def allow_query_token(request: Request) -> None:
    """Let this request authenticate with ``?access_token=`` (the event stream)."""
    request.scope[QUERY_TOKEN_ALLOWED] = True


def bearer_tokens(tokens: Mapping[str, str | Identity]) -> AuthHook:
    """An auth hook over a ``{token: owner}`` table (compared in constant time); a
    value may be an `Identity`, e.g. ``Identity(owner="ops", admin=True)``."""
    table = [(token.encode(), Identity.of(owner)) for token, owner in tokens.items()]
    if not table:
        raise ValueError("tokens must name at least one token")

    def identity_of(request: Request) -> Identity | None:
        given = _token(request)
        if given is None:
            return None
        found: Identity | None = None
        for token, identity in table:  # every entry, so timing says nothing
            if hmac.compare_digest(token, given):
                found = identity
        return found

    return identity_of


def _token(request: Request) -> bytes | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip().encode()
        return None
    if not request.scope.get(QUERY_TOKEN_ALLOWED):
        return None
    query = request.query_params.get("access_token")
    return query.encode() if query else None


async def resolve_identity(hook: AuthHook, request: Request) -> Identity | None:
    """Run the hook (sync or async); an owner it answers as text becomes an `Identity`."""
    answer = hook(request)
    if inspect.isawaitable(answer):
        answer = await answer
    if answer is None:
        return None
    try:
        return Identity.of(answer)
    except TypeError:
        raise TypeError(
            f"the auth hook must return a str, an Identity or None, not {answer!r}"
        ) from None
