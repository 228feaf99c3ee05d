"""``GET /openapi.json``: a valid OpenAPI 3.1 document, generated from the models
the routes use and the registered types (schemathesis checks the app against it
in test_schemathesis.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.routing import Mount

from taskbus import TaskBus
from taskbus.integrations.http import create_app

from ._fuzz import TOKENS
from ._tasks import register
from .conftest import asgi_client

pytestmark = pytest.mark.anyio

SCHEMAS = "#/components/schemas/"


class TaskSnapshot(BaseModel):
    """A plugin's input model, named like one of the API's own."""

    wanted: str


async def document(app: Any, token: str | None = None, path: str = "/openapi.json") -> Any:
    async with asgi_client(app, token) as client:
        response = await client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def resolve(doc: dict[str, Any], ref: str) -> dict[str, Any]:
    assert ref.startswith(SCHEMAS)
    found: dict[str, Any] = doc["components"]["schemas"][ref.removeprefix(SCHEMAS)]
    return found


async def test_the_document_is_valid_openapi_3_1(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    register(bus)
    for app in (create_app(bus), create_app(bus, tokens=TOKENS, dashboard=False)):
        doc = await document(app, "alice-token")
        validate(doc)
        assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) == {
        "/tasks",
        "/tasks/{task_id}",
        "/tasks/{task_id}/retry",
        "/tasks/{task_id}/input",
        "/stats",
        "/stats/history",
        "/types",
        "/me",
        "/healthz",
        "/events",
        "/openapi.json",
        "/schedules",
        "/schedules/{schedule_id}",
        "/schedules/{schedule_id}/pause",
        "/schedules/{schedule_id}/resume",
        "/metrics",
    }


async def test_a_submission_is_documented_per_registered_type(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()
    register(bus)
    app = create_app(bus)
    doc = await document(app)
    body = doc["paths"]["/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    mapping = body["discriminator"]["mapping"]
    assert body["discriminator"]["propertyName"] == "type"
    assert set(mapping) == {"shop:order", "noop", "echo", "steps", "gated"}
    assert [branch["$ref"] for branch in body["oneOf"]] == list(mapping.values())

    order = resolve(doc, mapping["shop:order"])
    assert order["properties"]["type"] == {"const": "shop:order", "type": "string"}
    assert order["required"] == ["type", "input"]
    assert order["description"] == "Place an order."
    model = resolve(doc, order["properties"]["input"]["$ref"])
    assert model["required"] == ["item", "quantity"]
    assert model["properties"]["quantity"]["type"] == "integer"
    assert set(order["properties"]) >= {"priority", "delay", "key", "metadata"}
    # A type that takes no input, or any: the input may be left out.
    assert resolve(doc, mapping["noop"])["required"] == ["type"]
    assert resolve(doc, mapping["echo"])["required"] == ["type"]

    # Types registered later show up: the document is built per request.
    @bus.task("late:one")
    async def late(value: int) -> int:
        return value

    doc = await document(app)
    body = doc["paths"]["/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    late_branch = resolve(doc, body["discriminator"]["mapping"]["late:one"])
    assert late_branch["properties"]["input"] == {"type": "integer"}


async def test_answers_and_errors_come_from_the_models(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    register(bus)
    doc = await document(create_app(bus))
    responses = doc["paths"]["/tasks"]["post"]["responses"]
    assert set(responses) == {"202", "400", "404", "413", "422", "503"}
    accepted = resolve(doc, responses["202"]["content"]["application/json"]["schema"]["$ref"])
    assert accepted["required"] == ["id", "type", "state", "url"]
    assert "Location" in responses["202"]["headers"]
    error = resolve(doc, responses["422"]["content"]["application/json"]["schema"]["$ref"])
    detail = resolve(doc, error["properties"]["error"]["$ref"])
    assert detail["required"] == ["code", "message", "details"]
    page = doc["paths"]["/tasks"]["get"]["responses"]["200"]["content"]["application/json"]
    items = resolve(doc, page["schema"]["$ref"])["properties"]["items"]
    assert items["items"] == {"$ref": SCHEMAS + "TaskSnapshot"}
    answer = doc["paths"]["/tasks/{task_id}/input"]["post"]
    assert set(answer["responses"]) == {"200", "400", "404", "409", "413", "422"}
    body = answer["requestBody"]["content"]["application/json"]["schema"]
    assert resolve(doc, body["$ref"])["required"] == ["value"]
    events = doc["paths"]["/events"]["get"]["responses"]
    assert set(events["200"]["content"]) == {"text/event-stream"}
    sse = events["200"]["content"]["text/event-stream"]["schema"]
    assert sse["properties"]["data"]["contentMediaType"] == "application/json"
    assert "204" in events
    health = doc["paths"]["/healthz"]["get"]["responses"]
    assert set(health) == {"200", "503"}
    assert doc["paths"]["/"]["get"]["responses"]["200"]["content"] == {
        "text/html": {"schema": {"type": "string"}}
    }


async def test_a_retry_is_documented_with_its_optional_body_and_409(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()
    register(bus)
    doc = await document(create_app(bus))
    retry = doc["paths"]["/tasks/{task_id}/retry"]["post"]
    assert set(retry["responses"]) == {"202", "400", "404", "409", "413", "422", "503"}
    assert retry["requestBody"]["required"] is False
    body = resolve(doc, retry["requestBody"]["content"]["application/json"]["schema"]["$ref"])
    assert set(body["properties"]) == {"priority", "delay", "run_at", "key"}
    assert body.get("required", []) == []
    listing = doc["paths"]["/tasks"]["get"]["parameters"]
    assert {"name": "dead_letter"}.items() <= next(
        p for p in listing if p["name"] == "dead_letter"
    ).items()
    snapshot = resolve(doc, SCHEMAS + "TaskSnapshot")
    assert "dead_letter" in snapshot["properties"]


async def test_with_auth_the_document_names_the_bearer_scheme(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()
    register(bus)
    app = create_app(bus, tokens=TOKENS)
    async with asgi_client(app) as client:  # it lists the types, as /types does
        assert (await client.get("/openapi.json")).status_code == 401
    doc = await document(app, "alice-token")
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    assert doc["paths"]["/events"]["get"]["security"] == [{"bearer": []}, {"access_token": []}]
    assert "401" in doc["paths"]["/tasks/{task_id}"]["get"]["responses"]
    without = await document(create_app(bus))
    assert "securitySchemes" not in without["components"] and "security" not in without
    assert "401" not in without["paths"]["/tasks/{task_id}"]["get"]["responses"]


async def test_model_names_that_clash_stay_apart(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()

    @bus.task("clash")
    async def clash(data: TaskSnapshot) -> None:
        return None

    doc = await document(create_app(bus))
    validate(doc)
    body = doc["paths"]["/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    branch = resolve(doc, body["discriminator"]["mapping"]["clash"])
    theirs = resolve(doc, branch["properties"]["input"]["$ref"])
    ours = doc["paths"]["/tasks/{task_id}"]["get"]["responses"]["200"]["content"]
    assert theirs["required"] == ["wanted"]
    assert "wanted" not in resolve(doc, ours["application/json"]["schema"]["$ref"])["properties"]


async def test_no_registered_type_documents_the_plain_body(
    make_bus: Callable[..., TaskBus],
) -> None:
    doc = await document(create_app(make_bus()))
    validate(doc)
    body = doc["paths"]["/tasks"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert resolve(doc, body["$ref"])["required"] == ["type"]


async def test_a_mounted_app_names_its_mount_as_server(make_bus: Callable[..., TaskBus]) -> None:
    bus = make_bus()
    outer = Starlette(routes=[Mount("/jobs", app=create_app(bus))])
    doc = await document(outer, path="/jobs/openapi.json")
    assert doc["servers"] == [{"url": "/jobs"}]
    assert "servers" not in await document(create_app(bus))


async def test_stats_answer_one_documented_shape_with_and_without_auth(
    make_bus: Callable[..., TaskBus],
) -> None:
    bus = make_bus()
    register(bus)
    async with bus:
        for app, token in ((create_app(bus), None), (create_app(bus, tokens=TOKENS), "bob-token")):
            later = {"type": "noop", "priority": 2, "delay": 3600}
            async with asgi_client(app, token) as client:
                assert (await client.post("/tasks", json=later)).status_code == 202
                stats = (await client.get("/stats")).json()
            assert set(stats) == {"by_state", "by_type", "queued_by_priority", "store_outage"}
            assert stats["store_outage"] is None
            assert stats["queued_by_priority"] == {"noop": {"2": 1}}  # bob's own, with auth
    doc = await document(create_app(bus))
    answer = doc["paths"]["/stats"]["get"]["responses"]["200"]["content"]["application/json"]
    queued = resolve(doc, answer["schema"]["$ref"])["properties"]["queued_by_priority"]
    assert queued["additionalProperties"] == {
        "type": "object",
        "additionalProperties": {"type": "integer"},
    }
    assert "10 most urgent" in queued["description"]
