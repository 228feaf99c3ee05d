"""Traces over HTTP (`taskbus.otel`): a task submitted by ``POST /tasks`` is submitted
under a span that is a child of the one current while the request is handled (here the test's own, as the in-process ASGI
transport runs the app in the caller's context; in a server, the span of an
OpenTelemetry ASGI middleware); a body that names the trace keys is a 422."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from taskbus import TaskBus, TaskContext
from taskbus.integrations.http import create_app
from taskbus.otel import instrument

from .conftest import asgi_client
from .test_rest import assert_error

pytestmark = pytest.mark.anyio


async def test_a_task_posted_during_a_request_span_runs_as_its_child(
    make_bus: Callable[..., TaskBus],
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    bus = make_bus()

    @bus.task("echo")
    async def echo(ctx: TaskContext, value: int) -> int:
        return value

    instrument(bus, tracer_provider=provider)
    async with bus, asgi_client(create_app(bus)) as client:
        forged = {"type": "echo", "input": 1, "metadata": {"traceparent": "00-forged"}}
        error = assert_error(await client.post("/tasks", json=forged), 422, "invalid_submission")
        assert "'traceparent' is taskbus's" in error["message"]
        assert (await client.get("/tasks")).json()["items"] == []  # nothing stored
        with provider.get_tracer("tests").start_as_current_span("POST /tasks") as request:
            answer = await client.post("/tasks", json={"type": "echo", "input": 2})
        assert answer.status_code == 202, answer.text
        assert await bus.result(answer.json()["id"], timeout=10) == 2
    spans = {span.name: span for span in exporter.get_finished_spans()}
    run, submit = spans["taskbus.run echo"], spans["taskbus.submit echo"]
    assert submit.parent is not None and submit.context is not None
    assert submit.parent.span_id == request.get_span_context().span_id
    assert run.parent is not None
    assert run.parent.span_id == submit.context.span_id
    provider.shutdown()
