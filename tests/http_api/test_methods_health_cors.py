"""405 answers with ``Allow``, ``/healthz`` while the bus is and is not running,
and opt-in CORS (``cors_origins=``)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from taskbus import TaskBus
from taskbus.integrations.http import create_app

from ._tasks import register
from .conftest import asgi_client
from .test_rest import assert_error

pytestmark = pytest.mark.anyio

ORIGIN = "https://app.example"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/tasks", "GET, HEAD, POST"),
        ("PUT", "/tasks/" + "0" * 32, "DELETE, GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/openapi.json", "GET, HEAD"),
        ("PATCH", "/events", "GET, HEAD"),
        ("OPTIONS", "/stats", "GET, HEAD"),
        ("POST", "/static/dashboard.js", "GET, HEAD"),
    ],
)
async def test_a_method_a_path_does_not_serve_is_405_with_allow(
    make_bus: Callable[..., TaskBus], method: str, path: str, allow: str
) -> None:
    bus = make_bus()
    async with asgi_client(create_app(bus)) as client:
        response = await client.request(method, path)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allow


async def test_healthz_is_503_unless_the_bus_runs(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    async with asgi_client(create_app(bus)) as client:
        error = assert_error(await client.get("/healthz"), 503, "bus_not_running")
        assert "not running" in error["message"]
        async with bus:
            response = await client.get("/healthz")
            assert response.status_code == 200
            assert response.json() == {"status": "ok", "bus_running": True}
        assert_error(await client.get("/healthz"), 503, "bus_not_running")


async def preflight(client: httpx.AsyncClient, origin: str, method: str = "POST") -> httpx.Response:
    return await client.options(
        "/tasks",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


async def test_cors_is_off_by_default(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    register(bus)
    async with bus, asgi_client(create_app(bus)) as client:
        response = await client.get("/tasks", headers={"Origin": ORIGIN})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers
        refused = await preflight(client, ORIGIN)
        assert_error(refused, 405, "method_not_allowed")
        assert "access-control-allow-origin" not in refused.headers


async def test_cors_origins_allow_exactly_those_origins(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    register(bus)
    app = create_app(bus, tokens={"t": "alice"}, cors_origins=[ORIGIN])
    async with bus, asgi_client(app) as client:
        allowed = await preflight(client, ORIGIN)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in allowed.headers["access-control-allow-methods"]
        assert "authorization" in allowed.headers["access-control-allow-headers"].lower()

        for other in ("https://evil.example", ORIGIN + ":8443", "http://app.example"):
            refused = await preflight(client, other)
            assert_error(refused, 400, "cors_refused")
            assert "access-control-allow-origin" not in refused.headers
        assert_error(await preflight(client, ORIGIN, "PUT"), 400, "cors_refused")

        headers = {"Origin": ORIGIN, "Authorization": "Bearer t"}
        simple = await client.post("/tasks", json={"type": "noop"}, headers=headers)
        assert simple.status_code == 202
        assert simple.headers["access-control-allow-origin"] == ORIGIN
        assert "location" in simple.headers["access-control-expose-headers"].lower()
        # An error answer carries the header too, so the page can read it.
        denied = await client.get("/tasks", headers={"Origin": ORIGIN})
        assert_error(denied, 401, "unauthorized")
        assert denied.headers["access-control-allow-origin"] == ORIGIN

        headers = {"Origin": "https://evil.example", "Authorization": "Bearer t"}
        elsewhere = await client.get("/tasks", headers=headers)
        assert elsewhere.status_code == 200  # a browser keeps the answer from the page
        assert "access-control-allow-origin" not in elsewhere.headers


@pytest.mark.parametrize(
    ("origins", "error"),
    [
        ("https://app.example", TypeError),
        (["https://app.example/"], ValueError),
        ([""], ValueError),
    ],
)
def test_bad_cors_origins_are_refused(origins: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="origin"):
        create_app(TaskBus(), cors_origins=origins)  # type: ignore[arg-type]
