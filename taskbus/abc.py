"""The seam between the runtime and a store: what a store implements.

A store that keeps tasks only for this process implements `Store` (the memory
store; the runtime keeps its own queue). A store that processes share
implements `TaskStore`: value semantics (every read a copy), claims with
leases (`acquire`, `release`, `extend_leases`, `reap_expired`), and, as its
`EventBroker` half, an event log whose ids are durable and increase per store,
written in the same step as the change each event describes (a final state and
its final event are durable together). SQLite implements it; the contract
suites in ``tests/stores`` and the bus scenarios say what every implementation
must do. A store that keeps schedules implements `ScheduleStore` too (every
built-in store does): its `fire_schedule` claims a due fire and adds its task in
one step.
"""

from ._asking import answer_waiting
from ._events import CancelRequested
from ._input import InputAnswer, InputExchange
from ._record import TaskRecord
from .stores._base import (
    ClaimsOnAdd,
    EventBroker,
    FinalStateWatcher,
    KeyInUse,
    LiveRecordStore,
    ReportsOutage,
    ScheduleStore,
    Store,
    StoreOutage,
    StoreStats,
    TaskQuery,
    TaskStore,
)

__all__ = [
    "CancelRequested",
    "ClaimsOnAdd",
    "EventBroker",
    "FinalStateWatcher",
    "InputAnswer",
    "InputExchange",
    "KeyInUse",
    "LiveRecordStore",
    "ReportsOutage",
    "ScheduleStore",
    "Store",
    "StoreOutage",
    "StoreStats",
    "TaskQuery",
    "TaskRecord",
    "TaskStore",
    "answer_waiting",
]


def _present_as_taskbus_abc() -> None:
    # As in `taskbus`: reprs and docs say `taskbus.abc.TaskStore`.
    for name in __all__:
        value = globals()[name]
        module: str = getattr(value, "__module__", "")
        if module.startswith("taskbus.") and "._" in module:
            value.__module__ = __name__


_present_as_taskbus_abc()
