"""schemathesis against the live app, in-process, with and without owners.

Each test loads the document from the app's own ``GET /openapi.json`` and sends
what schemathesis generates from it (valid and invalid requests, and methods a
path does not serve) through schemathesis's ASGI client. The app runs its bus
(``manage_bus=True``) in that client's event loop, for the whole test. Checks:
no 5xx, status codes, content types, headers and bodies as documented. The normal run draws a few
examples per operation; the test marked `fuzz` draws many more (``--run-fuzz``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import CHECKS
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.schemas import BaseSchema

from taskbus import TaskBus
from taskbus.integrations.http import create_app

from ._fuzz import TOKENS
from ._tasks import register

CHECK_NAMES = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]
#: An event stream with no events to send is cut after this long.
STREAM_TIMEOUT = 0.2
ANSWER_TIMEOUT = 10
ALICE = {"Authorization": "Bearer alice-token"}


def timeout(case: Case[Any]) -> float:
    """Only an event stream is cut short; anything else has time to answer under load."""
    return STREAM_TIMEOUT if case.operation.path == "/events" else ANSWER_TIMEOUT


@contextmanager
def live_schema(owners: bool) -> Iterator[BaseSchema]:
    """The document the live app serves, loaded by schemathesis; the app's bus runs
    until the end of the block."""
    bus = TaskBus(workers=2, shutdown_grace=0)
    register(bus)
    app = create_app(bus, tokens=TOKENS if owners else None, manage_bus=True, max_body=4096)
    try:
        yield schemathesis.openapi.from_asgi("/openapi.json", app, headers=ALICE if owners else {})
    finally:
        shutdown_lifespans()


def check_every_operation(schema: BaseSchema, owners: bool, examples: int) -> None:
    checks: list[Any] = [CHECKS.get_one(name) for name in CHECK_NAMES]
    headers = ALICE if owners else None
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) == 20
    for operation in operations:
        inputs = [operation.path_parameters, operation.query, operation.headers, operation.body]
        modes = [GenerationMode.POSITIVE]
        if any(len(part) for part in inputs):  # nothing to make invalid otherwise
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:

            @given(operation.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, suppress_health_check=list(HealthCheck))
            def run(case: Case[Any]) -> None:
                case.call_and_validate(headers=headers, checks=checks, timeout=timeout(case))

            run()
    # A stream cut short holds no event unless it replays the history: read it all once.
    submit = schema["/tasks"]["POST"].Case(body={"type": "noop"}, headers=headers)
    assert submit.call_and_validate(checks=checks, timeout=ANSWER_TIMEOUT).status_code == 202
    replay = schema["/events"]["GET"].Case(headers={**(headers or {}), "Last-Event-ID": "0"})
    response = replay.call_and_validate(checks=checks, timeout=STREAM_TIMEOUT)
    assert response.status_code == 200 and b"event: task-queued" in response.content


@pytest.mark.parametrize("owners", [False, True], ids=["single-user", "owners"])
def test_the_app_keeps_to_its_document(owners: bool) -> None:
    with live_schema(owners) as schema:
        check_every_operation(schema, owners, examples=5)


@pytest.mark.fuzz
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("owners", [False, True], ids=["single-user", "owners"])
def test_fuzz_the_app_keeps_to_its_document(owners: bool) -> None:
    with live_schema(owners) as schema:
        check_every_operation(schema, owners, examples=500)
