"""One contract suite, run against every store through the `Store` protocol.

Records are built with `TaskRecord` and moved with `record.move(...)`, the way
the runtime does it; writes go through ``add/claim/update/finish``. A store that
serialises (SQLite) hands back input, metadata and result as JSON data with
`record.loaded` set, so values are compared JSON-normalised.
"""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import pytest
from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from taskbus import DeadLetterReason, ErrorInfo, ErrorType, TaskState
from taskbus._asking import answer_waiting, start_waiting
from taskbus._dependencies import mark_waiting
from taskbus._input import InputAnswer, InputExchange, InputQuestion
from taskbus._record import TaskRecord, new_task_id
from taskbus.stores import LiveRecordStore, Store, TaskQuery

from .conftest import StoreFactory

pytestmark = pytest.mark.anyio

T0 = 1_700_000_000.0
_tick = itertools.count()


class Payload(BaseModel):
    name: str
    sizes: list[int]


def make_record(
    task_type: str = "reports:build",
    input: Any = None,
    *,
    created_at: float | None = None,
    priority: int = 5,
    owner: str | None = None,
    metadata: dict[str, Any] | None = None,
    key: str | None = None,
    max_attempts: int = 3,
) -> TaskRecord:
    """A queued record; without `created_at`, each one is a little younger than the last."""
    return TaskRecord(
        new_task_id(),
        task_type,
        input,
        priority,
        T0 + next(_tick) * 0.001 if created_at is None else created_at,
        max_attempts,
        owner,
        metadata,
        key,
    )


async def claim(store: Store, record: TaskRecord, at: float | None = None) -> None:
    record.move(TaskState.RUNNING)
    record.attempt += 1
    record.started_at = record.created_at + 1 if at is None else at
    await store.claim(record)


async def finish(
    store: Store,
    record: TaskRecord,
    state: TaskState = TaskState.COMPLETED,
    *,
    at: float | None = None,
    result: Any = None,
    error: ErrorInfo | None = None,
) -> None:
    """Finish `record` (claiming it first unless it is cancelled while queued)."""
    if state is not TaskState.CANCELLED and record.state is TaskState.QUEUED:
        await claim(store, record)
    record.move(state)
    record.finished_at = record.created_at + 2 if at is None else at
    if state is TaskState.COMPLETED:
        record.result = result
    elif state is TaskState.FAILED:
        record.error = error or ErrorInfo(
            message="boom", error_type=ErrorType.FATAL, exception_type="builtins.ValueError"
        )
    else:
        record.cancel_reason = "not wanted"
    await store.finish(record)


def data(record: TaskRecord) -> dict[str, Any]:
    """Every field of a record as JSON data (`loaded` aside)."""
    values = {name: getattr(record, name) for name in TaskRecord.__slots__ if name != "loaded"}
    return dict(to_jsonable_python(values))


async def find_key(
    store: Store,
    key: str,
    *,
    owner: str | None = None,
    task_type: str = "reports:build",
    completed_since: float | None = None,
) -> TaskRecord | None:
    """`find_by_key` in the scope `make_record` gives by default (no owner)."""
    return await store.find_by_key(
        key, owner=owner, task_type=task_type, completed_since=completed_since
    )


async def ids(store: Store, **filters: Any) -> list[str]:
    return [record.id for record in await store.list(TaskQuery(**filters))]


# -- add, get, claim, update, finish -----------------------------------------------


async def test_add_then_get_returns_the_same_values(make_store: StoreFactory) -> None:
    store = await make_store()
    record = make_record(
        input=Payload(name="q1", sizes=[1, 2, 3]),
        priority=8,
        owner="alice",
        metadata={"source": "test", "tags": ["a", "b"]},
        key="report-2025",
    )
    await store.add(record)

    got = await store.get(record.id)

    assert got is not None
    assert data(got) == data(record)
    assert got.state is TaskState.QUEUED
    assert_copy_unless_live(store, got, record)


def assert_copy_unless_live(store: Store, got: TaskRecord, record: TaskRecord) -> None:
    """A store processes share reads back copies (value semantics); only the memory
    store, which keeps the runtime's own records, may hand back the same object."""
    if isinstance(store, LiveRecordStore):
        assert got is record
    else:
        assert got is not record and got.loaded


async def test_get_of_an_unknown_id_is_none(make_store: StoreFactory) -> None:
    store = await make_store()
    await store.add(make_record())
    assert await store.get(new_task_id()) is None
    assert await store.get("") is None


async def test_claim_update_and_finish_show_in_get_and_list(make_store: StoreFactory) -> None:
    store = await make_store()
    record = make_record(input={"n": 1})
    await store.add(record)

    await claim(store, record)
    assert [r.state for r in await store.list(TaskQuery())] == [TaskState.RUNNING]
    got = await store.get(record.id)
    assert got is not None and (got.state, got.attempt) == (TaskState.RUNNING, 1)
    assert got.started_at == record.started_at

    # A retry: back to queued, with the last attempt's error and a not-before time.
    record.move(TaskState.QUEUED)
    record.queued_at = record.not_before = record.created_at + 5
    record.error = ErrorInfo(
        message="flaky", error_type=ErrorType.RETRYABLE, exception_type="builtins.OSError"
    )
    await store.update(record)
    [listed] = await store.list(TaskQuery())
    assert data(listed) == data(record)
    assert listed.state is TaskState.QUEUED and listed.error == record.error

    await claim(store, record, at=record.created_at + 6)
    record.progress, record.current, record.total, record.message = 50.0, 5, 10, "halfway"
    await store.update(record)
    record.move(TaskState.COMPLETED)
    record.error = None
    record.result = {"rows": [1, 2], "label": "done"}
    record.finished_at = record.created_at + 7
    await store.finish(record)

    [listed] = await store.list(TaskQuery())
    assert data(listed) == data(record)
    got = await store.get(record.id)
    assert got is not None
    assert data(got) == data(record)
    assert (got.state, got.attempt, got.result) == (TaskState.COMPLETED, 2, record.result)
    assert_copy_unless_live(store, got, record)


async def test_waiting_for_is_kept_changed_and_cleared(make_store: StoreFactory) -> None:
    store = await make_store()
    record = make_record()
    record.waiting_for = "parents"
    await store.add(record)
    got = await store.get(record.id)
    assert got is not None and got.waiting_for == "parents"
    assert got.snapshot().waiting_for == "parents"

    record.waiting_for = "rate limit 10/minute (key \u00e9l\u00e8ve)"
    await store.update(record)
    [listed] = await store.list(TaskQuery())
    assert listed.waiting_for == record.waiting_for

    record.waiting_for = None
    await store.update(record)
    got = await store.get(record.id)
    assert got is not None and got.waiting_for is None


async def test_a_running_task_shows_no_waiting_for(make_store: StoreFactory) -> None:
    store = await make_store()
    record = make_record()
    record.waiting_for = "parents"
    await store.add(record)
    await claim(store, record)
    got = await store.get(record.id)
    assert got is not None and got.snapshot().waiting_for is None


async def test_a_question_and_its_answers_are_kept_by_every_store(
    make_store: StoreFactory,
) -> None:
    store = await make_store()
    record = make_record(owner="alice")
    await store.add(record)
    await claim(store, record)
    question = InputQuestion(
        key="ask-1",
        prompt="Which branch? \u00e9",
        json_schema={"type": "object", "properties": {"branch": {"type": "string"}}},
        asked_at=T0 + 5,
        deadline=T0 + 605,
    )
    start_waiting(record, question)
    await store.update(record)
    [listed] = await store.list(TaskQuery(state=TaskState.WAITING))
    assert listed.id == record.id
    assert listed.asks is not None and listed.asks.pending == question
    snapshot = listed.snapshot()
    assert (snapshot.state, snapshot.question, snapshot.waiting_for) == (
        TaskState.WAITING,
        question,
        "Which branch? \u00e9",
    )
    assert (await store.stats()).by_state[TaskState.WAITING] == 1

    answer = InputAnswer(value={"branch": "main", "n": [1, 2.5, None]}, answered_at=T0 + 9)
    assert answer_waiting(record, "ask-1", answer, T0 + 9)
    await store.update(record)
    got = await store.get(record.id)
    assert got is not None and got.state is TaskState.QUEUED
    assert got.asks == InputExchange(answers={"ask-1": answer})
    assert got.snapshot().question is None
    assert_copy_unless_live(store, got, record)


async def test_failed_and_cancelled_records_keep_their_reason(make_store: StoreFactory) -> None:
    store = await make_store()
    failed, cancelled = make_record(), make_record()
    for record in (failed, cancelled):
        await store.add(record)
    await finish(store, failed, TaskState.FAILED)
    await finish(store, cancelled, TaskState.CANCELLED)

    by_id = {record.id: record for record in await store.list(TaskQuery())}

    assert by_id[failed.id].error == failed.error
    assert by_id[failed.id].state is TaskState.FAILED
    assert by_id[cancelled.id].cancel_reason == "not wanted"
    assert by_id[cancelled.id].state is TaskState.CANCELLED


async def test_error_info_with_a_traceback_round_trips(make_store: StoreFactory) -> None:
    store = await make_store()
    record = make_record()
    error = ErrorInfo(
        message="could not reach the mail server (caused by OSError: refused)",
        error_type=ErrorType.USER_ACTIONABLE,
        exception_type="taskbus._errors.UserActionableError",
        suggested_action="Check the SMTP password in settings.",
        traceback="Traceback (most recent call last):\n"
        + '  File "job.py", line 7, in run\n    send()\n' * 150
        + "OSError: refused\n",
    )
    await store.add(record)
    await finish(store, record, TaskState.FAILED, error=error)
    await store.list(TaskQuery())  # every store has the final write by now

    got = await store.get(record.id)

    assert got is not None and got.error is not None
    assert got.error == error
    assert got.error.traceback == error.traceback
    assert not got.error.retryable


async def test_unicode_and_large_payloads_round_trip(make_store: StoreFactory) -> None:
    store = await make_store()
    text = "héllo wörld ✓ 日本語のテキスト 🎉 \u200b end"
    payload = {
        "text": text,
        "blob": "x" * 300_000,
        "items": [{"i": i, "name": f"項目 {i}"} for i in range(2_000)],
        "nested": {"ключ": ["значение", None, True, 1.5]},
    }
    record = make_record(
        "münchen:résumé", payload, owner="zoë", metadata={"label": "🚀", "ünïcode": "yes"}
    )
    await store.add(record)
    await finish(store, record, result={"summary": text * 100, "count": 2_000})

    [listed] = await store.list(TaskQuery(owner="zoë", type_prefix="münchen:"))
    got = await store.get(record.id)

    assert got is not None
    for loaded in (listed, got):
        assert data(loaded) == data(record)
        assert loaded.input["text"] == text
        assert len(loaded.input["blob"]) == 300_000


async def test_concurrent_adds_are_all_kept(make_store: StoreFactory) -> None:
    store = await make_store()
    records = [make_record("bulk:item", {"i": i}, owner=f"owner-{i % 7}") for i in range(500)]

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for record in records:
                tg.start_soon(store.add, record)

    assert set(await ids(store, limit=1_000)) == {record.id for record in records}
    assert (await store.stats()).by_state == {TaskState.QUEUED: 500}
    for record in records[::50]:
        got = await store.get(record.id)
        assert got is not None and data(got) == data(record)


# -- list ---------------------------------------------------------------------------


async def test_list_is_oldest_first_with_limit_and_offset(make_store: StoreFactory) -> None:
    store = await make_store()
    records = [make_record(created_at=T0 + i) for i in range(10)]
    for record in records:
        await store.add(record)
    expected = [record.id for record in records]

    assert await ids(store) == expected
    assert await ids(store, limit=3) == expected[:3]
    assert await ids(store, limit=3, offset=3) == expected[3:6]
    assert await ids(store, limit=4, offset=8) == expected[8:]
    assert await ids(store, offset=10) == []


async def test_list_newest_first_pages_from_the_newest(make_store: StoreFactory) -> None:
    store = await make_store()
    records = [make_record(created_at=T0 + i) for i in range(6)]
    records.append(make_record(created_at=T0 + 6, owner="alice"))
    for record in records:
        await store.add(record)
    newest = [record.id for record in reversed(records)]

    assert await ids(store, newest_first=True) == newest
    assert await ids(store, limit=3, newest_first=True) == newest[:3]
    assert await ids(store, limit=3, offset=3, newest_first=True) == newest[3:6]
    assert await ids(store, owner="alice", newest_first=True) == [records[-1].id]


async def test_list_filters_by_state_and_owner(make_store: StoreFactory) -> None:
    store = await make_store()
    a_queued = make_record(owner="alice")
    a_running = make_record(owner="alice")
    a_done = make_record(owner="alice")
    b_done = make_record(owner="bob")
    anonymous = make_record()
    for record in (a_queued, a_running, a_done, b_done, anonymous):
        await store.add(record)
    await claim(store, a_running)
    await finish(store, a_done)
    await finish(store, b_done)

    assert await ids(store, owner="alice") == [a_queued.id, a_running.id, a_done.id]
    assert await ids(store, owner="bob") == [b_done.id]
    assert await ids(store, owner="carol") == []
    assert await ids(store, state=TaskState.QUEUED) == [a_queued.id, anonymous.id]
    assert await ids(store, state=TaskState.RUNNING) == [a_running.id]
    assert await ids(store, state=TaskState.COMPLETED) == [a_done.id, b_done.id]
    assert await ids(store, state=TaskState.COMPLETED, owner="bob") == [b_done.id]
    assert await ids(store, state=TaskState.FAILED) == []


async def test_list_filters_by_type_prefix(make_store: StoreFactory) -> None:
    store = await make_store()
    types = ["a:x", "ab:x", "a:y:z", "a", "a;", "b:x", "A:x", "é:x"]
    records = {task_type: make_record(task_type) for task_type in types}
    for record in records.values():
        await store.add(record)

    async def types_for(prefix: str) -> list[str]:
        return [r.type for r in await store.list(TaskQuery(type_prefix=prefix))]

    assert await types_for("a:") == ["a:x", "a:y:z"]
    assert await types_for("a") == ["a:x", "ab:x", "a:y:z", "a", "a;"]
    assert await types_for("ab:") == ["ab:x"]
    assert await types_for("a:y") == ["a:y:z"]
    assert await types_for("b:x") == ["b:x"]
    assert await types_for("é:") == ["é:x"]
    assert await types_for("c") == []
    assert await types_for("") == types


async def test_list_filters_by_batch(make_store: StoreFactory) -> None:
    store = await make_store()
    first = [make_record(metadata={"batch_id": "b-1", "n": i}) for i in range(3)]
    second = make_record(metadata={"batch_id": "b-2"}, owner="alice")
    odd = [make_record(metadata={"batch_id": 7}), make_record(metadata={"other": "b-1"})]
    loose = make_record()
    for record in [*first, second, *odd, loose]:
        await store.add(record)
    await claim(store, first[1])
    await finish(store, first[2])

    assert await ids(store, batch_id="b-1") == [r.id for r in first]
    assert await ids(store, batch_id="b-1", state=TaskState.RUNNING) == [first[1].id]
    assert await ids(store, batch_id="b-1", limit=1, offset=1) == [first[1].id]
    assert await ids(store, batch_id="b-2", owner="alice") == [second.id]
    assert await ids(store, batch_id="b-2", owner="bob") == []
    assert await ids(store, batch_id="b-3") == []
    assert await store.purge(keep=0) == 1
    assert await ids(store, batch_id="b-1") == [first[0].id, first[1].id]


async def test_list_dead_letters_are_the_failed_tasks(make_store: StoreFactory) -> None:
    store = await make_store()
    queued, running, done, cancelled = (make_record(owner="alice") for _ in range(4))
    fatal = make_record("mail:send", owner="alice")
    exhausted = make_record(owner="bob", max_attempts=2)
    for record in (queued, running, done, cancelled, fatal, exhausted):
        await store.add(record)
    await claim(store, running)
    await finish(store, done)
    await finish(store, cancelled, TaskState.CANCELLED)
    await finish(store, fatal, TaskState.FAILED)
    await claim(store, exhausted)
    exhausted.move(TaskState.QUEUED)  # a retry: back to the queue, still no dead letter
    await store.update(exhausted)
    assert await ids(store, dead_letter=True) == [fatal.id]
    retryable = ErrorInfo(message="flaky", error_type=ErrorType.RETRYABLE, exception_type="E")
    await finish(store, exhausted, TaskState.FAILED, error=retryable)

    assert await ids(store, dead_letter=True) == [fatal.id, exhausted.id]
    assert await ids(store, dead_letter=True, newest_first=True) == [exhausted.id, fatal.id]
    assert await ids(store, dead_letter=True, state=TaskState.FAILED) == [fatal.id, exhausted.id]
    assert await ids(store, dead_letter=True, owner="alice") == [fatal.id]
    assert await ids(store, dead_letter=True, type_prefix="mail:") == [fatal.id]
    assert await ids(store, dead_letter=True, limit=1, offset=1) == [exhausted.id]
    assert await ids(store, dead_letter=True, created_after=exhausted.created_at) == [exhausted.id]
    assert await ids(store, dead_letter=False) == [
        r.id for r in (queued, running, done, cancelled, fatal, exhausted)
    ]
    (found,) = await store.list(TaskQuery(dead_letter=True, owner="bob"))
    assert (found.attempt, found.max_attempts, found.error) == (2, 2, retryable)
    assert found.snapshot().dead_letter is DeadLetterReason.EXHAUSTED
    (found,) = await store.list(TaskQuery(dead_letter=True, owner="alice"))
    assert found.snapshot().dead_letter is DeadLetterReason.NOT_RETRYABLE


def test_a_dead_letter_query_cannot_ask_for_another_state() -> None:
    for state in (TaskState.QUEUED, TaskState.COMPLETED, TaskState.CANCELLED):
        with pytest.raises(ValueError, match="dead letters are failed tasks"):
            TaskQuery(dead_letter=True, state=state)
    with pytest.raises(ValueError, match="valid boolean"):
        TaskQuery(dead_letter="yes")  # type: ignore[arg-type]


async def test_list_filters_by_creation_time(make_store: StoreFactory) -> None:
    store = await make_store()
    records = [make_record(created_at=T0 + i * 10) for i in range(5)]
    for record in records:
        await store.add(record)
    expected = [record.id for record in records]

    # created_after is inclusive, created_before exclusive.
    assert await ids(store, created_after=T0 + 10) == expected[1:]
    assert await ids(store, created_after=T0 + 10.5) == expected[2:]
    assert await ids(store, created_before=T0 + 20) == expected[:2]
    assert await ids(store, created_after=T0 + 10, created_before=T0 + 40) == expected[1:4]
    window = {"created_after": T0 + 10, "created_before": T0 + 40}
    assert await ids(store, **window, limit=2, offset=1) == expected[2:4]
    assert await ids(store, created_after=T0 + 100) == []


# -- stats --------------------------------------------------------------------------


async def test_stats_count_by_state_and_by_type(make_store: StoreFactory) -> None:
    store = await make_store()
    assert (await store.stats()).total == 0
    records = [make_record("mail:send") for _ in range(4)]
    records += [make_record("reports:build") for _ in range(3)]
    for record in records:
        await store.add(record)
    await claim(store, records[0])
    await finish(store, records[1])
    await finish(store, records[2], TaskState.FAILED)
    await finish(store, records[4])
    await finish(store, records[5], TaskState.CANCELLED)

    stats = await store.stats()

    assert stats.by_state == {
        TaskState.QUEUED: 2,
        TaskState.RUNNING: 1,
        TaskState.COMPLETED: 2,
        TaskState.FAILED: 1,
        TaskState.CANCELLED: 1,
    }
    assert stats.by_type == {
        "mail:send": {
            TaskState.RUNNING: 1,
            TaskState.COMPLETED: 1,
            TaskState.FAILED: 1,
            TaskState.QUEUED: 1,
        },
        "reports:build": {
            TaskState.COMPLETED: 1,
            TaskState.CANCELLED: 1,
            TaskState.QUEUED: 1,
        },
    }
    assert stats.total == 7


async def test_stats_count_the_queued_by_type_and_priority(make_store: StoreFactory) -> None:
    store = await make_store()
    assert (await store.stats()).queued_by_priority == {}
    mail = [make_record("mail:send", priority=p) for p in (5, 5, 5, 9, 1)]
    reports = [make_record(priority=p) for p in (10, 3, 3, 7)]
    for record in (*mail, *reports):
        await store.add(record)
    mail[3].not_before = T0 + 3600  # delayed: queued all the same
    await store.update(mail[3])
    await claim(store, mail[2])  # running: not queued
    await finish(store, mail[4])  # final
    await claim(store, reports[1])  # a retry: back to queued, not before a while
    reports[1].move(TaskState.QUEUED)
    reports[1].queued_at = reports[1].not_before = reports[1].created_at + 5
    await store.update(reports[1])
    await claim(store, reports[2])  # waiting for input: not queued
    start_waiting(reports[2], InputQuestion(key="q", prompt="?", json_schema={}, asked_at=T0))
    await store.update(reports[2])
    await finish(store, reports[3], TaskState.CANCELLED)
    child = make_record(priority=3, created_at=T0 + 50)  # held until its parent ends
    mark_waiting(child, [reports[0].id], "cancel", pending=True)
    await store.add(child)
    await store.add(make_record("old:job", priority=8))
    await finish(store, (await store.list(TaskQuery(type_prefix="old:")))[0])

    stats = await store.stats()

    assert stats.queued_by_priority == {
        "mail:send": {5: 2, 9: 1},
        "reports:build": {10: 1, 3: 2},
    }
    assert stats.by_state[TaskState.QUEUED] == 6
    assert all(
        sum(levels.values()) == stats.by_type[name][TaskState.QUEUED]
        for name, levels in stats.queued_by_priority.items()
    )


# -- find_by_key --------------------------------------------------------------------


async def test_find_by_key_returns_queued_and_running_records(make_store: StoreFactory) -> None:
    store = await make_store()
    queued, running = make_record(key="k-queued"), make_record(key="k-running")
    for record in (queued, running, make_record()):
        await store.add(record)
    await claim(store, running)

    found_queued = await find_key(store, "k-queued")
    found_running = await find_key(store, "k-running", completed_since=T0)

    assert found_queued is not None and found_queued.id == queued.id
    assert found_running is not None and found_running.id == running.id
    assert found_running.state is TaskState.RUNNING
    assert await find_key(store, "k-unknown") is None
    assert await find_key(store, "k-unknown", completed_since=0.0) is None


async def test_find_by_key_returns_a_completed_record_only_within_the_window(
    make_store: StoreFactory,
) -> None:
    store = await make_store()
    record = make_record(key="k-done")
    await store.add(record)
    await finish(store, record, at=T0 + 100, result=42)

    assert await find_key(store, "k-done") is None
    assert await find_key(store, "k-done", completed_since=T0 + 100.5) is None
    for since in (T0 + 100, T0 + 50, 0.0):
        found = await find_key(store, "k-done", completed_since=since)
        assert found is not None and found.id == record.id
        assert (found.state, found.result) == (TaskState.COMPLETED, 42)


async def test_find_by_key_never_returns_failed_or_cancelled(make_store: StoreFactory) -> None:
    store = await make_store()
    failed, cancelled = make_record(key="k-failed"), make_record(key="k-cancelled")
    for record in (failed, cancelled):
        await store.add(record)
    await finish(store, failed, TaskState.FAILED, at=T0 + 10)
    await finish(store, cancelled, TaskState.CANCELLED, at=T0 + 10)

    for key in ("k-failed", "k-cancelled"):
        assert await find_key(store, key) is None
        assert await find_key(store, key, completed_since=0.0) is None


async def test_find_by_key_prefers_the_active_record_over_a_completed_one(
    make_store: StoreFactory,
) -> None:
    store = await make_store()
    old = make_record(key="k")
    await store.add(old)
    await finish(store, old, at=T0 + 10)
    new = make_record(key="k")
    await store.add(new)

    found = await find_key(store, "k", completed_since=0.0)

    assert found is not None and found.id == new.id


async def test_find_by_key_is_scoped_by_owner_and_task_type(make_store: StoreFactory) -> None:
    store = await make_store()
    scopes = [
        ("alice", "reports:build"),
        ("bob", "reports:build"),
        (None, "reports:build"),
        ("alice", "mail:send"),
    ]
    records = {scope: make_record(scope[1], owner=scope[0], key="k") for scope in scopes}
    for record in records.values():
        await store.add(record)

    for (owner, task_type), record in records.items():
        found = await find_key(store, "k", owner=owner, task_type=task_type)
        assert found is not None and found.id == record.id, (owner, task_type)
    assert await find_key(store, "k", owner="carol") is None
    assert await find_key(store, "k", owner="alice", task_type="reports:other") is None

    # A completed task answers only within its own scope, too.
    await finish(store, records[("alice", "reports:build")], at=T0 + 10, result=1)
    await finish(store, records[("bob", "reports:build")], at=T0 + 20, result=2)
    assert await find_key(store, "k", owner="alice") is None
    alice = await find_key(store, "k", owner="alice", completed_since=0.0)
    bob = await find_key(store, "k", owner="bob", completed_since=0.0)
    assert alice is not None and alice.id == records[("alice", "reports:build")].id
    assert bob is not None and bob.id == records[("bob", "reports:build")].id
    assert await find_key(store, "k", owner="carol", completed_since=0.0) is None
    other_type = await find_key(store, "k", owner="alice", task_type="mail:send")
    assert other_type is not None and other_type.id == records[("alice", "mail:send")].id


# -- purge --------------------------------------------------------------------------


async def _purge_fixture(store: Store) -> dict[str, TaskRecord]:
    """Final records finished at 10..50 (of every final state) and two active ones."""
    records = {name: make_record(key=name) for name in ("c10", "f20", "x30", "c40", "c50")}
    records["queued"] = make_record()
    records["running"] = make_record()
    for record in records.values():
        await store.add(record)
    await claim(store, records["running"])
    states = {"c": TaskState.COMPLETED, "f": TaskState.FAILED, "x": TaskState.CANCELLED}
    for name in ("c10", "f20", "x30", "c40", "c50"):
        await finish(store, records[name], states[name[0]], at=T0 + int(name[1:]))
    return records


async def _names(store: Store, records: dict[str, TaskRecord]) -> set[str]:
    left = set(await ids(store))
    return {name for name, record in records.items() if record.id in left}


async def test_purge_by_age_deletes_only_old_final_records(make_store: StoreFactory) -> None:
    store = await make_store()
    records = await _purge_fixture(store)

    assert await store.purge(finished_before=T0 + 30) == 2
    assert await _names(store, records) == {"x30", "c40", "c50", "queued", "running"}
    assert await store.get(records["c10"].id) is None
    assert await find_key(store, "c10", completed_since=0.0) is None

    assert await store.purge(finished_before=T0 + 1_000) == 3
    assert await _names(store, records) == {"queued", "running"}
    assert await store.purge(finished_before=T0 + 1_000) == 0
    assert (await store.stats()).by_state == {TaskState.QUEUED: 1, TaskState.RUNNING: 1}


async def test_purge_keeps_the_most_recently_finished(make_store: StoreFactory) -> None:
    store = await make_store()
    records = await _purge_fixture(store)

    assert await store.purge(keep=2) == 3
    assert await _names(store, records) == {"c40", "c50", "queued", "running"}
    assert await store.purge(keep=2) == 0
    assert await store.purge(keep=0) == 2
    assert await _names(store, records) == {"queued", "running"}


async def test_purge_by_age_and_count_together(make_store: StoreFactory) -> None:
    store = await make_store()
    records = await _purge_fixture(store)

    assert await store.purge() == 0
    assert await store.purge(finished_before=T0 + 20, keep=3) == 2
    assert await _names(store, records) == {"x30", "c40", "c50", "queued", "running"}


# -- durable stores only ------------------------------------------------------------


async def test_close_and_reopen_keeps_every_record(make_durable_store: StoreFactory) -> None:
    store = await make_durable_store()
    queued = make_record(
        input=Payload(name="q", sizes=[1]), owner="alice", metadata={"m": 1}, key="kq"
    )
    running = make_record(input={"n": 2})
    completed = make_record(key="kc")
    failed = make_record()
    cancelled = make_record()
    records = [queued, running, completed, failed, cancelled]
    for record in records:
        await store.add(record)
    await claim(store, running)
    await finish(store, completed, at=T0 + 5, result={"rows": 3, "name": "ü"})
    await finish(store, failed, TaskState.FAILED)
    await finish(store, cancelled, TaskState.CANCELLED)
    await store.close()

    store = await make_durable_store()
    listed = await store.list(TaskQuery())

    assert [record.id for record in listed] == [record.id for record in records]
    for got, original in zip(listed, records, strict=True):
        assert got.loaded
        assert data(got) == data(original)
    got_queued = await store.get(queued.id)
    assert got_queued is not None and got_queued.input == {"name": "q", "sizes": [1]}
    found = await find_key(store, "kc", completed_since=T0)
    assert found is not None and found.id == completed.id
    assert (await store.stats()).total == 5


async def test_the_same_store_object_can_be_opened_again(
    make_durable_store: StoreFactory,
) -> None:
    store = await make_durable_store()
    record = make_record()
    await store.add(record)
    await store.close()

    await store.open()

    assert await ids(store) == [record.id]


async def test_recover_returns_queued_and_running_most_urgent_first(
    make_durable_store: StoreFactory,
) -> None:
    store = await make_durable_store()
    low_old = make_record(priority=2, created_at=T0 + 1)
    high_new = make_record(priority=9, created_at=T0 + 5)
    mid_running = make_record(priority=5, created_at=T0 + 2)
    mid_new = make_record(priority=5, created_at=T0 + 3)
    high_old = make_record(priority=9, created_at=T0 + 4)
    done = make_record(priority=10, created_at=T0)
    failed = make_record(priority=10, created_at=T0)
    for record in (low_old, high_new, mid_running, mid_new, high_old, done, failed):
        await store.add(record)
    await claim(store, mid_running)
    await finish(store, done)
    await finish(store, failed, TaskState.FAILED)
    await store.close()

    store = await make_durable_store()
    recovered = await store.recover()

    assert [record.id for record in recovered] == [
        high_old.id,
        high_new.id,
        mid_running.id,
        mid_new.id,
        low_old.id,
    ]
    assert recovered[2].state is TaskState.RUNNING and recovered[2].attempt == 1
    assert all(record.loaded for record in recovered)
    assert data(recovered[0]) == data(high_old)
    # Recovered records are the store's live ones from now on.
    await claim(store, recovered[0])
    got = await store.get(high_old.id)
    assert got is not None and got.state is TaskState.RUNNING
