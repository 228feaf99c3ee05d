"""Per-task memory: shared fields-sets and type strings, and the queue's FIFOs.

A queued task's input model holds no ``__pydantic_fields_set__`` of its own when
every field was set (see `TaskDefinition.validate_input`): assignment, copies and
pickling behave as before. Without aging, the queue keeps a new task in a FIFO
per priority (no tuple per task); tasks that come back out of push order still
rank by it.
"""

from __future__ import annotations

import copy
import enum
import pickle
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from taskbus import (
    InvalidTaskInput,
    TaskBus,
    TaskContext,
    TaskDefinition,
    TaskQueue,
    TaskRegistry,
    TaskState,
)
from taskbus._queue import _FIFO_COMPACT
from taskbus._record import TaskRecord, new_task_id

MakeBus = Callable[..., TaskBus]
FIELDS = {"url", "depth"}


class Clone(BaseModel):
    url: str
    depth: int


class Checked(BaseModel):
    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    url: str
    depth: int


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")

    url: str
    depth: int


class Defaulted(BaseModel):
    url: str
    depth: int = 1


def definition(model: type[BaseModel]) -> TaskDefinition[Any, Any]:
    async def clone(ctx: TaskContext, params: Any) -> None:
        return None

    clone.__annotations__["params"] = model
    return TaskRegistry().register("repos:clone", clone)


def two(model: type[BaseModel]) -> tuple[Any, Any]:
    clone = definition(model)
    first = clone.validate_input({"url": "https://e.com/a.git", "depth": 1})
    second = clone.validate_input({"url": "https://e.com/b.git", "depth": 2})
    return first, second


@pytest.mark.parametrize("model", [Clone, Checked])
def test_fully_set_inputs_share_one_fields_set(model: type[BaseModel]) -> None:
    first, second = two(model)
    assert first.model_fields_set == FIELDS
    assert first.model_fields_set is second.model_fields_set


@pytest.mark.parametrize("model", [Clone, Checked])
def test_assigning_a_field_leaves_the_shared_set_as_it_was(model: type[BaseModel]) -> None:
    first, second = two(model)
    first.depth = 7
    first.url = "https://e.com/c.git"
    assert (first.depth, second.depth) == (7, 2)
    assert first.model_fields_set == second.model_fields_set == FIELDS
    assert first.model_dump(exclude_unset=True) == {"url": "https://e.com/c.git", "depth": 7}


def test_an_unknown_attribute_is_refused_without_touching_the_shared_set() -> None:
    checked, _ = two(Checked)
    with pytest.raises(ValidationError, match="no_such_attribute"):
        checked.extra_thing = 1
    plain, _ = two(Clone)
    with pytest.raises(ValueError, match="no field"):
        plain.extra_thing = 1
    assert checked.model_fields_set == plain.model_fields_set == FIELDS


def test_extra_allow_models_keep_sets_of_their_own() -> None:
    first, second = two(Open)
    assert first.model_fields_set is not second.model_fields_set
    first.extra_thing = 1
    assert first.model_fields_set == FIELDS | {"extra_thing"}
    assert second.model_fields_set == FIELDS


def test_partly_set_inputs_keep_sets_of_their_own() -> None:
    clone = definition(Defaulted)
    first = clone.validate_input({"url": "https://e.com/a.git"})
    second = clone.validate_input({"url": "https://e.com/b.git"})
    assert first.model_fields_set == {"url"}
    assert first.model_fields_set is not second.model_fields_set
    first.depth = 3
    assert (first.model_fields_set, second.model_fields_set) == ({"url", "depth"}, {"url"})


def test_copies_get_sets_of_their_own() -> None:
    first, second = two(Clone)
    shared = first.model_fields_set
    copies = [
        first.model_copy(),
        first.model_copy(update={"depth": 9}),
        first.model_copy(deep=True),
        copy.copy(first),
        copy.deepcopy(first),
        pickle.loads(pickle.dumps(first)),
    ]
    for made in copies:
        assert made.model_fields_set == FIELDS
        assert made.model_fields_set is not shared
        made.model_fields_set.add("marker")
    assert shared == FIELDS and second.model_fields_set is shared


def test_a_model_instance_submitted_as_is_keeps_its_own_set() -> None:
    clone = definition(Clone)
    given = Clone(url="https://e.com/a.git", depth=1)
    own = given.model_fields_set
    assert clone.validate_input(given) is given
    assert given.model_fields_set is own


def test_other_input_types_are_left_alone() -> None:
    registry = TaskRegistry()

    @registry.task("repos:many")
    async def many(ctx: TaskContext, params: list[Clone]) -> None:
        return None

    assert many.shared_fields_set is None
    made = many.validate_input([{"url": "a", "depth": 1}, {"url": "b", "depth": 2}])
    assert made[0].model_fields_set == made[1].model_fields_set == FIELDS
    with pytest.raises(InvalidTaskInput):
        many.validate_input([{"url": "a"}])


@pytest.mark.anyio
async def test_handlers_get_inputs_that_share_one_set(make_bus: MakeBus) -> None:
    seen: list[Clone] = []
    bus = make_bus()

    @bus.task("repos:clone")
    async def clone(ctx: TaskContext, params: Clone) -> int:
        seen.append(params)
        return params.depth

    async with bus:
        handles = [
            await bus.submit("repos:clone", {"url": f"https://e.com/{n}.git", "depth": n})
            for n in range(3)
        ]
        with anyio.fail_after(5):
            assert [await handle.result() for handle in handles] == [0, 1, 2]
    assert seen[0].model_fields_set == FIELDS
    assert seen[0].model_fields_set is seen[1].model_fields_set is seen[2].model_fields_set


class Kind(enum.StrEnum):
    CLONE = "repos:clone"


def test_records_of_one_type_share_one_type_string() -> None:
    names = ["clone", "clone"]
    built = [f"repos:{name}" for name in names]
    assert built[0] is not built[1]
    first, second = (TaskRecord(new_task_id(), name, None, 5, 1.0) for name in built)
    assert first.type == "repos:clone" and first.type is second.type


def test_a_str_subclass_type_is_kept_as_given() -> None:
    record = TaskRecord(new_task_id(), Kind.CLONE, None, 5, 1.0)
    assert record.type is Kind.CLONE


NOW = 1000.0


def rec(name: str, type: str = "t", priority: int = 5) -> TaskRecord:
    return TaskRecord(name, type, None, priority, NOW)


def popped(queue: TaskQueue, now: float = NOW) -> str | None:
    record = queue.pop(now)
    return None if record is None else record.id


def test_a_task_set_aside_by_the_limit_keeps_its_place() -> None:
    queue = TaskQueue()
    queue.set_limit("a", 1)
    for record in (rec("a0", "a"), rec("a1", "a"), rec("b0", "b")):
        queue.push(record, NOW)
    assert [popped(queue), popped(queue)] == ["a0", "b0"]  # a1 set aside
    queue.push(rec("b1", "b"), NOW)
    assert queue.release("a") == 1
    assert [popped(queue), popped(queue), popped(queue)] == ["a1", "b1", None]


def test_tasks_set_aside_come_back_in_push_order_across_types() -> None:
    queue = TaskQueue()
    queue.set_limit("a", 1)
    queue.set_limit("b", 1)
    for name in ("a0", "b0", "a1", "b1", "a2"):
        queue.push(rec(name, name[0]), NOW)
    assert [popped(queue), popped(queue), popped(queue)] == ["a0", "b0", None]
    queue.push(rec("c0", "c", priority=5), NOW)
    queue.push(rec("c1", "c", priority=6), NOW)
    assert (queue.release("b"), queue.release("a")) == (1, 1)
    assert [popped(queue) for _ in range(4)] == ["c1", "a1", "b1", "c0"]
    assert len(queue) == 1  # a2, still set aside


def test_a_delayed_task_ranks_by_its_push_order_once_due() -> None:
    queue = TaskQueue()
    queue.push(rec("late"), NOW, 5.0)
    queue.push(rec("early"), NOW)
    queue.push(rec("urgent", priority=9), NOW)
    assert [popped(queue, NOW + 5) for _ in range(4)] == ["urgent", "late", "early", None]


def test_a_fifo_forgets_the_numbers_of_tasks_taken() -> None:
    queue = TaskQueue()
    for n in range(5 * _FIFO_COMPACT):
        queue.push(rec(f"id{n}"), NOW)
        assert popped(queue) == f"id{n}"
        queue.release("t")
    assert sum(len(level.seqs) for level in queue._levels) <= 2 * _FIFO_COMPACT
    backlog = [rec(f"b{n}") for n in range(3 * _FIFO_COMPACT)]
    for record in backlog:
        queue.push(record, NOW)
    for record in backlog[:-1]:
        record.move(TaskState.CANCELLED)
    assert popped(queue) == backlog[-1].id and len(queue) == 0
