"""The store codec at its edge: what it refuses, what it escapes, what it reads back.

Rows are written into an in-memory SQLite database with the store's own schema,
so "storable" means what SQLite really accepts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from taskbus import CorruptRecord, ErrorInfo, ErrorType, StoreError, TaskState, UnstorableValue
from taskbus._record import TaskRecord, new_task_id
from taskbus.stores._codec import (
    COLUMNS,
    check_storable,
    row_from_record,
    salvage_row,
    unstorable_row,
)
from taskbus.stores._codec_read import record_from_row
from taskbus.stores._sqlite_schema import UPSERT, connect, migrate

T0 = 1_700_000_000.0
SELECT = f"SELECT {', '.join(COLUMNS)} FROM tasks WHERE id = ?"


def make_record(**values: Any) -> TaskRecord:
    record = TaskRecord(new_task_id(), "reports:build", {"year": 1}, 5, T0, 3, "alice")
    for name, value in values.items():
        setattr(record, name, value)
    return record


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    conn = connect(Path(":memory:"), busy_timeout=1.0)
    migrate(conn, Path(":memory:"))
    try:
        yield conn
    finally:
        conn.close()


def write_and_read(conn: sqlite3.Connection, row: tuple[Any, ...]) -> tuple[Any, ...]:
    conn.execute(UPSERT, row)
    stored: tuple[Any, ...] = conn.execute(SELECT, (row[0],)).fetchone()
    return stored


# -- refused: identity text and JSON values ------------------------------------------


@pytest.mark.parametrize("field", ["owner", "key", "type"])
def test_a_lone_surrogate_in_identity_text_is_refused_naming_the_task_and_field(
    field: str,
) -> None:
    record = make_record(**{field: "k\ud800"})

    with pytest.raises(UnstorableValue, match=rf"task {record.id} .*its {field} cannot be stored"):
        row_from_record(record)
    try:
        row_from_record(record)
    except UnstorableValue as exc:
        assert (exc.task_id, exc.field) == (record.id, field)
        assert isinstance(exc, StoreError) and isinstance(exc, ValueError)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("input", {"name": "k\ud800"}),
        ("input", b"\xff"),
        ("metadata", {"tag": b"\xfe\xff"}),
        ("result", b"\xff"),
        ("result", ["ok", "bad \udfff"]),
    ],
)
def test_json_values_that_cannot_be_encoded_are_refused_naming_the_field(
    field: str, value: Any
) -> None:
    record = make_record(**{field: value})

    with pytest.raises(UnstorableValue, match=rf"task {record.id} .*its {field} cannot be stored"):
        row_from_record(record)


def test_integers_beyond_64_bits_are_refused_for_priority_and_attempts() -> None:
    for field in ("priority", "attempt", "max_attempts"):
        with pytest.raises(UnstorableValue, match=f"its {field} cannot be stored.*64 bits"):
            row_from_record(make_record(**{field: 2**63}))


# -- stored safely: diagnostic text and counters -------------------------------------


def test_diagnostic_text_with_lone_surrogates_is_stored_escaped(db: sqlite3.Connection) -> None:
    error = ErrorInfo(
        message="bad \ud800 value",
        error_type=ErrorType.FATAL,
        exception_type="builtins.ValueError",
        traceback="Traceback ...\nValueError: bad \ud800 value\n",
    )
    record = make_record(
        state=TaskState.FAILED, message="page \udcff", cancel_reason="stop \ud801", error=error
    )

    got = record_from_row(write_and_read(db, row_from_record(record)))

    assert got.message == "page \\udcff"
    assert got.cancel_reason == "stop \\ud801"
    assert got.error is not None
    assert got.error.message == "bad \\ud800 value"
    assert got.error.traceback == "Traceback ...\nValueError: bad \\ud800 value\n"


def test_progress_counters_beyond_64_bits_are_stored_approximately(
    db: sqlite3.Connection,
) -> None:
    record = make_record(state=TaskState.RUNNING, attempt=1, current=10**20, total=10**21)

    got = record_from_row(write_and_read(db, row_from_record(record)))

    assert (got.current, got.total) == (10**20, 10**21)


def test_non_finite_progress_and_optional_times_are_stored_as_null(
    db: sqlite3.Connection,
) -> None:
    record = make_record(progress=float("nan"), eta=float("inf"), not_before=float("-inf"))

    got = record_from_row(write_and_read(db, row_from_record(record)))

    assert (got.progress, got.eta, got.not_before) == (None, None, None)


def test_unstorable_row_records_the_task_as_failed_with_the_reason(
    db: sqlite3.Connection,
) -> None:
    record = make_record(state=TaskState.COMPLETED, attempt=1, result=b"\xff", message="m\ud800")
    with pytest.raises(UnstorableValue) as refused:
        row_from_record(record)

    got = record_from_row(write_and_read(db, unstorable_row(record, refused.value, T0 + 5)))

    assert got.state is TaskState.FAILED
    assert got.result is None and got.finished_at == T0 + 5
    assert got.error is not None and "its result cannot be stored" in got.error.message
    assert got.error.exception_type == "taskbus.UnstorableValue"
    assert got.input == {"year": 1} and got.message == "m\\ud800"


# -- check_storable --------------------------------------------------------------------


class Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


@pytest.mark.parametrize(
    "value", [None, 1, "text ✓", {"a": [1, 2.5, None]}, b"utf-8 bytes", Opaque(), 10**30]
)
def test_check_storable_accepts_what_the_codec_writes(value: Any) -> None:
    check_storable(value, "result of task x")


def _circular() -> list[Any]:
    items: list[Any] = []
    items.append(items)
    return items


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"\xff", "invalid utf-8"),
        ("k\ud800", "surrogates not allowed"),
        ({"deep": ["ok", "k\udc80"]}, "surrogates not allowed"),
        (_circular(), "Circular reference"),
    ],
)
def test_check_storable_refuses_what_cannot_become_json(value: Any, why: str) -> None:
    with pytest.raises(UnstorableValue, match=rf"^result of task x cannot be stored: .*{why}"):
        check_storable(value, "result of task x")


# -- anything the codec writes, SQLite takes and the codec reads back -----------------

any_text = st.text(st.characters(exclude_categories=()), max_size=8) | st.sampled_from(
    ["k\ud800", "\udcff", "ok"]
)
any_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)
any_int = st.integers() | st.integers(min_value=-(2**70), max_value=2**70)


@given(
    owner=st.none() | any_text,
    key=st.none() | any_text,
    input=any_value,
    metadata=st.none() | st.dictionaries(any_text, any_value, max_size=3),
    result=any_value,
    message=st.none() | any_text,
    reason=st.none() | any_text,
    current=st.none() | any_int,
    total=st.none() | any_int,
    progress=st.none() | st.floats(),
    error_text=any_text,
)
def test_whatever_a_record_holds_it_is_refused_or_stored_and_read_back(
    owner: str | None,
    key: str | None,
    input: Any,
    metadata: dict[str, Any] | None,
    result: Any,
    message: str | None,
    reason: str | None,
    current: int | None,
    total: int | None,
    progress: float | None,
    error_text: str,
) -> None:
    record = make_record(
        owner=owner,
        key=key,
        input=input,
        metadata=metadata,
        result=result,
        message=message,
        cancel_reason=reason,
        current=current,
        total=total,
        progress=progress,
        state=TaskState.RUNNING,
        attempt=1,
        error=ErrorInfo(message=error_text, error_type=ErrorType.RETRYABLE, exception_type="x.Y"),
    )
    try:
        row = row_from_record(record)
    except UnstorableValue as exc:
        assert exc.task_id == record.id
        assert exc.field in {"owner", "key", "input", "metadata", "result"}
        event(f"refused: {exc.field}")
        return
    event("stored")
    conn = connect(Path(":memory:"), busy_timeout=1.0)
    try:
        migrate(conn, Path(":memory:"))
        got = record_from_row(write_and_read(conn, row))  # no CorruptRecord either
    finally:
        conn.close()
    assert (got.id, got.owner, got.key, got.state) == (record.id, owner, key, TaskState.RUNNING)


# -- reading rows no taskbus writes ------------------------------------------------------

CORRUPTIONS = [
    ("state", "bogus", "'bogus' is not a task state"),
    ("priority", "high", "not an integer from 1 to 10"),
    ("priority", 11, "not an integer from 1 to 10"),
    ("priority", 2.5, "not an integer from 1 to 10"),
    ("attempt", -1, "not an integer"),
    ("input", "{not json", "not JSON"),
    ("metadata", "[1, 2]", "not a JSON object"),
    ("result", "\x00", "not JSON"),
    ("error", '{"message": 1}', "not a stored error"),
    ("created_at", "yesterday", "not a time"),
    ("not_before", "soon", "not a time"),
    ("type", None, "NoneType where text belongs"),
]


@pytest.mark.parametrize(
    ("column", "value", "problem"), CORRUPTIONS, ids=[f"{c}={v!r}" for c, v, _ in CORRUPTIONS]
)
def test_a_corrupt_column_raises_corrupt_record_naming_the_task_and_column(
    column: str, value: Any, problem: str
) -> None:
    record = make_record(not_before=T0 + 60)
    row = list(row_from_record(record))
    row[COLUMNS.index(column)] = value

    with pytest.raises(CorruptRecord) as raised:
        record_from_row(tuple(row))

    error = raised.value
    assert error.task_id == record.id
    assert problem in error.columns[column]
    assert record.id in str(error) and column in str(error)
    salvaged = error.record
    assert salvaged is not None and salvaged.id == record.id
    assert salvaged.state is TaskState.FAILED and salvaged.error is not None
    assert salvaged.error.exception_type == "taskbus.CorruptRecord"
    assert record.id in salvaged.error.message and column in salvaged.error.message


def test_a_salvaged_row_is_valid_and_reads_back_failed(db: sqlite3.Connection) -> None:
    record = make_record()
    row = list(row_from_record(record))
    row[COLUMNS.index("priority")] = "high"
    row[COLUMNS.index("input")] = "{not json"
    with pytest.raises(CorruptRecord) as raised:
        record_from_row(tuple(row))

    salvaged = salvage_row(raised.value, T0 + 9)
    assert salvaged is not None
    got = record_from_row(write_and_read(db, salvaged))

    assert (got.id, got.state, got.finished_at, got.owner) == (
        record.id,
        TaskState.FAILED,
        T0 + 9,
        "alice",
    )
    assert got.error is not None and "priority" in got.error.message
    assert "input" in got.error.message


def test_a_row_without_a_usable_id_is_not_salvaged() -> None:
    row = list(row_from_record(make_record()))
    row[COLUMNS.index("id")] = None
    with pytest.raises(CorruptRecord) as raised:
        record_from_row(tuple(row))
    assert salvage_row(raised.value, T0) is None


def test_garbled_diagnostic_columns_are_repaired_not_corrupt() -> None:
    row = list(row_from_record(make_record(state=TaskState.RUNNING, attempt=1)))
    row[COLUMNS.index("message")] = b"\xffpage"
    row[COLUMNS.index("progress")] = "half"
    row[COLUMNS.index("current")] = 3.0

    got = record_from_row(tuple(row))

    assert (got.message, got.progress, got.current) == ("\\xffpage", None, 3)
    assert got.state is TaskState.RUNNING
