"""A `TaskBus` served over MCP (the Model Context Protocol), from the ``mcp`` extra.

``create_mcp_server(bus)`` returns an MCP SDK server (``MCPServer``, the SDK's
FastMCP, renamed in ``mcp`` 2) with the tools ``list_task_types`` (with input JSON
schemas), ``submit_task(type, input, priority?)`` (answers the id and first status
at once), ``task_status(task_id)``, ``task_result(task_id, wait_seconds?)`` (the
result as JSON, "not done yet", or a tool error for a failed or cancelled task;
while it waits, task progress goes out as MCP progress notifications if the
client sent a progress token), ``cancel_task(task_id, reason?)``,
``retry_task(task_id, priority?)`` (a failed or cancelled task again, as a new
task), ``answer_task(task_id, value)`` (answers a task waiting for input; its
``task_status`` shows the question) and ``list_tasks(state?, type_prefix?,
dead_letter?)``.

``TaskbusMCP(bus, ...).install(server)`` adds the same tools to a server of your
own. The bus is yours to run: serve inside ``async with bus:``.

**Tasks belong to an owner, not to a connection**, so a client that reconnects
(or a one-shot CLI call) reads its tasks back. An ``owner=`` hook maps each
request to its owner, for example from the authenticated principal
(`mcp.server.mcpserver.authenticated_principal`) or a bearer token, and None
refuses the request. Without a hook there is one local owner, for stdio, the
SDK's in-process client and streamable HTTP from a loopback address; any other
HTTP request is refused with an error that says to give an ``owner=`` hook. An
owner can read, wait for, cancel and list only its own tasks; another owner's id
gets the same "no task with id" answer as an id that never existed.

**MCP tasks** (the ``io.modelcontextprotocol/tasks`` extension of the 2026-07-28
specification, SEP-2663) are served by `TasksExtension`
(``taskbus.integrations._mcp_tasks``), which `create_mcp_server` installs: a
``submit_task`` call that declares the extension answers a task handle at once,
and ``tasks/get``, ``tasks/cancel`` and ``tasks/update`` follow it. Clients that
do not declare it see only the plain tools. Handshake-era (2025-11-25) wires
cannot carry a task handle, so there ``submit_task`` answers its plain status,
whose ``task_id`` the ``tasks/*`` methods accept from a client that declared the
extension at initialize.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any

import anyio
from pydantic import Field
from pydantic_core import PydanticSerializationError, to_jsonable_python

try:
    from mcp.server.mcpserver import Context, MCPServer
    from mcp.server.mcpserver.exceptions import ToolError
    from mcp.types import ToolAnnotations
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        f"taskbus.integrations.mcp needs the MCP SDK 2.x ({exc.name} is not importable); "
        "install it with: pip install 'taskbus[mcp]'"
    ) from exc

from taskbus import (
    BusNotRunning,
    ErrorType,
    Identity,
    InvalidAnswer,
    InvalidSubmission,
    InvalidTaskInput,
    TaskBus,
    TaskNotFound,
    TaskNotRetryable,
    TaskNotWaiting,
    TaskProgress,
    TaskSnapshot,
    TaskState,
    UnknownTaskType,
)
from taskbus.integrations._mcp_answers import (
    CancelAnswer,
    TaskErrorInfo,
    TaskList,
    TaskResultAnswer,
    TaskStatusAnswer,
    TaskTypeInfo,
    TaskTypeList,
)
from taskbus.integrations._mcp_tasks import TasksExtension

__all__ = [
    "LOCAL_OWNER",
    "CancelAnswer",
    "OwnerHook",
    "TaskErrorInfo",
    "TaskList",
    "TaskResultAnswer",
    "TaskStatusAnswer",
    "TaskTypeInfo",
    "TaskTypeList",
    "TaskbusMCP",
    "TasksExtension",
    "create_mcp_server",
]

logger = logging.getLogger("taskbus.mcp")

#: Maps a request's context to the owner of the tasks it may see (None: refuse).
OwnerHook = Callable[[Context[Any, Any]], str | Identity | None]

#: The owner of every task when the server has no owner hook (local clients only).
LOCAL_OWNER = "mcp:local"

_INSTRUCTIONS = (
    "Slow work runs as background tasks. Call list_task_types to see what can run and the "
    "input each type takes, submit_task to start one (it answers a task id at once), then "
    "task_status or task_result (with wait_seconds to wait) to follow it, and cancel_task "
    "to stop it. Task ids belong to you, across connections."
)


_READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)


class TaskbusMCP:
    """The taskbus tools, bound to one bus; `install` adds them to an `MCPServer`.

    `types`: the task types clients may see and submit, as exact names or
    namespace prefixes ending in ``:`` (``["shell:"]``); None exposes all.
    `owner`: a hook naming the owner of a request's tasks (see the module
    docstring); None gives local clients one owner and refuses the others.
    `max_wait`: the longest ``task_result`` waits, in seconds. `poll_interval`:
    the seconds between ``tasks/get`` polls suggested to tasks-extension clients.
    """

    def __init__(
        self,
        bus: TaskBus,
        *,
        types: Sequence[str] | None = None,
        owner: OwnerHook | None = None,
        max_wait: float = 60.0,
        poll_interval: float = 1.0,
    ) -> None:
        if max_wait < 0:
            raise ValueError(f"max_wait must be >= 0, not {max_wait}")
        self.bus = bus
        self.types = None if types is None else tuple(types)
        self.owner_hook = owner
        self.max_wait = max_wait
        self._extension = TasksExtension(self, poll_interval=poll_interval)

    def exposes(self, task_type: str) -> bool:
        """Whether clients may see and submit `task_type`."""
        if self.types is None:
            return True
        return any(
            task_type == allowed or (allowed.endswith(":") and task_type.startswith(allowed))
            for allowed in self.types
        )

    def extension(self) -> TasksExtension:
        """The MCP tasks extension over these tools, for ``MCPServer(extensions=[...])``."""
        return self._extension

    def install(self, server: MCPServer[Any]) -> MCPServer[Any]:
        """Add the taskbus tools to `server` and return it.

        The SDK fixes a server's extensions when it is built: to serve MCP tasks
        too, build it with ``MCPServer(..., extensions=[tools.extension()])``.
        """
        server.add_tool(self.list_task_types, annotations=_READ_ONLY)
        server.add_tool(self.submit_task)
        server.add_tool(self.task_status, annotations=_READ_ONLY)
        server.add_tool(self.task_result, annotations=_READ_ONLY)
        server.add_tool(self.cancel_task, annotations=ToolAnnotations(destructive_hint=True))
        server.add_tool(self.retry_task)
        server.add_tool(self.answer_task)
        server.add_tool(self.list_tasks, annotations=_READ_ONLY)
        return server

    # -- the tools (their docstrings are what the client's model reads) ----------

    async def list_task_types(self) -> TaskTypeList:
        """List the task types you can submit, with the JSON schema of each one's input."""
        return TaskTypeList(
            types=[
                TaskTypeInfo(
                    type=definition.name,
                    description=definition.description,
                    input_schema=definition.input_schema(),
                    estimated_duration=definition.estimated_duration,
                    timeout=definition.timeout,
                    default_priority=definition.priority,
                )
                for definition in self.bus.registry.definitions()
                if self.exposes(definition.name)
            ]
        )

    async def submit_task(
        self,
        type: Annotated[str, Field(description="A task type from list_task_types.")],
        input: Annotated[
            Any, Field(description="The task's input, matching its type's input_schema.")
        ] = None,
        priority: Annotated[
            int | None,
            Field(ge=1, le=10, description="10 is the most urgent; default: the type's."),
        ] = None,
        *,
        ctx: Context[Any, Any],
    ) -> TaskStatusAnswer:
        """Start a background task; answers its task id and first status at once.

        Follow it with task_status, task_result or cancel_task.
        """
        snapshot = await self.start(self.owner_of(ctx), type, input, priority)
        return TaskStatusAnswer.of(snapshot)

    async def task_status(
        self,
        task_id: Annotated[str, Field(description="An id from submit_task.")],
        *,
        ctx: Context[Any, Any],
    ) -> TaskStatusAnswer:
        """Show a task's state, progress, current operation, ETA, attempts and error."""
        return TaskStatusAnswer.of(await self._owned(ctx, task_id))

    async def task_result(
        self,
        task_id: Annotated[str, Field(description="An id from submit_task.")],
        wait_seconds: Annotated[
            float, Field(ge=0, description="Seconds to wait for the task to finish (capped).")
        ] = 0,
        *,
        ctx: Context[Any, Any],
    ) -> TaskResultAnswer:
        """Get a task's result: done=true with the result once it completed, done=false
        while it still runs (call again, or pass wait_seconds). An error if the task failed
        or was cancelled. While waiting, progress is reported if you asked for it."""
        snapshot = await self._owned(ctx, task_id)
        wait = min(wait_seconds, self.max_wait)
        if not snapshot.is_final and wait > 0:
            await self._wait(ctx, task_id, wait)
            snapshot = await self._get(task_id)
        if snapshot.state is TaskState.FAILED:
            raise ToolError(_failure_text(snapshot))
        if snapshot.state is TaskState.CANCELLED:
            reason = f": {snapshot.cancel_reason}" if snapshot.cancel_reason else ""
            raise ToolError(f"task {snapshot.id} ({snapshot.type}) was cancelled{reason}")
        result = None
        if snapshot.state is TaskState.COMPLETED:
            try:
                result = to_jsonable_python(snapshot.result)
            except PydanticSerializationError as exc:
                raise ToolError(f"task {snapshot.id}'s result is not JSON: {exc}") from exc
        return TaskResultAnswer(
            task_id=snapshot.id,
            state=snapshot.state,
            done=snapshot.is_final,
            result=result,
            status=TaskStatusAnswer.of(snapshot),
        )

    async def cancel_task(
        self,
        task_id: Annotated[str, Field(description="An id from submit_task.")],
        reason: Annotated[str | None, Field(description="Why, kept with the task.")] = None,
        *,
        ctx: Context[Any, Any],
    ) -> CancelAnswer:
        """Cancel a queued or running task (a running one is stopped); false if it had
        already finished."""
        await self._owned(ctx, task_id)
        try:
            cancelled = await self.bus.cancel(task_id, reason=reason or "cancelled by MCP client")
        except TaskNotFound as exc:
            raise ToolError(str(TaskNotFound(task_id))) from exc
        snapshot = await self._get(task_id)
        return CancelAnswer(task_id=task_id, cancelled=cancelled, state=snapshot.state)

    async def retry_task(
        self,
        task_id: Annotated[str, Field(description="A failed or cancelled task's id.")],
        priority: Annotated[
            int | None,
            Field(ge=1, le=10, description="10 is the most urgent; default: the old task's."),
        ] = None,
        *,
        ctx: Context[Any, Any],
    ) -> TaskStatusAnswer:
        """Run a failed or cancelled task again as a new task, with the same type and
        input; answers the new task's id and first status at once. An error for a task
        still queued or running, or completed."""
        await self._owned(ctx, task_id)
        try:
            handle = await self.bus.retry(task_id, priority=priority)
            snapshot = await self.bus.get(handle.id)
        except (TaskNotRetryable, InvalidTaskInput, InvalidSubmission, UnknownTaskType) as exc:
            raise ToolError(str(exc)) from exc
        except TaskNotFound as exc:  # purged meanwhile
            raise ToolError(str(TaskNotFound(task_id))) from exc
        except BusNotRunning as exc:
            raise ToolError("the task runtime is not running; try again later") from exc
        logger.debug("MCP client retried %s as %s", task_id, handle.id)
        return TaskStatusAnswer.of(snapshot)

    async def answer_task(
        self,
        task_id: Annotated[str, Field(description="A task waiting for input.")],
        value: Annotated[
            Any, Field(description="The answer: JSON that matches the question's json_schema.")
        ],
        *,
        ctx: Context[Any, Any],
    ) -> TaskStatusAnswer:
        """Answer the question of a task waiting for input (task_status shows it while
        the state is waiting); the task runs on with the answer."""
        await self._owned(ctx, task_id)
        try:
            snapshot = await self.bus.respond(task_id, value)
        except TaskNotFound as exc:
            raise ToolError(str(TaskNotFound(task_id))) from exc
        except (TaskNotWaiting, InvalidAnswer) as exc:
            raise ToolError(str(exc)) from exc
        return TaskStatusAnswer.of(snapshot)

    async def list_tasks(
        self,
        state: Annotated[TaskState | None, Field(description="Only tasks in this state.")] = None,
        type_prefix: Annotated[
            str | None, Field(description="Only task types starting with this.")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=500)] = 100,
        offset: Annotated[int, Field(ge=0, description="Tasks to skip, for paging.")] = 0,
        dead_letter: Annotated[
            bool, Field(description="Only dead letters (failed tasks), to retry_task them.")
        ] = False,
        *,
        ctx: Context[Any, Any],
    ) -> TaskList:
        """List your tasks, oldest first (an administrator's: everyone's)."""
        caller = self.identity_of(ctx)
        owner = None if caller.admin else caller.owner
        if dead_letter and state not in (None, TaskState.FAILED):
            return TaskList(tasks=[])
        snapshots = await self.bus.list(
            state=state,
            owner=owner,
            type_prefix=type_prefix,
            limit=limit,
            offset=offset,
            dead_letter=dead_letter,
        )
        return TaskList(tasks=[TaskStatusAnswer.of(snapshot) for snapshot in snapshots])

    # -- owners and the operations the tasks extension shares --------------------

    def owner_of(self, ctx: Context[Any, Any]) -> str:
        """The owner of the request's tasks; a `ToolError` if it may have none."""
        return self.identity_of(ctx).owner

    def identity_of(self, ctx: Context[Any, Any]) -> Identity:
        """Who the request comes from (an administrator sees every owner's tasks)."""
        if self.owner_hook is not None:
            answer = self.owner_hook(ctx)
            if answer is None:
                raise ToolError("this request has no owner for tasks (not authenticated?)")
            return Identity.of(answer)
        try:
            request = ctx.request_context.request
        except ValueError as exc:
            raise ToolError("task tools can only be called within an MCP request") from exc
        if _is_local(request):
            return Identity(owner=LOCAL_OWNER)
        raise ToolError(
            "this server has no owner= hook, so it serves tasks only to local clients "
            "(stdio, or HTTP from a loopback address); give create_mcp_server an owner= "
            "hook that authenticates the request"
        )

    async def start(self, owner: str, type: str, input: Any, priority: int | None) -> TaskSnapshot:
        """Submit a task of an exposed `type` for `owner`; a `ToolError` for bad input."""
        if not self.exposes(type) or type not in self.bus.registry:
            known = [name for name in self.bus.registry.types() if self.exposes(name)]
            raise ToolError(str(UnknownTaskType(type, known)))
        try:
            handle = await self.bus.submit(type, input, priority=priority, owner=owner)
            snapshot = await self.bus.get(handle.id)
        except (InvalidTaskInput, InvalidSubmission, UnknownTaskType) as exc:
            raise ToolError(str(exc)) from exc  # pydantic's message, for invalid input
        except BusNotRunning as exc:
            raise ToolError("the task runtime is not running; try again later") from exc
        logger.debug("MCP client submitted %s (%s)", handle.id, type)
        return snapshot

    async def owned(self, owner: str | Identity, task_id: str) -> TaskSnapshot:
        """`owner`'s task (any, for an administrator); the same `ToolError` for an
        unknown task and another owner's."""
        caller = Identity.of(owner)
        snapshot = await self._get(task_id)
        mine = caller.admin or snapshot.owner == caller.owner
        if not mine or not self.exposes(snapshot.type):
            raise ToolError(str(TaskNotFound(task_id)))
        return snapshot

    async def cancel(self, task_id: str, reason: str) -> bool:
        """Cancel a task; False if it had already finished."""
        return await self.bus.cancel(task_id, reason=reason)

    async def respond(self, task_id: str, value: Any) -> TaskSnapshot:
        """Answer a waiting task's question (`TaskBus.respond`)."""
        return await self.bus.respond(task_id, value)

    def answer(self, snapshot: TaskSnapshot) -> dict[str, Any]:
        """The ``submit_task`` answer for a task as it is now, with its result, as JSON.

        Raises `PydanticSerializationError` for a result that is not JSON.
        """
        answer = TaskStatusAnswer.of(snapshot).model_dump(mode="json")
        if snapshot.state is TaskState.COMPLETED:
            answer["result"] = to_jsonable_python(snapshot.result)
        return answer

    def failure_text(self, snapshot: TaskSnapshot) -> str:
        """What a failed task's tool result says."""
        return _failure_text(snapshot)

    # -- reading -----------------------------------------------------------------

    async def _get(self, task_id: str) -> TaskSnapshot:
        try:
            return await self.bus.get(task_id)
        except TaskNotFound as exc:
            raise ToolError(str(TaskNotFound(task_id))) from exc

    async def _owned(self, ctx: Context[Any, Any], task_id: str) -> TaskSnapshot:
        """The task, if it belongs to the caller; otherwise the same error as no task."""
        return await self.owned(self.identity_of(ctx), task_id)

    async def _wait(self, ctx: Context[Any, Any], task_id: str, wait: float) -> None:
        """Wait for the final event, forwarding progress (percent, message) meanwhile."""
        percent = 0.0
        with anyio.move_on_after(wait):
            try:
                async with self.bus.subscribe(task_id=task_id) as events:
                    async for event in events:
                        if isinstance(event, TaskProgress):
                            percent = max(percent, event.progress)  # MCP progress never goes back
                            await ctx.report_progress(percent, 100, event.message)
            except TaskNotFound as exc:
                raise ToolError(str(TaskNotFound(task_id))) from exc


def _is_local(request: Any) -> bool:
    """Whether a request came over stdio or in-process (no HTTP request), or from loopback."""
    if request is None:
        return True
    client = getattr(request, "client", None)
    host = getattr(client, "host", None)
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:  # not an address (a test client's name, a Unix socket)
        return False


def _failure_text(snapshot: TaskSnapshot) -> str:
    """A final failure: never "retryable", since no attempt follows it."""
    error = snapshot.error
    text = f"task {snapshot.id} ({snapshot.type}) failed"
    if error is None:
        return text
    if error.error_type is not ErrorType.RETRYABLE:
        text += f" ({error.error_type.value})"
    text += f" after {snapshot.attempts} attempt(s): {error.message}"
    if error.suggested_action:
        text += f"; suggested action: {error.suggested_action}"
    return text


def create_mcp_server(
    bus: TaskBus,
    *,
    name: str = "taskbus",
    types: list[str] | None = None,
    owner: OwnerHook | None = None,
    max_wait: float = 60.0,
    poll_interval: float = 1.0,
    instructions: str | None = _INSTRUCTIONS,
) -> MCPServer[Any]:
    """An MCP server exposing `bus`'s tasks as tools and MCP tasks (see the module docstring).

    Run `bus` yourself (``async with bus:``) around serving it, for example
    ``await server.run_stdio_async()``. The root logger is left as it was (the
    SDK's server calls ``logging.basicConfig`` as it is built).
    """
    tools = TaskbusMCP(
        bus, types=types, owner=owner, max_wait=max_wait, poll_interval=poll_interval
    )
    with _root_logger_kept():
        server: MCPServer[Any] = MCPServer(
            name, instructions=instructions, extensions=[tools.extension()]
        )
    return tools.install(server)


@contextmanager
def _root_logger_kept() -> Iterator[None]:
    """Undo what the block does to the root logger's handlers and level: a library
    leaves logging to the program."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
