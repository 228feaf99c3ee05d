"""Compact inputs: a task deep in a backlog holds a simple model input as its field
values (`TaskRecord.compact`, done by the queue past `COMPACT_BACKLOG` waiting).

What must not change: the handler gets an equal instance of its input class
(the same one on every attempt), ``bus.get(id).input`` is equal, stores write the
same JSON, and recovered tasks get their input; models that are not simple
(validators that keep state, ``model_post_init``, ``extra="allow"``, private
attributes, a custom ``__init__``, defaults left unset, an instance a caller
made) take the old path and keep every behaviour, identity included.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import (
    BaseModel,
    ConfigDict,
    PrivateAttr,
    RootModel,
    field_validator,
    model_validator,
)

import taskbus._queue
from taskbus import RetryableError, RetryPolicy, TaskBus, TaskContext, TaskRegistry, TaskState
from taskbus._compact import is_compact, packer_for, packers
from taskbus._queue import COMPACT_BACKLOG, TaskQueue
from taskbus._record import TaskRecord, new_task_id
from taskbus.stores._codec import row_from_record
from taskbus.stores.sqlite import SqliteStore

MakeBus = Callable[..., TaskBus]
FIELDS = {"url", "depth"}
PAYLOAD = {"url": "https://e.com/a.git", "depth": 2}


class Clone(BaseModel):
    url: str
    depth: int


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    depth: int


class Normalised(BaseModel):
    """Simple: its validators run at submit, and their output is what is held."""

    url: str
    depth: int

    @field_validator("url")
    @classmethod
    def lower(cls, value: str) -> str:
        return value.lower()

    @model_validator(mode="after")
    def deeper(self) -> Normalised:
        self.depth += 100
        return self


class PostInit(BaseModel):
    url: str
    depth: int

    def model_post_init(self, context: Any) -> None:
        self.__dict__["seen"] = True


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str
    depth: int


class Private(BaseModel):
    url: str
    depth: int
    _token: str = PrivateAttr(default="secret")


class OwnInit(BaseModel):
    url: str
    depth: int

    def __init__(self, **data: Any) -> None:
        super().__init__(**data)


class Defaulted(BaseModel):
    url: str
    depth: int = 1


class Slotted(BaseModel):
    __slots__ = ("note",)

    url: str
    depth: int


class Urls(RootModel[list[str]]):
    pass


SIMPLE: list[type[BaseModel]] = [Clone, Frozen, Normalised]
NOT_SIMPLE: list[type[BaseModel]] = [PostInit, Open, Private, OwnInit, Slotted, Urls]


def definition(model: Any) -> Any:
    async def clone(ctx: TaskContext, params: Any) -> None:
        return None

    clone.__annotations__["params"] = model
    return TaskRegistry().register("repos:clone", clone)


def record_of(value: Any) -> TaskRecord:
    """A record as a task deep in a long queue holds it (compacted)."""
    record = TaskRecord(new_task_id(), "repos:clone", value, 5, 1_700_000_000.0)
    record.compact()
    return record


def payload_for(model: Any) -> Any:
    return ["https://e.com/a.git"] if model is Urls else dict(PAYLOAD)


# -- the record -------------------------------------------------------------------


@pytest.mark.parametrize("model", SIMPLE, ids=lambda m: m.__name__)
def test_a_record_holds_a_simple_input_compactly_and_gives_back_an_equal_one(
    model: type[BaseModel],
) -> None:
    clone = definition(model)
    validated = clone.validate_input(dict(PAYLOAD))
    record = record_of(validated)
    assert is_compact(record._input)
    first, second = record.input, record.input
    for value in (first, second):
        assert type(value) is model
        assert value == validated
        assert value.model_dump() == validated.model_dump()
        assert value.model_fields_set == FIELDS
        assert value.__pydantic_extra__ is None and value.__pydantic_private__ is None
    assert first is not second, "each read is a copy while the task is queued"
    assert record.snapshot().input == validated


def test_validators_are_not_run_again_on_rebuild() -> None:
    record = record_of(definition(Normalised).validate_input({"url": "HTTPS://E.COM", "depth": 1}))
    assert is_compact(record._input)
    assert (record.input.url, record.input.depth) == ("https://e.com", 101)
    assert (record.handler_input().url, record.handler_input().depth) == ("https://e.com", 101)


def test_a_frozen_input_hashes_as_before() -> None:
    validated = definition(Frozen).validate_input(dict(PAYLOAD))
    assert hash(record_of(validated).input) == hash(validated)


def test_the_handler_input_is_rebuilt_once_and_kept() -> None:
    validated = definition(Clone).validate_input(dict(PAYLOAD))
    record = record_of(validated)
    given = record.handler_input()
    assert given == validated and type(given) is Clone
    assert record.handler_input() is given and record.input is given
    assert record.snapshot().input is given
    given.depth = 9  # a handler's change stays with the task, as before
    assert record.input.depth == 9


def test_rebuilt_inputs_share_one_fields_set_and_assignment_leaves_it_alone() -> None:
    clone = definition(Clone)
    first = record_of(clone.validate_input(dict(PAYLOAD))).handler_input()
    second = record_of(clone.validate_input({"url": "b", "depth": 3})).handler_input()
    assert first.model_fields_set is second.model_fields_set
    first.depth = 7
    assert first.model_fields_set == second.model_fields_set == FIELDS
    assert second.depth == 3


@pytest.mark.parametrize("model", NOT_SIMPLE, ids=lambda m: m.__name__)
def test_other_models_are_held_as_they_are(model: Any) -> None:
    clone = definition(model)
    assert clone.input_packer is None
    validated = clone.validate_input(payload_for(model))
    record = record_of(validated)
    assert record._input is validated
    assert record.input is validated and record.handler_input() is validated


def test_a_model_with_post_init_keeps_what_it_stored() -> None:
    record = record_of(definition(PostInit).validate_input(dict(PAYLOAD)))
    assert record.handler_input().__dict__["seen"] is True


def test_private_attributes_and_extras_are_kept() -> None:
    private = record_of(definition(Private).validate_input(dict(PAYLOAD))).input
    assert private._token == "secret"
    extra = record_of(definition(Open).validate_input({**PAYLOAD, "more": 1})).input
    assert extra.model_extra == {"more": 1}


def test_inputs_with_fields_left_to_their_defaults_are_held_as_they_are() -> None:
    validated = definition(Defaulted).validate_input({"url": "a"})
    record = record_of(validated)
    assert record._input is validated
    assert record.input.model_fields_set == {"url"}


def test_an_instance_the_caller_made_is_held_as_is() -> None:
    given = Clone(url="a", depth=1)
    clone = definition(Clone)
    record = record_of(clone.validate_input(given))
    assert record._input is given and record.handler_input() is given


def test_an_instance_a_handler_got_is_held_as_is_when_submitted_again() -> None:
    clone = definition(Clone)
    given = record_of(clone.validate_input(dict(PAYLOAD))).handler_input()
    again = record_of(clone.validate_input(given))
    assert again._input is given


def test_an_instance_with_something_else_stored_on_it_is_held_whole() -> None:
    validated = definition(Clone).validate_input(dict(PAYLOAD))
    object.__setattr__(validated, "note", "kept")
    record = record_of(validated)
    assert record._input is validated and record.input.note == "kept"


@pytest.mark.parametrize(
    "value",
    [None, 3, "text", {"url": "a"}, ("a", 1), (), [1, 2]],
    ids=["none", "int", "str", "dict", "tuple", "empty-tuple", "list"],
)
def test_values_that_are_not_models_are_held_as_they_are(value: Any) -> None:
    record = record_of(value)
    assert record._input is value and record.input is value
    assert record.handler_input() is value


def test_a_record_can_be_given_a_new_input() -> None:
    record = record_of(definition(Clone).validate_input(dict(PAYLOAD)))
    record.input = {"url": "b"}
    assert record.input == {"url": "b"}


def test_stores_and_snapshots_write_the_same_json_for_a_compact_input() -> None:
    validated = definition(Clone).validate_input(dict(PAYLOAD))
    compact, whole = record_of(validated), record_of(Clone(**PAYLOAD))
    assert is_compact(compact._input) and not is_compact(whole._input)
    whole.id = compact.id
    assert row_from_record(compact) == row_from_record(whole)
    assert json.loads(row_from_record(compact)[6]) == PAYLOAD
    shown = compact.snapshot().model_dump_json()  # what HTTP and MCP show
    assert shown == whole.snapshot().model_dump_json()
    assert json.loads(shown)["input"] == PAYLOAD


def test_a_packer_goes_with_the_last_definition_of_its_type() -> None:
    class Temporary(BaseModel):
        url: str

    first = definition(Temporary)
    second = definition(Temporary)
    assert first.input_packer is second.input_packer is packer_for(Temporary)
    assert first.shared_fields_set is second.shared_fields_set
    record = record_of(first.validate_input({"url": "a"}))
    del first, second
    gc.collect()
    assert Temporary in packers, "a queued input keeps its packer"
    assert record.input == Temporary(url="a")
    del record
    gc.collect()
    assert Temporary not in packers


# -- the queue: only a long backlog is compacted ------------------------------------


def test_only_tasks_that_join_a_long_line_are_compacted() -> None:
    clone = definition(Clone)
    queue = TaskQueue()
    records = [
        TaskRecord(new_task_id(), "repos:clone", clone.validate_input(dict(PAYLOAD)), 5, 0.0)
        for _ in range(COMPACT_BACKLOG + 10)
    ]
    for record in records:
        queue.push(record)
    packed = [is_compact(record._input) for record in records]
    assert packed == [False] * (COMPACT_BACKLOG - 1) + [True] * 11
    first = queue.pop()
    assert first is records[0] and first.handler_input() == Clone(**PAYLOAD)


@pytest.fixture
def compact_every_queued_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bus tests below run every queued task compacted, as deep in a backlog."""
    monkeypatch.setattr(taskbus._queue, "COMPACT_BACKLOG", 0)


# -- through the bus, on every backend ----------------------------------------------


@pytest.mark.anyio
@pytest.mark.usefixtures("compact_every_queued_task")
@pytest.mark.parametrize("model", SIMPLE + NOT_SIMPLE, ids=lambda m: m.__name__)
async def test_handlers_and_snapshots_get_equal_inputs(make_bus: MakeBus, model: Any) -> None:
    seen: list[Any] = []
    gate = anyio.Event()
    bus = make_bus()

    async def clone(ctx: TaskContext, params: Any) -> None:
        seen.append(params)
        await gate.wait()

    clone.__annotations__["params"] = model
    bus.task("repos:clone", concurrency=1)(clone)
    expected = definition(model).validate_input(payload_for(model))
    async with bus:
        first = await bus.submit("repos:clone", payload_for(model))
        queued = await bus.submit("repos:clone", payload_for(model))
        with anyio.fail_after(5):
            while not seen:  # noqa: ASYNC110 - a list, no event
                await anyio.sleep(0.01)
        snap = await bus.get(queued.id)
        assert snap.state is TaskState.QUEUED
        assert snap.input == expected and type(snap.input) is model
        assert (await bus.get(first.id)).input is seen[0]
        gate.set()
        with anyio.fail_after(5):
            await first.result()
            await queued.result()
        done = await bus.get(queued.id)
    assert [type(value) for value in seen] == [model, model]
    assert seen == [expected, expected]
    assert done.input is seen[1]


@pytest.mark.anyio
@pytest.mark.usefixtures("compact_every_queued_task")
async def test_every_attempt_gets_the_same_instance(make_bus: MakeBus) -> None:
    seen: list[Clone] = []
    bus = make_bus()

    @bus.task("repos:clone", retry=RetryPolicy(max_attempts=3, base_delay=0, jitter=0))
    async def clone(ctx: TaskContext, params: Clone) -> int:
        seen.append(params)
        params.depth += 1
        if ctx.attempt < 3:
            raise RetryableError("again")
        return params.depth

    async with bus:
        handle = await bus.submit("repos:clone", dict(PAYLOAD))
        with anyio.fail_after(5):
            assert await handle.result() == 5
        snap = await bus.get(handle.id)
    assert seen[0] is seen[1] is seen[2]
    assert snap.attempts == 3 and snap.input == Clone(url=PAYLOAD["url"], depth=5)


@pytest.mark.anyio
@pytest.mark.usefixtures("compact_every_queued_task")
async def test_thread_handlers_and_batches_get_their_inputs(make_bus: MakeBus) -> None:
    bus = make_bus()

    @bus.task("repos:clone")
    def clone(ctx: TaskContext, params: Clone) -> str:
        assert type(params) is Clone
        return f"{params.url}#{params.depth}"

    async with bus:
        batch = await bus.submit_batch(
            [("repos:clone", {"url": f"u{n}", "depth": n}) for n in range(3)]
        )
        handle = await clone.submit(Clone(url="v", depth=9))
        with anyio.fail_after(5):
            await batch.wait()
            assert await handle.result() == "v#9"
        results = [await bus.result(task_id) for task_id in batch.task_ids]
    assert results == ["u0#0", "u1#1", "u2#2"]


@pytest.mark.anyio
@pytest.mark.usefixtures("compact_every_queued_task")
async def test_a_sqlite_store_keeps_and_returns_compact_inputs(
    make_bus: MakeBus, tmp_path: Path
) -> None:
    seen: list[Clone] = []
    bus = make_bus(store=SqliteStore(tmp_path / "jobs.db"))

    @bus.task("repos:clone")
    async def clone(ctx: TaskContext, params: Clone) -> int:
        seen.append(params)
        return params.depth

    async with bus:
        handle = await bus.submit("repos:clone", dict(PAYLOAD))
        with anyio.fail_after(5):
            assert await handle.result() == 2
        snap = await bus.get(handle.id)
    assert seen == [Clone(**PAYLOAD)] and type(seen[0]) is Clone
    assert snap.input == PAYLOAD, "read back from the store: JSON, as before"


@pytest.mark.anyio
@pytest.mark.usefixtures("compact_every_queued_task")
async def test_recovered_tasks_get_their_input(make_bus: MakeBus, tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    store = SqliteStore(path)
    await store.open()
    try:
        record = TaskRecord(
            new_task_id(),
            "repos:clone",
            definition(Clone).validate_input(dict(PAYLOAD)),
            5,
            1_700_000_000.0,
            3,
        )
        record.compact()
        assert is_compact(record._input)
        await store.add(record)
        await store.flush()
    finally:
        await store.close()
    seen: list[Clone] = []
    bus = make_bus(store=SqliteStore(path))

    @bus.task("repos:clone", retry=RetryPolicy(max_attempts=3))
    async def clone(ctx: TaskContext, params: Clone) -> int:
        seen.append(params)
        return params.depth

    async with bus:
        with anyio.fail_after(5):
            assert await bus.result(record.id) == 2
    assert seen == [Clone(**PAYLOAD)] and type(seen[0]) is Clone


class _Unhashable(type):
    def __eq__(cls, other: object) -> bool:
        return cls is other

    __hash__ = None  # type: ignore[assignment]


class Odd(metaclass=_Unhashable):
    pass


def test_an_input_of_an_unhashable_class_is_held_as_is() -> None:
    value = Odd()
    record = record_of(value)
    assert record.input is value and record.handler_input() is value
