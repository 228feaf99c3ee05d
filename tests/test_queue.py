from taskbus import TaskQueue, TaskState
from taskbus._record import TaskRecord

NOW = 1000.0


def rec(n: int, priority: int = 5, type: str = "t", not_before: float | None = None) -> TaskRecord:
    return TaskRecord(
        id=f"id{n}",
        type=type,
        input=None,
        priority=priority,
        created_at=NOW,
        not_before=not_before,
    )


def drain(queue: TaskQueue, now: float = NOW) -> list[str]:
    out = []
    while (record := queue.pop(now)) is not None:
        out.append(record.id)
        queue.release(record.type)
    return out


def test_priority_order_and_fifo_within_a_level() -> None:
    queue = TaskQueue()
    for n, priority in enumerate([1, 5, 10, 5, 1, 10]):
        queue.push(rec(n, priority), NOW)
    assert drain(queue) == ["id2", "id5", "id1", "id3", "id0", "id4"]


def test_a_delay_waits_in_the_delayed_heap() -> None:
    queue = TaskQueue()
    queue.push(rec(0, 10, not_before=NOW + 5), NOW, 5.0)
    queue.push(rec(1, 1), NOW)
    assert queue.next_due() == NOW + 5
    assert drain(queue) == ["id1"]
    assert queue.pop(NOW + 4.9) is None
    assert drain(queue, NOW + 5) == ["id0"]
    assert queue.next_due() is None


def test_type_at_its_limit_does_not_block_other_types() -> None:
    queue = TaskQueue()
    queue.set_limit("slow", 1)
    for n in range(3):
        queue.push(rec(n, 10, type="slow"), NOW)
    queue.push(rec(9, 1, type="fast"), NOW)
    first = queue.pop(NOW)
    assert first is not None and first.id == "id0"
    second = queue.pop(NOW)
    assert second is not None and second.id == "id9", "held slow tasks must not block fast"
    assert queue.pop(NOW) is None
    assert queue.running("slow") == 1
    assert queue.release("slow") == 1
    third = queue.pop(NOW)
    assert third is not None and third.id == "id1", "held tasks keep their place"


def test_cancelled_entries_are_skipped() -> None:
    queue = TaskQueue()
    records = [rec(n) for n in range(3)]
    for record in records:
        queue.push(record, NOW)
    records[0].state = TaskState.CANCELLED
    assert drain(queue) == ["id1", "id2"]


def test_aging_lets_a_low_priority_task_overtake_later_urgent_ones() -> None:
    queue = TaskQueue(aging=10.0)
    queue.push(rec(0, 1), NOW)
    queue.push(rec(1, 10), NOW + 50)  # arrives 50 s later: only 5 levels of aging
    queue.push(rec(2, 10), NOW + 100)  # 100 s later: 1 + 100/10 > 10
    assert drain(queue, NOW + 100) == ["id1", "id0", "id2"]


def test_without_aging_priority_is_strict() -> None:
    queue = TaskQueue()
    queue.push(rec(0, 1), NOW)
    queue.push(rec(1, 10), NOW + 10_000)
    assert drain(queue, NOW + 10_000) == ["id1", "id0"]


def test_drain_returns_what_is_still_queued() -> None:
    queue = TaskQueue()
    queue.set_limit("t", 1)
    records = [rec(n) for n in range(3)] + [rec(7, not_before=NOW + 60)]
    for record in records:
        queue.push(record, NOW)
    queue.pop(NOW)
    queue.pop(NOW)  # held
    records[2].state = TaskState.CANCELLED
    left = sorted(r.id for r in queue.drain())
    assert left == ["id1", "id7"]
    assert len(queue) == 0


def test_aging_must_be_positive() -> None:
    import pytest

    with pytest.raises(ValueError, match="aging"):
        TaskQueue(aging=0)


def test_a_cancelled_delayed_task_is_let_go_before_its_time() -> None:
    queue = TaskQueue()
    records = [rec(n, 5) for n in range(200)]
    for record in records:
        queue.push(record, NOW, 3600.0)
    for record in records[:150]:
        record.move(TaskState.CANCELLED)
        queue.discard(record)
    held = [entry[2] for entry in queue._delayed if entry[2] is not None]
    assert all(record.state is TaskState.QUEUED for record in held) and len(held) == 50
    assert len(queue) == 50
    assert len(queue._delayed) < 200  # compacted, not only emptied
    assert drain(queue, NOW + 3600) == [f"id{n}" for n in range(150, 200)]


def keyed(n: int, key: str | None, type: str = "t") -> TaskRecord:
    record = rec(n, type=type)
    record.metadata = None if key is None else {"concurrency_key": key}
    return record


def test_a_key_at_its_limit_is_set_aside_and_other_keys_go_on() -> None:
    queue = TaskQueue()
    queue.set_key_limit("t", 1)
    a1, a2, b1, none1 = keyed(1, "a"), keyed(2, "a"), keyed(3, "b"), keyed(4, None)
    for record in (a1, a2, b1, none1):
        queue.push(record, NOW)
    assert [queue.pop(NOW), queue.pop(NOW), queue.pop(NOW)] == [a1, b1, none1]
    assert queue.pop(NOW) is None
    assert a2.waiting_for == "concurrency 1 per key 'a'"
    assert len(queue) == 1  # a2, set aside
    assert queue.release("t", "b") == 0
    assert queue.release("t", "a") == 1
    assert queue.pop(NOW) is a2


def test_a_key_limit_of_two_and_a_type_without_one() -> None:
    queue = TaskQueue()
    queue.set_key_limit("t", 2)
    records = [keyed(n, "a") for n in range(3)] + [keyed(9, "a", type="other")]
    for record in records:
        queue.push(record, NOW)
    assert drain(queue) == ["id0", "id1", "id9"]


def test_set_aside_keyed_tasks_are_taken_with_their_type_and_drained() -> None:
    queue = TaskQueue()
    queue.set_key_limit("t", 1)
    queue.set_key_limit("u", 1)
    for record in (keyed(1, "a"), keyed(2, "a"), keyed(3, "a", "u"), keyed(4, "a", "u")):
        queue.push(record, NOW)
    assert drain(queue) == ["id1", "id3"]
    assert [r.id for r in queue.take_type("t")] == ["id2"]
    assert [r.id for r in queue.drain()] == ["id4"]
    assert len(queue) == 0


def test_lifting_a_key_limit_readies_what_it_set_aside() -> None:
    queue = TaskQueue()
    queue.set_key_limit("t", 1)
    for n in range(3):
        queue.push(keyed(n, "a"), NOW)
    assert drain(queue) == ["id0"]
    queue.set_key_limit("t", None)
    assert drain(queue) == ["id1", "id2"]
