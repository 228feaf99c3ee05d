"""taskbus: an event-bus task runtime for Python.

Register task types, submit work and get an id back at once, and watch every
step of a task's life as a typed event.
"""

from ._background import Queued as Queued
from ._batch import BatchNotFound as BatchNotFound
from ._batch import BatchSummary as BatchSummary
from ._batch import TaskBatch as TaskBatch
from ._bus import ALL_EVENTS as ALL_EVENTS
from ._bus import EventBus as EventBus
from ._chain import ChainStep as ChainStep
from ._clock import Clock as Clock
from ._clock import SystemClock as SystemClock
from ._context import TaskContext as TaskContext
from ._context import current_context as current_context
from ._dependencies import MAX_PARENTS as MAX_PARENTS
from ._dependencies import ParentFailurePolicy as ParentFailurePolicy
from ._errors import BusNotRunning as BusNotRunning
from ._errors import DuplicateTaskType as DuplicateTaskType
from ._errors import ErrorType as ErrorType
from ._errors import FatalError as FatalError
from ._errors import InputTimeout as InputTimeout
from ._errors import InvalidAnswer as InvalidAnswer
from ._errors import InvalidSchedule as InvalidSchedule
from ._errors import InvalidSubmission as InvalidSubmission
from ._errors import InvalidTaskDefinition as InvalidTaskDefinition
from ._errors import InvalidTaskInput as InvalidTaskInput
from ._errors import InvalidTransition as InvalidTransition
from ._errors import RetryableError as RetryableError
from ._errors import ScheduleNotFound as ScheduleNotFound
from ._errors import StoreError as StoreError
from ._errors import SubscriptionOverflow as SubscriptionOverflow
from ._errors import TaskbusError as TaskbusError
from ._errors import TaskCancellation as TaskCancellation
from ._errors import TaskCancelledError as TaskCancelledError
from ._errors import TaskError as TaskError
from ._errors import TaskFailedError as TaskFailedError
from ._errors import TaskInterruptedError as TaskInterruptedError
from ._errors import TaskNotFound as TaskNotFound
from ._errors import TaskNotRetryable as TaskNotRetryable
from ._errors import TaskNotWaiting as TaskNotWaiting
from ._errors import TaskTimeoutError as TaskTimeoutError
from ._errors import UnknownTaskType as UnknownTaskType
from ._errors import UnstorableValue as UnstorableValue
from ._errors import UserActionableError as UserActionableError
from ._events import EVENT_ADAPTER as EVENT_ADAPTER
from ._events import AnyTaskEvent as AnyTaskEvent
from ._events import BatchEvent as BatchEvent
from ._events import BatchFinished as BatchFinished
from ._events import BatchProgress as BatchProgress
from ._events import Event as Event
from ._events import TaskCancelled as TaskCancelled
from ._events import TaskCompleted as TaskCompleted
from ._events import TaskEvent as TaskEvent
from ._events import TaskFailed as TaskFailed
from ._events import TaskInputReceived as TaskInputReceived
from ._events import TaskInputRequired as TaskInputRequired
from ._events import TaskProgress as TaskProgress
from ._events import TaskQueued as TaskQueued
from ._events import TaskRetrying as TaskRetrying
from ._events import TaskStarted as TaskStarted
from ._events import event_order as event_order
from ._executor import TaskExecutor as TaskExecutor
from ._handle import TaskHandle as TaskHandle
from ._identity import Identity as Identity
from ._input import InputQuestion as InputQuestion
from ._json_log import JsonFormatter as JsonFormatter
from ._process_context import ProcessContext as ProcessContext
from ._queue import MAX_PRIORITY as MAX_PRIORITY
from ._queue import MIN_PRIORITY as MIN_PRIORITY
from ._queue import TaskQueue as TaskQueue
from ._registry import RegistryScope as RegistryScope
from ._registry import TaskDefinition as TaskDefinition
from ._registry import TaskOptions as TaskOptions
from ._registry import TaskRegistry as TaskRegistry
from ._reports import BusStats as BusStats
from ._reports import ShutdownReport as ShutdownReport
from ._retention import RetentionPolicy as RetentionPolicy
from ._retry import RetryPolicy as RetryPolicy
from ._schedule import Schedule as Schedule
from ._snapshot import DeadLetterReason as DeadLetterReason
from ._snapshot import ErrorInfo as ErrorInfo
from ._snapshot import TaskSnapshot as TaskSnapshot
from ._states import TaskState as TaskState
from ._subscription import EventBuffer as EventBuffer
from ._taskbus import TaskBus as TaskBus
from ._threaded import ThreadedHandle as ThreadedHandle
from ._threaded import ThreadedTaskBus as ThreadedTaskBus
from ._validation import MAX_DELAY as MAX_DELAY
from ._validation import MAX_TEXT as MAX_TEXT
from .stores._base import CorruptRecord as CorruptRecord
from .stores._base import StoreOutage as StoreOutage

__version__ = "0.1.0.dev0"

__all__ = [
    "ALL_EVENTS",
    "EVENT_ADAPTER",
    "MAX_DELAY",
    "MAX_PARENTS",
    "MAX_PRIORITY",
    "MAX_TEXT",
    "MIN_PRIORITY",
    "AnyTaskEvent",
    "BatchEvent",
    "BatchFinished",
    "BatchNotFound",
    "BatchProgress",
    "BatchSummary",
    "BusNotRunning",
    "BusStats",
    "ChainStep",
    "Clock",
    "CorruptRecord",
    "DeadLetterReason",
    "DuplicateTaskType",
    "ErrorInfo",
    "ErrorType",
    "Event",
    "EventBuffer",
    "EventBus",
    "FatalError",
    "Identity",
    "InputQuestion",
    "InputTimeout",
    "InvalidAnswer",
    "InvalidSchedule",
    "InvalidSubmission",
    "InvalidTaskDefinition",
    "InvalidTaskInput",
    "InvalidTransition",
    "JsonFormatter",
    "ParentFailurePolicy",
    "ProcessContext",
    "Queued",
    "RegistryScope",
    "RetentionPolicy",
    "RetryPolicy",
    "RetryableError",
    "Schedule",
    "ScheduleNotFound",
    "ShutdownReport",
    "StoreError",
    "StoreOutage",
    "SubscriptionOverflow",
    "SystemClock",
    "TaskBatch",
    "TaskBus",
    "TaskCancellation",
    "TaskCancelled",
    "TaskCancelledError",
    "TaskCompleted",
    "TaskContext",
    "TaskDefinition",
    "TaskError",
    "TaskEvent",
    "TaskExecutor",
    "TaskFailed",
    "TaskFailedError",
    "TaskHandle",
    "TaskInputReceived",
    "TaskInputRequired",
    "TaskInterruptedError",
    "TaskNotFound",
    "TaskNotRetryable",
    "TaskNotWaiting",
    "TaskOptions",
    "TaskProgress",
    "TaskQueue",
    "TaskQueued",
    "TaskRegistry",
    "TaskRetrying",
    "TaskSnapshot",
    "TaskStarted",
    "TaskState",
    "TaskTimeoutError",
    "TaskbusError",
    "ThreadedHandle",
    "ThreadedTaskBus",
    "UnknownTaskType",
    "UnstorableValue",
    "UserActionableError",
    "current_context",
    "event_order",
]


def _present_public_names_as_taskbus() -> None:
    # Public classes and functions say `taskbus.TaskBus`, not the private module they
    # live in, in reprs, tracebacks and docs (as anyio does).
    for name in __all__:
        value = globals()[name]
        module: str = getattr(value, "__module__", "")
        own = module.startswith(f"{__name__}.") and "._" in module  # a private module
        if own and (isinstance(value, type) or callable(value)):
            value.__module__ = __name__


_present_public_names_as_taskbus()
