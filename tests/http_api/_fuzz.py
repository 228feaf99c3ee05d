"""Hypothesis strategies for what an HTTP client may send, and the answer's contract."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from ._asgi import Answer

TOKENS = {"alice-token": "alice", "bob-token": "bob"}
#: Placeholders a drawn path or query stands for, filled in with real ids per example.
RUNNING, DONE, CANCELLED = "@running", "@done", "@cancelled"

ODD_CHARS = ["\ud800", "\udfff", "\udc80", "\x00", "\n", "\r", "\uffff", "\U0001f600", "%", "/"]
odd_text = st.text(alphabet=st.characters() | st.sampled_from(ODD_CHARS), max_size=24)

big_ints = st.sampled_from([2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**300])
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    big_ints,
    st.floats(),  # NaN and infinities included: they must be refused as JSON
    odd_text,
)
json_value = st.recursive(
    leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(odd_text, children, max_size=4)
    ),
    max_leaves=12,
)
odd_number = st.one_of(
    st.integers(),
    st.floats(),
    big_ints,
    st.sampled_from([0, 1, 5, 10, 11, -1, -5, 1e308, 3e11, 253_402_300_800, 0.5, -0.0]),
    st.booleans(),
    st.none(),
    odd_text,
    st.lists(st.integers(), max_size=2),
)
TYPES = ["noop", "echo", "shop:order", "gated", "nope", "", "shop:"]
submission = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | odd_text | odd_number},
    optional={
        "input": json_value,
        "priority": odd_number,
        "delay": odd_number,
        "key": odd_number | odd_text,
        "metadata": json_value,
        "owner": odd_text,
        "extra": json_value,
    },
)


def nested(depth: int, array: bool) -> bytes:
    if array:
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def encode(value: Any, ascii_only: bool) -> bytes:
    """JSON as a sloppy client writes it: NaN allowed, surrogates raw or escaped."""
    text = json.dumps(value, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


deep_body = st.builds(nested, st.integers(1, 3000), st.booleans())
deep_input = st.builds(
    lambda depth, array: b'{"type": "echo", "input": ' + nested(depth, array) + b"}",
    st.integers(50, 1200),
    st.booleans(),
)
bodies = st.one_of(
    st.builds(encode, submission, st.booleans()),
    st.builds(encode, json_value, st.booleans()),
    st.binary(max_size=64),
    deep_body,
    deep_input,
    st.sampled_from([b"", b"{", b"null", b"[]", b'"x"', b"\xef\xbb\xbf{}", b'{"type": NaN}']),
)

segments = st.one_of(
    st.sampled_from([RUNNING, DONE, CANCELLED, "0" * 32, "f" * 32, "x", "..", "%2F", "a" * 300]),
    odd_text.filter(lambda text: text and "/" not in text),
)
QUERY_NAMES = [
    "state",
    "limit",
    "cursor",
    "owner",
    "type",
    "task_id",
    "last_event_id",
    "access_token",
    "reason",
    "dead_letter",
]
query_values = st.one_of(
    odd_text,
    st.sampled_from(
        [
            "0",
            "-1",
            "1",
            "500",
            "501",
            "9" * 30,
            "MTA",  # base64 of "10"
            "OTIyMzM3MjAzNjg1NDc3NTgwOA",  # base64 of 2**63
            "LTE",  # base64 of "-1"
            "queued",
            "completed",
            "true",
            "false",
            "alice-token",
            "bob-token",
            RUNNING,
            DONE,
        ]
    ),
)
queries = st.one_of(
    st.lists(st.tuples(st.sampled_from(QUERY_NAMES) | odd_text, query_values), max_size=4).map(
        lambda pairs: "&".join(
            quote(name.encode("utf-8", "surrogatepass"))
            + "="
            + quote(value.encode("utf-8", "surrogatepass"))
            for name, value in pairs
        ).encode()
    ),
    st.binary(max_size=40),
)
header_values = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"Bearer alice-token",
            b"Bearer bob-token",
            b"bearer \xff\xfe",
            b"Bearer ",
            b"Basic YTpi",
            b"0",
            b"-1",
            b"99999999999999999999999999",
            b"application/json",
        ]
    ),
)
headers = st.lists(
    st.tuples(
        st.sampled_from(
            [b"authorization", b"last-event-id", b"content-length", b"content-type", b"accept"]
        ),
        header_values,
    ),
    max_size=3,
)
METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"]
paths = st.one_of(
    st.sampled_from(
        ["/tasks", "/stats", "/stats/history", "/types", "/healthz", "/events", "/", "/static/x"]
    ),
    segments.map(lambda segment: f"/tasks/{segment}"),
    segments.map(lambda segment: f"/tasks/{segment}/retry"),
    segments.map(lambda segment: f"/static/{segment}"),
    odd_text.map(lambda text: "/" + text),
)


@dataclass(frozen=True)
class Sent:
    """One drawn request, with placeholders for the ids of real tasks."""

    method: str
    path: str
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def filled(self, ids: dict[str, str]) -> Sent:
        path, query = self.path, self.query
        for name, task_id in ids.items():
            path = path.replace(name, task_id)
            query = query.replace(quote(name).encode(), task_id.encode())
        return Sent(self.method, path, query, self.headers, self.body)


requests = st.builds(Sent, st.sampled_from(METHODS), paths, queries, headers, bodies)
submissions = st.builds(Sent, st.just("POST"), st.just("/tasks"), st.just(b""), st.just([]), bodies)
#: Retries of Alice's cancelled (or completed) task, with drawn bodies (optional for a retry).
retries = st.builds(
    Sent,
    st.just("POST"),
    st.sampled_from([f"/tasks/{CANCELLED}/retry", f"/tasks/{DONE}/retry"]),
    st.just(b""),
    headers,
    bodies
    | st.sampled_from(
        [b"{}", b'{"priority": 9, "key": "k"}', b'{"run_at": "2000-01-01T00:00:00Z"}']
    ),
)


def assert_contract(answer: Answer, sent: Sent) -> None:
    """No 5xx, nothing escaped the app, and every error is the documented JSON."""
    assert answer.raised is None, (sent, answer.describe())
    assert 200 <= answer.status < 500, (sent, answer.describe())
    if answer.status >= 400:
        assert answer.headers[b"content-type"].startswith(b"application/json"), sent
        body = answer.json()
        assert set(body) == {"error"}, (sent, body)
        assert set(body["error"]) == {"code", "message", "details"}, (sent, body)
        assert isinstance(body["error"]["code"], str) and body["error"]["code"], (sent, body)
        assert isinstance(body["error"]["message"], str), (sent, body)
