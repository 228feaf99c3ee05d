"""Task dependencies: a child submitted ``after=[parent, ...]`` waits for them.

The edges live with the child, in its metadata (``"after"``: the parent ids in
order, ``"on_parent_failure"``: the policy), so every store keeps them as it
keeps metadata. A child with an unfinished parent is stored queued with the
not-before time `AWAITING_PARENTS`, far past any delay a submit may ask for, so
no claim path picks it. When its last parent becomes final, the store clears
that time in the step that commits the parent's final state (SQLite: a trigger;
Redis: the write script; this process's queue: `ParentWaits`), and the child is
claimable. The policy is applied when a worker takes the child (`TaskExecutor`):
every parent completed, or ``"run"``: it runs with `TaskContext.parents`;
otherwise it is cancelled or failed, naming the parent, through the same final
path as any task (final state committed before its event).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

from ._errors import InvalidSubmission
from ._record import AWAITING_PARENTS, TaskRecord
from ._snapshot import TaskSnapshot
from ._states import TaskState
from ._tracing import TRACE_KEYS

if TYPE_CHECKING:
    from ._handle import TaskHandle
    from .stores import Store

__all__ = [
    "AFTER_KEY",
    "AWAITING_PARENTS",
    "MAX_PARENTS",
    "POLICY_KEY",
    "WAITING_FOR_PARENTS",
    "ParentFailurePolicy",
    "ParentWaits",
    "ParentWatch",
    "Parents",
    "RecentFinals",
    "RecentTasks",
    "check_after",
    "check_reserved",
    "mark_waiting",
    "parents_of",
    "policy_of",
    "read_parents",
    "unknown_parent",
]

#: What a child does when a parent ends failed or cancelled (or was purged).
ParentFailurePolicy = Literal["cancel", "fail", "run"]
_POLICIES: tuple[str, ...] = get_args(ParentFailurePolicy)

#: The most parents a task may have.
MAX_PARENTS = 1000
#: What `TaskSnapshot.waiting_for` says of a child waiting for its parents.
WAITING_FOR_PARENTS = "parents"

AFTER_KEY = "after"
POLICY_KEY = "on_parent_failure"


def check_after(after: Iterable[str | TaskHandle[Any]] | None, on_parent_failure: str) -> list[str]:
    """The parent ids of `after` (ids or handles), in order, duplicates dropped;
    `InvalidSubmission` for anything else, too many, or an unknown policy."""
    if on_parent_failure not in _POLICIES:
        raise InvalidSubmission(
            f"on_parent_failure must be one of {', '.join(_POLICIES)}, not {on_parent_failure!r}"
        )
    if after is None:
        return []
    if isinstance(after, str | bytes):
        raise InvalidSubmission("after takes a list of task ids or handles, not one string")
    ids: dict[str, None] = {}
    for parent in after:
        task_id = parent if isinstance(parent, str) else getattr(parent, "id", None)
        if not isinstance(task_id, str) or not task_id:
            raise InvalidSubmission(f"after takes task ids or handles, not {parent!r}")
        ids[task_id] = None
        if len(ids) > MAX_PARENTS:
            raise InvalidSubmission(f"a task may wait for at most {MAX_PARENTS} parents")
    return list(ids)


def check_reserved(metadata: dict[str, Any]) -> None:
    """`InvalidSubmission` for metadata that names parents itself: only `after`
    may (else a task could read tasks it may not see through `TaskContext.parents`);
    nor may it carry a trace context, which only the submitting span gives."""
    for key in (AFTER_KEY, POLICY_KEY):
        if key in metadata:
            raise InvalidSubmission(
                f"metadata key {key!r} is taskbus's: give parents with after= and "
                "on_parent_failure="
            )
    for key in TRACE_KEYS:
        if key in metadata:
            raise InvalidSubmission(
                f"metadata key {key!r} is taskbus's: the trace context is taken from "
                "the span current at submit (taskbus.otel.instrument)"
            )


def unknown_parent(task_id: str) -> InvalidSubmission:
    """For a parent not stored, or of another owner (which must not tell that it
    exists)."""
    return InvalidSubmission(f"unknown parent task {task_id!r} in after")


class RecentTasks:
    """The owners of the tasks this bus stored lately (a bounded memory), so that a
    child of one of them (a chain's next step) is checked without a store read."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._owners: dict[str, str | None] = {}

    def add(self, record: TaskRecord) -> None:
        owners = self._owners
        owners[record.id] = record.owner
        if len(owners) > self._size:
            del owners[next(iter(owners))]  # the oldest: dicts keep insertion order

    async def check(self, store: Store, ids: Sequence[str], owner: str | None) -> None:
        """`InvalidSubmission` unless every id is a stored task of `owner`."""
        owners = self._owners
        for task_id in ids:
            known = owners.get(task_id, _UNKNOWN)
            if known is _UNKNOWN:
                record = await store.get(task_id)
                known = _UNKNOWN if record is None else record.owner
            if known != owner:
                raise unknown_parent(task_id)


_UNKNOWN: Any = object()


class RecentFinals:
    """The final records this bus announced lately (a bounded memory): a child whose
    parent ended here reads it without a store read. A final record never changes,
    so the copy is the store's."""

    def __init__(self, size: int = 1_000) -> None:
        self._size = size
        self._records: dict[str, TaskRecord] = {}

    def add(self, record: TaskRecord) -> None:
        records = self._records
        records[record.id] = record
        if len(records) > self._size:
            del records[next(iter(records))]

    def get(self, task_id: str) -> TaskRecord | None:
        return self._records.get(task_id)


def mark_waiting(record: TaskRecord, ids: list[str], policy: str, pending: bool) -> None:
    """Note the edges and the policy on the child; hold it back if `pending`."""
    metadata = dict(record.metadata or {})
    metadata[AFTER_KEY] = ids
    metadata[POLICY_KEY] = policy
    record.metadata = metadata
    if pending:
        record.not_before = AWAITING_PARENTS
        record.waiting_for = WAITING_FOR_PARENTS


def parents_of(record: TaskRecord) -> list[str]:
    """The ids a task was submitted after (none for most tasks)."""
    metadata = record.metadata
    if not metadata:
        return []
    after = metadata.get(AFTER_KEY)  # only `mark_waiting` writes it (`check_reserved`)
    return after if isinstance(after, list) else []


def policy_of(record: TaskRecord) -> ParentFailurePolicy:
    policy = (record.metadata or {}).get(POLICY_KEY)
    return policy if policy in ("fail", "run") else "cancel"


class Parents:
    """The parents of a child about to start, as read then; their snapshots are made
    when first asked for (`TaskContext.parents`), as most handlers never ask."""

    __slots__ = ("_records", "_snapshot", "_snapshots", "blocker")

    def __init__(
        self,
        records: list[TaskRecord],
        blocker: str | None,
        snapshot: Callable[[TaskRecord], TaskSnapshot],
    ) -> None:
        self._records = records
        self._snapshot = snapshot
        self._snapshots: list[TaskSnapshot] | None = None
        #: Why the policy applies ("parent task X (type) failed"), or None: all completed.
        self.blocker = blocker

    def snapshots(self) -> list[TaskSnapshot]:
        """The parents as they ended, in `after` order (a purged one is left out)."""
        if self._snapshots is None:
            self._snapshots = [self._snapshot(record) for record in self._records]
        return list(self._snapshots)


async def read_parents(
    store: Store,
    record: TaskRecord,
    snapshot: Callable[[TaskRecord], TaskSnapshot],
    recent: RecentFinals | None = None,
) -> Parents:
    """Read the parents of `record` (from `recent` if there) and find the first that
    did not complete."""
    found: list[TaskRecord] = []
    blocker: str | None = None
    for task_id in parents_of(record):
        parent = None if recent is None else recent.get(task_id)
        if parent is None:
            parent = await store.get(task_id)
        if parent is None:
            blocker = blocker or f"parent task {task_id} is gone (purged before this task ran)"
            continue
        found.append(parent)
        if parent.state is not TaskState.COMPLETED and blocker is None:
            blocker = f"parent task {task_id} ({parent.type}) {parent.state.value}"
    return Parents(found, blocker, snapshot)


class ParentWaits:
    """Children held out of this process's queue until their parents are final
    (for stores whose queue is this process's: memory)."""

    def __init__(
        self,
        ready: Callable[[TaskRecord], None],
        watch: Callable[[Callable[[str], None] | None], None] | None = None,
    ) -> None:
        self._ready = ready
        #: Called with `parent_final` while children wait, and with None once none
        #: does: a bus with no child waiting pays nothing as tasks end.
        self._watch = watch
        self._children: dict[str, list[TaskRecord]] = {}
        self._pending: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def hold(self, child: TaskRecord, unfinished: Sequence[str]) -> None:
        """Hold `child` until every id in `unfinished` is final."""
        if not self._children and self._watch is not None:
            self._watch(self.parent_final)
        self._pending[child.id] = len(unfinished)
        for parent in unfinished:
            self._children.setdefault(parent, []).append(child)

    def take_all(self) -> list[TaskRecord]:
        """Stop holding every child (the bus is stopping); the queued ones."""
        children = {child.id: child for group in self._children.values() for child in group}
        self._children.clear()
        self._pending.clear()
        if self._watch is not None:
            self._watch(None)
        return [child for child in children.values() if child.state is TaskState.QUEUED]

    def parent_final(self, parent_id: str) -> None:
        """A task became final: release the children it was the last parent of."""
        children = self._children.pop(parent_id, None)
        if not children:
            return
        if not self._children and self._watch is not None:
            self._watch(None)
        for child in children:
            left = self._pending[child.id] - 1
            if left:
                self._pending[child.id] = left
                continue
            del self._pending[child.id]
            if child.state is TaskState.QUEUED:
                child.not_before = child.waiting_for = None
                self._ready(child)


class ParentWatch:
    """On a store processes share, wakes this bus's claims when a task that children
    wait for becomes final (the store has made them claimable meanwhile). Parents
    are learnt from the children's task-queued events, from any process; a child
    this process never heard of is found by the claims' idle poll instead."""

    _MOST = 100_000

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._parents: set[str] = set()

    def children_queued(self, parents: list[Any]) -> None:
        if len(self._parents) > self._MOST:  # parents whose end this bus missed
            self._parents.clear()
        self._parents.update(p for p in parents if isinstance(p, str))

    def final(self, task_id: str) -> None:
        if self._parents and task_id in self._parents:
            self._parents.discard(task_id)
            self._wake()
