"""``/schedules`` over HTTP: store (upsert), list, read, pause, resume and remove,
owner-scoped as ``/tasks`` is; bad input answers 4xx and stores nothing."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from taskbus import TaskBus
from taskbus.integrations.http import create_app

from ._fuzz import TOKENS
from ._tasks import register
from .conftest import asgi_client
from .test_rest import assert_error

pytestmark = pytest.mark.anyio

ORDER = {"type": "shop:order", "every": 3600, "input": {"item": "tea", "quantity": 1}}


async def test_store_list_read_pause_resume_and_remove(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    register(bus)
    async with bus, asgi_client(create_app(bus)) as client:
        stored = await client.post("/schedules", json={**ORDER, "tz": "Europe/Paris"})
        assert stored.status_code == 200, stored.text
        body = stored.json()
        assert body["id"] == "shop:order" and body["every"] == 3600
        assert body["tz"] == "Europe/Paris" and body["paused"] is False
        assert stored.headers["location"] == "/schedules/shop:order"
        again = await client.post("/schedules", json={**ORDER, "tz": "Europe/Paris"})
        assert again.json()["next_fire_at"] == body["next_fire_at"], "an upsert keeps it"
        listed = await client.get("/schedules")
        assert [s["id"] for s in listed.json()["items"]] == ["shop:order"]
        assert (await client.get("/schedules/shop:order")).json()["id"] == "shop:order"
        paused = await client.post("/schedules/shop:order/pause")
        assert paused.status_code == 200 and paused.json()["paused"] is True
        resumed = await client.post("/schedules/shop:order/resume")
        assert resumed.status_code == 200 and resumed.json()["paused"] is False
        removed = await client.delete("/schedules/shop:order")
        assert removed.status_code == 204
        assert_error(await client.get("/schedules/shop:order"), 404, "not_found")
        assert (await client.get("/schedules")).json() == {"items": []}


async def test_bad_schedules_answer_4xx_and_store_nothing(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()
    register(bus)
    async with bus, asgi_client(create_app(bus)) as client:
        bad = [
            ({"type": "nope", "every": 5}, 404, "unknown_task_type"),
            ({**ORDER, "input": {"item": "tea"}}, 422, "invalid_input"),
            ({"type": "noop", "cron": "not cron"}, 422, "invalid_schedule"),
            ({"type": "noop", "every": 5, "cron": "* * * * *"}, 422, "invalid_schedule"),
            ({"type": "noop"}, 422, "invalid_schedule"),
            ({"type": "noop", "every": 0}, 422, "invalid_schedule"),
            ({"type": "noop", "every": 5, "tz": "Nowhere/Land"}, 422, "invalid_schedule"),
            ({"type": "noop", "every": "5"}, 422, "invalid_schedule"),
            ({"type": "noop", "every": 5, "misfire": "later"}, 422, "invalid_schedule"),
            ({"type": "noop", "every": 5, "owner": "bob"}, 422, "invalid_schedule"),
        ]
        for payload, status, code in bad:
            assert_error(await client.post("/schedules", json=payload), status, code)
        assert_error(await client.post("/schedules", content=b"{"), 400, "bad_request")
        for path in ("/schedules/none", "/schedules/none/pause", "/schedules/none/resume"):
            method = client.get if path.count("/") == 2 else client.post
            assert_error(await method(path), 404, "not_found")
        assert_error(await client.delete("/schedules/none"), 404, "not_found")
        assert (await client.get("/schedules")).json() == {"items": []}


async def test_owners_see_and_change_only_their_own(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    register(bus)
    app = create_app(bus, tokens=TOKENS)
    async with bus, asgi_client(app, "alice-token") as alice, asgi_client(app, "bob-token") as bob:
        mine = await alice.post("/schedules", json=ORDER)
        assert mine.status_code == 200
        schedule = mine.json()
        assert schedule["id"] == "alice/shop:order" and schedule["owner"] == "alice"
        url = "/schedules/alice/shop:order"
        assert (await alice.get(url)).json()["id"] == "alice/shop:order", "an id with a slash"
        assert (await bob.get("/schedules")).json() == {"items": []}
        assert (await bob.get("/schedules?owner=alice")).json() == {"items": []}
        for response in (
            await bob.get(url),
            await bob.post(f"{url}/pause"),
            await bob.post(f"{url}/resume"),
            await bob.delete(url),
        ):
            assert_error(response, 404, "not_found")
        taken = await bob.post("/schedules", json={**ORDER, "id": "alice/shop:order"})
        assert_error(taken, 422, "invalid_schedule")
        assert [s["id"] for s in (await alice.get("/schedules")).json()["items"]] == [
            "alice/shop:order"
        ]
        assert (await alice.post(f"{url}/pause")).json()["paused"] is True
        assert (await alice.delete(url)).status_code == 204
        unauthorised = await bob.get("/schedules", headers={"Authorization": "Bearer wrong"})
        assert_error(unauthorised, 401, "unauthorized")
