"""Property-based: no request, however odd, gets a 5xx; every error is the JSON shape.

Requests go to the ASGI app directly (`_asgi.call`), so a method, path, query
string, header or body can hold any bytes. Each example opens its own bus (with
owners or single-user), with one running, one finished and one cancelled task of
Alice's whose ids the drawn paths and queries may name (and retries name the
cancelled one), and sends a few requests. The default profile runs 60 examples
a test; the test marked `fuzz` runs many more (``--run-fuzz``).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taskbus import TaskBus
from taskbus.integrations.http import create_app

from ._asgi import call
from ._fuzz import (
    CANCELLED,
    DONE,
    RUNNING,
    TOKENS,
    Sent,
    assert_contract,
    requests,
    retries,
    submissions,
)
from ._tasks import register

pytestmark = pytest.mark.anyio

# The bus is opened per example, inside it; the fixture only names the backend.
FIXTURE_OK = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


async def send_all(batch: list[Sent], with_owners: bool) -> None:
    bus = TaskBus(workers=2, shutdown_grace=0)
    gates = register(bus)
    app = create_app(bus, tokens=TOKENS if with_owners else None, max_body=4096)
    alice = [(b"authorization", b"Bearer alice-token")]
    async with bus:
        running = await call(app, "POST", "/tasks", headers=alice, body=b'{"type": "gated"}')
        done = await call(app, "POST", "/tasks", headers=alice, body=b'{"type": "noop"}')
        later = b'{"type": "noop", "delay": 3600}'
        stopped = await call(app, "POST", "/tasks", headers=alice, body=later)
        ids = {RUNNING: running.json()["id"], DONE: done.json()["id"]}
        ids[CANCELLED] = stopped.json()["id"]
        assert await bus.cancel(ids[CANCELLED])
        await bus.wait(ids[DONE], timeout=5)
        await bus.wait(ids[CANCELLED], timeout=5)
        for sent in batch:
            sent = sent.filled(ids)
            answer = await call(
                app, sent.method, sent.path, query=sent.query, headers=sent.headers, body=sent.body
            )
            assert_contract(answer, sent)
            if answer.status == 202:  # an accepted task must also be readable
                path = answer.json()["url"]
                assert_contract(await call(app, "GET", path, headers=sent.headers), sent)
        gates.release.set()


@FIXTURE_OK
@given(st.lists(requests, min_size=1, max_size=6), st.booleans())
async def test_no_request_gets_a_server_error(batch: list[Sent], with_owners: bool) -> None:
    await send_all(batch, with_owners)


@FIXTURE_OK
@given(st.lists(submissions, min_size=1, max_size=6), st.booleans())
async def test_no_submission_body_gets_a_server_error(batch: list[Sent], with_owners: bool) -> None:
    await send_all(batch, with_owners)


@FIXTURE_OK
@given(st.lists(retries, min_size=1, max_size=6), st.booleans())
async def test_no_retry_body_gets_a_server_error(batch: list[Sent], with_owners: bool) -> None:
    await send_all(batch, with_owners)


@pytest.mark.fuzz
@pytest.mark.timeout(1800)
@settings(max_examples=10_000, suppress_health_check=list(HealthCheck))
@given(st.lists(requests | submissions | retries, min_size=1, max_size=10), st.booleans())
async def test_fuzz_no_request_gets_a_server_error(batch: list[Sent], with_owners: bool) -> None:
    await send_all(batch, with_owners)
