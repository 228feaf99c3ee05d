"""What clients send that once got a 500: each now gets a 4xx in the error shape.

The inputs named in issue 8 (item 11), on a SQLite store where the store is
where they used to break, plus the other 5xx sources found while fuzzing.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from starlette.requests import Request

from taskbus import TaskBus, TaskContext
from taskbus.integrations.http import create_app

from ._asgi import call
from ._tasks import register
from .conftest import asgi_client
from .test_rest import assert_error

pytestmark = pytest.mark.anyio

TOKENS = {"alice-token": "alice"}
ALICE = [(b"authorization", b"Bearer alice-token")]


def sqlite_bus(make_bus: Callable[..., TaskBus], tmp_path: Path) -> TaskBus:
    bus = make_bus(store=f"sqlite:///{tmp_path / 'jobs.db'}")
    register(bus)
    return bus


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def test_a_body_nested_100000_deep_is_a_400(
    make_bus: Callable[..., TaskBus], tmp_path: Path
) -> None:
    bus = sqlite_bus(make_bus, tmp_path)
    async with bus, asgi_client(create_app(bus)) as client:
        for body in (nested(100_000), '{"a":' * 100_000 + "1" + "}" * 100_000):
            error = assert_error(await client.post("/tasks", content=body), 400, "bad_request")
            assert "nested deeper than 64 levels" in error["message"]


async def test_input_nested_900_deep_is_a_400_and_63_deep_runs(
    make_bus: Callable[..., TaskBus], tmp_path: Path
) -> None:
    bus = sqlite_bus(make_bus, tmp_path)
    async with bus, asgi_client(create_app(bus)) as client:
        deep = '{"type": "echo", "input": %s}'
        for depth in (900, 300, 64):
            response = await client.post("/tasks", content=deep % nested(depth))
            assert_error(response, 400, "bad_request")
        accepted = await client.post("/tasks", content=deep % nested(63))
        assert accepted.status_code == 202, accepted.text
        await bus.wait(accepted.json()["id"], timeout=5)
        snapshot = (await client.get(accepted.json()["url"])).json()
        assert snapshot["state"] == "completed"
        assert json.dumps(snapshot["result"], separators=(",", ":")) == nested(63)


async def test_a_cursor_decoding_to_2_63_is_a_400(
    make_bus: Callable[..., TaskBus], tmp_path: Path
) -> None:
    bus = sqlite_bus(make_bus, tmp_path)
    async with bus, asgi_client(create_app(bus)) as client:
        for offset in (2**63, 2**64, 10**13, -1):
            cursor = base64.urlsafe_b64encode(str(offset).encode()).decode()
            response = await client.get("/tasks", params={"cursor": cursor.rstrip("=")})
            assert_error(response, 400, "bad_request")
        for cursor in ("!!", "MTA=x", "٣", "A" * 100, "IDE", "MS4w"):  # " 1", "1.0"
            assert_error(await client.get("/tasks", params={"cursor": cursor}), 400, "bad_request")
        for limit in ("9" * 30, "1e3", " 5", "٣", "-0"):
            assert_error(await client.get("/tasks", params={"limit": limit}), 400, "bad_request")


@pytest.mark.parametrize(
    ("delay", "status"),
    [
        ("NaN", 400),
        ("Infinity", 400),
        ("-Infinity", 400),
        ("1e400", 400),  # a float overflow is no more a number than Infinity is
        ("1e300", 422),
        ("3e11", 422),  # past the year 9999
        ("253402300800", 422),
        ('""', 422),
        ("false", 422),
        ("true", 422),
        ('"5"', 422),
        ("-1", 422),
    ],
)
async def test_delays_not_finite_past_year_9999_or_not_numbers_are_4xx(
    make_bus: Callable[..., TaskBus], tmp_path: Path, delay: str, status: int
) -> None:
    bus = sqlite_bus(make_bus, tmp_path)
    async with bus, asgi_client(create_app(bus)) as client:
        response = await client.post("/tasks", content=f'{{"type": "noop", "delay": {delay}}}')
        assert_error(response, status, "bad_request" if status == 400 else "invalid_submission")
        assert (await client.get("/tasks")).json()["items"] == []  # nothing stored


@pytest.mark.parametrize(
    ("run_at", "status"),
    [
        ('"2030-01-01T00:00:00"', 422),  # no offset: naive
        ('"tomorrow"', 422),
        ("1900000000", 422),
        ('"9999-01-01T00:00:00Z"', 422),  # more than 100 years ahead
    ],
)
async def test_run_at_times_without_an_offset_or_out_of_range_are_422(
    make_bus: Callable[..., TaskBus], tmp_path: Path, run_at: str, status: int
) -> None:
    bus = sqlite_bus(make_bus, tmp_path)
    async with bus, asgi_client(create_app(bus)) as client:
        response = await client.post("/tasks", content=f'{{"type": "noop", "run_at": {run_at}}}')
        error = assert_error(response, status, "invalid_submission")
        assert "run_at" in json.dumps(error)
        both = await client.post(
            "/tasks", json={"type": "noop", "delay": 1, "run_at": "2030-01-01T00:00:00Z"}
        )
        assert_error(both, 422, "invalid_submission")
        assert (await client.get("/tasks")).json()["items"] == []  # nothing stored


async def test_run_at_with_an_offset_is_kept_as_the_tasks_not_before(
    make_bus: Callable[..., TaskBus], tmp_path: Path
) -> None:
    bus = sqlite_bus(make_bus, tmp_path)
    async with bus, asgi_client(create_app(bus)) as client:
        answer = await client.post(
            "/tasks", json={"type": "noop", "run_at": "2099-06-01T12:00:00+02:00"}
        )
        assert answer.status_code == 202, answer.text
        snapshot = (await client.get(answer.json()["url"])).json()
    assert snapshot["state"] == "queued"
    assert snapshot["not_before"].startswith("2099-06-01T10:00:00")


async def test_after_runs_the_task_once_its_parents_are_done(
    make_bus: Callable[..., TaskBus], tmp_path: Path
) -> None:
    bus = sqlite_bus(make_bus, tmp_path)
    app = create_app(bus, tokens={**TOKENS, "bob-token": "bob"})
    async with bus, asgi_client(app, "alice-token") as alice:
        parent = (await alice.post("/tasks", json={"type": "echo", "input": 1})).json()
        answer = await alice.post(
            "/tasks",
            json={"type": "echo", "input": 2, "after": [parent["id"]], "on_parent_failure": "run"},
        )
        assert answer.status_code == 202, answer.text
        child = await bus.wait(answer.json()["id"], timeout=10)
    assert (child.state, child.result) == ("completed", 2)
    assert child.metadata == {"after": [parent["id"]], "on_parent_failure": "run"}


@pytest.mark.parametrize(
    ("after", "policy", "where"),
    [
        ('"abc"', '"cancel"', "after"),  # one id, not a list
        ("[1]", '"cancel"', "after"),
        ('[""]', '"cancel"', "after"),
        ("[]", '"ignore"', "on_parent_failure"),
        ("[]", "null", "on_parent_failure"),
    ],
)
async def test_after_and_on_parent_failure_of_the_wrong_shape_are_422(
    make_bus: Callable[..., TaskBus], tmp_path: Path, after: str, policy: str, where: str
) -> None:
    bus = sqlite_bus(make_bus, tmp_path)
    async with bus, asgi_client(create_app(bus)) as client:
        body = f'{{"type": "noop", "after": {after}, "on_parent_failure": {policy}}}'
        error = assert_error(await client.post("/tasks", content=body), 422, "invalid_submission")
        assert [detail["loc"][0] for detail in error["details"]] == [where]
        too_many = {"type": "noop", "after": [f"t{i}" for i in range(1001)]}
        assert_error(await client.post("/tasks", json=too_many), 422, "invalid_submission")
        assert (await client.get("/tasks")).json()["items"] == []  # nothing stored


async def test_a_parent_unknown_or_of_another_owner_is_422_and_stores_nothing(
    make_bus: Callable[..., TaskBus], tmp_path: Path
) -> None:
    bus = sqlite_bus(make_bus, tmp_path)
    app = create_app(bus, tokens={**TOKENS, "bob-token": "bob"})
    async with bus, asgi_client(app, "alice-token") as alice, asgi_client(app, "bob-token") as bob:
        bobs = (await bob.post("/tasks", json={"type": "noop"})).json()["id"]
        for parent in (bobs, "0" * 32):
            answer = await alice.post("/tasks", json={"type": "noop", "after": [parent]})
            error = assert_error(answer, 422, "invalid_submission")
            assert error["message"] == f"unknown parent task {parent!r} in after"
        assert (await alice.get("/tasks")).json()["items"] == []


@pytest.mark.parametrize("key", ["-5", "[1]", '{"a": 1}', "true", "1.5"])
async def test_keys_that_are_not_strings_are_422(
    make_bus: Callable[..., TaskBus], tmp_path: Path, key: str
) -> None:
    bus = sqlite_bus(make_bus, tmp_path)
    async with bus, asgi_client(create_app(bus)) as client:
        response = await client.post("/tasks", content=f'{{"type": "noop", "key": {key}}}')
        error = assert_error(response, 422, "invalid_submission")
        assert [detail["loc"] for detail in error["details"]] == [["key"]]


@pytest.mark.parametrize(
    "body",
    [
        '{"type": "\\ud800"}',
        '{"type": "noop", "key": "\\udfff"}',
        '{"type": "noop", "metadata": {"\\ud800": 1}}',
        '{"type": "echo", "input": ["ok", {"x": "a\\udc80b"}]}',
    ],
)
async def test_lone_surrogates_anywhere_in_a_body_are_400(
    make_bus: Callable[..., TaskBus], tmp_path: Path, body: str
) -> None:
    bus = sqlite_bus(make_bus, tmp_path)
    async with bus, asgi_client(create_app(bus)) as client:
        error = assert_error(await client.post("/tasks", content=body), 400, "bad_request")
        assert "lone surrogate" in error["message"]
        paired = await client.post("/tasks", content='{"type": "echo", "input": "\\ud83d\\ude00"}')
        assert paired.status_code == 202  # a surrogate pair is one character: fine


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"type": "noop", "priority": 1' + b"0" * 400 + b"}", 422),
        (b'{"type": "noop", "priority": 5.0}', 422),
        (b'{"type": "echo", "input": [NaN]}', 400),
        (b'{"type": "echo", "input": 1e999}', 400),
        (b'{"type": "echo", "input": 1' + b"0" * 5000 + b"}", 400),
        (b'{"type": "\xff"}', 400),
        (b"\xef\xbb\xbf{}", 400),
        (b'\xff\xfe{\x00"\x00t\x00', 400),
        (b'{"type": 5}', 422),
        (b'{"type": ""}', 422),
        (b'{"type": "noop", "owner": "mallory"}', 422),
        (b'{"type": "shop:order", "input": "not an object"}', 422),
    ],
)
async def test_odd_bodies_are_4xx(
    make_bus: Callable[..., TaskBus], tmp_path: Path, body: bytes, status: int
) -> None:
    bus = sqlite_bus(make_bus, tmp_path)
    async with bus, asgi_client(create_app(bus)) as client:
        assert (await client.post("/tasks", content=body)).status_code == status


async def test_odd_ids_headers_and_reasons_are_4xx_or_fine(
    make_bus: Callable[..., TaskBus], tmp_path: Path
) -> None:
    bus = sqlite_bus(make_bus, tmp_path)
    app = create_app(bus, tokens=TOKENS)
    async with bus:
        for task_id in ("\ud800", "\x00", "a" * 300, "%ED%A0%80", " "):
            for method in ("GET", "DELETE"):
                answer = await call(app, method, f"/tasks/{task_id}", headers=ALICE)
                assert answer.status == 404, answer.describe()
        for query in (b"task_id=%ED%A0%80", b"task_id=%00", b"task_id=" + b"a" * 300):
            answer = await call(app, "GET", "/events", query=query, headers=ALICE)
            assert answer.status == 404, answer.describe()
        for last in (b"\xff", b"-1", b"1e3", b"9" * 30, b"\xd9\xa3", b" "):
            headers = [*ALICE, (b"last-event-id", last)]
            answer = await call(app, "GET", "/events", headers=headers)
            assert answer.status == 400, answer.describe()
        for token in (b"Bearer \xff\xfe", b"Bearer \x00", b"Bearer " + b"x" * 5000, b"\xff"):
            answer = await call(app, "GET", "/tasks", headers=[(b"authorization", token)])
            assert answer.status == 401, answer.describe()
        for length in (b"\xb2", b"\xd9\xa3", b"\xef\xbc\x91"):  # digits, but not ASCII ones
            headers = [*ALICE, (b"content-length", length)]
            answer = await call(app, "POST", "/tasks", headers=headers, body=b"")
            assert answer.status == 400, answer.describe()
        submitted = await call(app, "POST", "/tasks", headers=ALICE, body=b'{"type": "gated"}')
        url = submitted.json()["url"]
        for reason in (b"%00%ff", b"%ED%A0%80", b"x" * 5000, b"%E2%80%AE"):
            answer = await call(app, "DELETE", url, query=b"reason=" + reason, headers=ALICE)
            assert answer.status == 200, answer.describe()


async def test_a_fault_inside_a_route_is_logged_and_a_json_500(
    make_bus: Callable[..., TaskBus], caplog: pytest.LogCaptureFixture
) -> None:
    def broken_hook(request: Request) -> str:
        raise RuntimeError("the auth backend is down")

    bus = make_bus()
    app = create_app(bus, auth=broken_hook)
    with caplog.at_level(logging.ERROR, logger="taskbus.http"):
        answer = await call(app, "GET", "/tasks")
    assert answer.status == 500
    assert answer.json() == {
        "error": {"code": "internal_error", "message": "internal server error", "details": None}
    }
    assert isinstance(answer.raised, RuntimeError)  # starlette re-raises for the server's log
    [record] = [r for r in caplog.records if r.name == "taskbus.http"]
    assert record.exc_info is not None and "GET" in record.getMessage()


def _no_tenant(text: str) -> str:
    raise LookupError(f"no tenant for {text!r}")


async def test_a_key_function_that_fails_is_a_422_and_nothing_is_stored(
    make_bus: Callable[..., TaskBus], tmp_path: Path
) -> None:
    bus = sqlite_bus(make_bus, tmp_path)

    @bus.task("keyed", concurrency_key=_no_tenant)
    async def keyed(ctx: TaskContext, text: str) -> None:
        return None

    async with bus, asgi_client(create_app(bus)) as client:
        response = await client.post("/tasks", json={"type": "keyed", "input": "acme"})
        error = assert_error(response, 422, "invalid_submission")
        assert "no tenant for 'acme'" in json.dumps(error)
        assert (await client.get("/tasks")).json()["items"] == []  # nothing stored


async def test_a_task_held_back_by_its_rate_says_why_over_http(
    make_bus: Callable[..., TaskBus], tmp_path: Path
) -> None:
    bus = sqlite_bus(make_bus, tmp_path)

    @bus.task("rated", rate="1/minute", rate_key="owner")
    async def rated(ctx: TaskContext) -> None:
        return None

    async with bus, asgi_client(create_app(bus)) as client:
        first = await client.post("/tasks", json={"type": "rated"})
        second = await client.post("/tasks", json={"type": "rated"})
        assert (first.status_code, second.status_code) == (202, 202), second.text
        await bus.result(first.json()["id"], timeout=10)
        with anyio.fail_after(10):
            while True:  # the store says it, no event does
                snapshot = (await client.get(second.json()["url"])).json()
                if snapshot["waiting_for"] is not None:
                    break
                await anyio.sleep(0.01)
        await bus.cancel(second.json()["id"])
    assert snapshot["state"] == "queued"
    assert snapshot["waiting_for"] == "rate limit 1/minute"
    assert snapshot["attempts"] == 0
