"""The HTTP API's OpenAPI 3.1 document, generated from the models the routes use.

Every schema comes from pydantic in one pass (`TypeAdapter.json_schemas`): the
request body `SubmitBody`, the answers in `_http_models`, the error shape, the
events and each registered type's input, so a model two of them share appears
once under ``components/schemas`` with a unique name.

A submission is one body on one route, so its schema is a ``oneOf`` over the
registered types, discriminated by ``type``: each branch is `SubmitBody` with
``type`` fixed to the type's name and ``input`` that type's input schema
(required unless it admits null). One path per type would document routes the
app does not have. With no type registered it is the plain `SubmitBody`.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from .. import (
    AnyTaskEvent,
    BatchFinished,
    BatchProgress,
    Schedule,
    TaskDefinition,
    TaskSnapshot,
    TaskState,
    __version__,
)
from ._http_input import MAX_ID_LENGTH, MAX_NAME_LENGTH, AnswerBody, RetryBody, SubmitBody
from ._http_models import (
    CallerAnswer,
    CancelAnswer,
    ErrorAnswer,
    Health,
    StatsAnswer,
    StatsHistoryAnswer,
    SubmitAnswer,
    TaskPage,
    TypeInfo,
)
from ._http_schedules import ScheduleBody, ScheduleList

__all__ = ["openapi_document"]

REF = "#/components/schemas/{model}"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")

_ERRORS = {
    "400": "Malformed JSON, query parameter, cursor or Last-Event-ID.",
    "401": "Missing or unknown bearer token.",
    "404": "No such task or schedule (or another owner's), or no such task type.",
    "409": "The task cannot be retried: it is queued, running, waiting or completed "
    "(`not_retryable`), or its type is no longer registered (`unknown_task_type`); or "
    "it waits for no input (it never asked, was answered, or finished: `not_waiting`).",
    "403": "Only an administrator may read the metrics and the stats history.",
    "413": "The body is larger than the app's `max_body`.",
    "422": "The body or the task's input does not validate (pydantic's errors in details).",
    "503": "The bus is not running.",
}


def openapi_document(
    definitions: Sequence[TaskDefinition[Any, Any]],
    *,
    auth: bool,
    dashboard: bool,
    metrics: bool = False,
) -> dict[str, Any]:
    """The document for an app over these task types, with or without an auth hook."""
    fixed: list[tuple[str, JsonSchemaMode, Any]] = [
        ("submit", "validation", SubmitBody),
        ("retry", "validation", RetryBody),
        ("answer", "validation", AnswerBody),
        ("submitted", "serialization", SubmitAnswer),
        ("snapshot", "serialization", TaskSnapshot),
        ("state", "serialization", TaskState),
        ("page", "serialization", TaskPage),
        ("cancelled", "serialization", CancelAnswer),
        ("stats", "serialization", StatsAnswer),
        ("stats_history", "serialization", StatsHistoryAnswer),
        ("types", "serialization", list[TypeInfo]),
        ("health", "serialization", Health),
        ("me", "serialization", CallerAnswer),
        ("error", "serialization", ErrorAnswer),
        ("events", "serialization", AnyTaskEvent | BatchProgress | BatchFinished),
        ("schedule_body", "validation", ScheduleBody),
        ("schedule", "serialization", Schedule),
        ("schedules", "serialization", ScheduleList),
    ]
    inputs: list[tuple[str, JsonSchemaMode, TypeAdapter[Any]]] = [
        (key, mode, TypeAdapter(model)) for key, mode, model in fixed
    ]
    inputs += [(f"input:{d.name}", "validation", d.input_adapter) for d in definitions]
    keyed, top = TypeAdapter.json_schemas(inputs, ref_template=REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    ref = {key: value for (key, _mode), value in keyed.items()}
    submit = _submit_schema(schemas, ref, definitions)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "taskbus",
            "version": __version__,
            "description": "Submit, watch and cancel background tasks. Every non-2xx "
            "answer is the `ErrorAnswer` shape; a method a path does not serve is a 405 "
            "with `Allow`.",
        },
        "paths": _paths(ref, submit, auth=auth, dashboard=dashboard, metrics=metrics),
        "components": {"schemas": schemas},
    }
    if auth:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer"},
            "access_token": {
                "type": "apiKey",
                "in": "query",
                "name": "access_token",
                "description": "For a browser's EventSource: accepted on `GET /events` only.",
            },
        }
        document["security"] = [{"bearer": []}]
    return document


def _submit_schema(
    schemas: dict[str, Any], ref: dict[str, Any], definitions: Sequence[TaskDefinition[Any, Any]]
) -> dict[str, Any]:
    if not definitions:
        return dict(ref["submit"])
    base = schemas[ref["submit"]["$ref"].rpartition("/")[2]]
    mapping: dict[str, str] = {}
    for definition in definitions:
        name = _free_name(schemas, "Submit-" + _UNSAFE.sub("_", definition.name))
        input_schema = ref[f"input:{definition.name}"]
        branch = copy.deepcopy(base)
        branch["title"] = f"Submit {definition.name}"
        if definition.description:
            branch["description"] = definition.description
        branch["properties"]["type"] = {"const": definition.name, "type": "string"}
        branch["properties"]["input"] = input_schema
        branch["required"] = ["type"] if _admits_null(input_schema) else ["type", "input"]
        schemas[name] = branch
        mapping[definition.name] = REF.format(model=name)
    return {
        "oneOf": [{"$ref": target} for target in mapping.values()],
        "discriminator": {"propertyName": "type", "mapping": mapping},
    }


def _free_name(schemas: dict[str, Any], name: str) -> str:
    candidate, n = name, 1
    while candidate in schemas:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def _admits_null(schema: dict[str, Any]) -> bool:
    """Whether JSON null validates against `schema`, as far as its top level says."""
    if not schema:
        return True
    kind = schema.get("type")
    if kind == "null" or (isinstance(kind, list) and "null" in kind):
        return True
    return any(_admits_null(s) for s in [*schema.get("anyOf", ()), *schema.get("oneOf", ())])


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema or {"type": "string"},
    }


_TASK_ID = {
    "name": "task_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
}
_NAME = {"type": "string", "maxLength": MAX_NAME_LENGTH}


def _operation(
    summary: str, responses: dict[str, Any], errors: Sequence[str], ref: dict[str, Any], **more: Any
) -> dict[str, Any]:
    for status in errors:
        responses[status] = _json(ref["error"], _ERRORS[status])
    return {"summary": summary, "responses": responses, **more}


def _paths(
    ref: dict[str, Any], submit: dict[str, Any], *, auth: bool, dashboard: bool, metrics: bool
) -> dict[str, Any]:
    guard = ["401"] if auth else []
    state = ref["state"]
    location = {"Location": {"description": "The task's url.", "schema": {"type": "string"}}}
    paths: dict[str, Any] = {
        "/tasks": {
            "post": _operation(
                "Submit a task (202 at once, with its id)",
                {"202": _json(ref["submitted"], "Accepted.", headers=location)},
                ["400", *guard, "404", "413", "422", "503"],
                ref,
                requestBody={"required": True, "content": {"application/json": {"schema": submit}}},
            ),
            "get": _operation(
                "A page of tasks, oldest first unless order=newest",
                {"200": _json(ref["page"], "One page.")},
                ["400", *guard],
                ref,
                parameters=[
                    _query("state", "Only tasks in this state.", state),
                    _query("type", "Only types that start with this.", _NAME),
                    _query("owner", "Only this owner's (with auth: yours only).", _NAME),
                    _query("cursor", "`next_cursor` of the previous page."),
                    _query(
                        "order",
                        "oldest (the default) or newest first.",
                        {"type": "string", "enum": ["oldest", "newest"]},
                    ),
                    _query(
                        "limit", "Page size.", {"type": "integer", "minimum": 1, "maximum": 500}
                    ),
                    _query(
                        "dead_letter",
                        "true: only dead letters (failed tasks).",
                        {"type": "string", "enum": ["true", "false"]},
                    ),
                ],
            ),
        },
        "/tasks/{task_id}": {
            "parameters": [_TASK_ID],
            "get": _operation(
                "A task's snapshot",
                {"200": _json(ref["snapshot"], "The snapshot.")},
                [*guard, "404"],
                ref,
            ),
            "delete": _operation(
                "Cancel a task",
                {"200": _json(ref["cancelled"], "Whether this call cancelled it.")},
                [*guard, "404", "422"],
                ref,
                parameters=[_query("reason", "Why (kept on the task, cut to 500 characters).")],
            ),
        },
        "/tasks/{task_id}/retry": {
            "parameters": [_TASK_ID],
            "post": _operation(
                "Run a failed or cancelled task again, as a new task (202 at once, with "
                "its id); it names the old one in `metadata.retry_of`",
                {"202": _json(ref["submitted"], "Accepted: the new task.", headers=location)},
                ["400", *guard, "404", "409", "413", "422", "503"],
                ref,
                requestBody={
                    "required": False,
                    "content": {"application/json": {"schema": ref["retry"]}},
                },
            ),
        },
        "/tasks/{task_id}/input": {
            "parameters": [_TASK_ID],
            "post": _operation(
                "Answer the question of a task waiting for input (ctx.ask)",
                {"200": _json(ref["snapshot"], "Answered: the task is queued again.")},
                ["400", *guard, "404", "409", "413", "422"],
                ref,
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": ref["answer"]}},
                },
            ),
        },
        "/stats": {
            "get": _operation(
                "Counts by state and type", {"200": _json(ref["stats"], "Counts.")}, guard, ref
            )
        },
        "/stats/history": {
            "get": _operation(
                "The last ten minutes of figures: finals per interval (every process on "
                "the store), queue depth and running (an administrator's, with auth)",
                {"200": _json(ref["stats_history"], "Points, oldest first.")},
                [*guard, "403"] if auth else [],
                ref,
            )
        },
        "/types": {
            "get": _operation(
                "The registered task types", {"200": _json(ref["types"], "Types.")}, guard, ref
            )
        },
        "/me": {
            "get": _operation(
                "Who the caller is: their owner, and whether they see every owner's tasks",
                {"200": _json(ref["me"], "The caller.")},
                guard,
                ref,
            )
        },
        "/healthz": {
            "get": _operation(
                "Whether the bus runs",
                {"200": _json(ref["health"], "The bus runs.")},
                ["503"],
                ref,
                security=[],
            )
        },
        "/events": {"get": _events(ref, guard)},
        "/openapi.json": {
            "get": _operation(
                "This document",
                {"200": _json({"type": "object"}, "The OpenAPI document.")},
                guard,
                ref,
            )
        },
    }
    paths.update(_schedule_paths(ref, guard))
    if metrics:
        paths["/metrics"] = {
            "get": _operation(
                "Prometheus metrics: aggregate counts only (an administrator's, with auth)",
                {
                    "200": {
                        "description": "The text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                [*guard, "403"] if auth else [],
                ref,
            )
        }
    if dashboard:
        paths["/"] = {
            "get": _operation(
                "The live dashboard page",
                {
                    "200": {
                        "description": "The page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
                ["404"],
                ref,
                security=[],
            )
        }
    return paths


_SCHEDULE_ID = {
    "name": "schedule_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
}


def _schedule_paths(ref: dict[str, Any], guard: list[str]) -> dict[str, Any]:
    location = {"Location": {"description": "The schedule's url.", "schema": {"type": "string"}}}
    one = {"200": _json(ref["schedule"], "The schedule.")}

    def switch(summary: str) -> dict[str, Any]:
        return {
            "parameters": [_SCHEDULE_ID],
            "post": _operation(summary, dict(one), [*guard, "404"], ref),
        }

    return {
        "/schedules": {
            "get": _operation(
                "The schedules (with auth: yours; an administrator's: every one)",
                {"200": _json(ref["schedules"], "The schedules, by id.")},
                ["400", *guard],
                ref,
                parameters=[_query("owner", "Only this owner's (with auth: yours only).", _NAME)],
            ),
            "post": _operation(
                "Store a schedule (the same id again replaces it, keeping its next fire "
                "when the timing is unchanged)",
                {"200": _json(ref["schedule"], "The stored schedule.", headers=location)},
                ["400", *guard, "404", "413", "422", "503"],
                ref,
                requestBody={
                    "required": True,
                    "content": {"application/json": {"schema": ref["schedule_body"]}},
                },
            ),
        },
        "/schedules/{schedule_id}": {
            "parameters": [_SCHEDULE_ID],
            "get": _operation("A schedule", dict(one), [*guard, "404"], ref),
            "delete": _operation(
                "Remove a schedule (the tasks it fired stay)",
                {"204": {"description": "Removed."}},
                [*guard, "404"],
                ref,
            ),
        },
        "/schedules/{schedule_id}/pause": switch("Pause a schedule: it never fires until resumed"),
        "/schedules/{schedule_id}/resume": switch(
            "Resume a schedule, from its next fire time after now"
        ),
    }


def _events(ref: dict[str, Any], guard: list[str]) -> dict[str, Any]:
    # Each event as OpenAPI 3.2's `itemSchema` has it: an object of the SSE fields,
    # `data` JSON of an event model. 3.1 has no word for a stream of items, so it
    # stands as the media type's schema, which is how schemathesis reads it.
    event = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "The event id (for Last-Event-ID)."},
            "event": {"type": "string", "description": "The event's name."},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": ref["events"],
            },
            "retry": {"type": "integer"},
        },
        "required": ["event", "data"],
    }
    stream = {
        "description": "Server-sent events: `id:` the event id, `event:` its name "
        "(`task-queued` ... `task-cancelled`, and batch events when unfiltered and "
        "without auth), `data:` the event as JSON.",
        "content": {"text/event-stream": {"schema": event}},
    }
    return _operation(
        "Stream events (resumable with Last-Event-ID)",
        {"200": stream, "204": {"description": "That task's stream has nothing more to send."}},
        ["400", *guard, "404"],
        ref,
        parameters=[
            _query("task_id", "Only this task's events; the stream ends after its final one."),
            _query("type", "Only types that start with this.", _NAME),
            _query("last_event_id", "As the Last-Event-ID header, for clients without headers."),
            {
                "name": "Last-Event-ID",
                "in": "header",
                "required": False,
                "description": "Resume after this event id.",
                "schema": {"type": "string"},
            },
        ],
        **({"security": [{"bearer": []}, {"access_token": []}]} if guard else {}),
    )
