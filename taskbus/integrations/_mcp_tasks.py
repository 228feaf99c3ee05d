"""The MCP tasks extension (``io.modelcontextprotocol/tasks``, SEP-2663) over a `TaskBus`.

Built on the MCP SDK's public `Extension` API: it serves ``tasks/get``,
``tasks/cancel`` and ``tasks/update``, and wraps ``tools/call`` so that a
``submit_task`` call from a client that declares the extension on a 2026-07-28
request answers a task handle (``resultType: "task"``) at once instead of the
plain tool's status. Everything else passes through to the plain tools.

taskbus states map onto the extension's: queued and running are ``working``
(the progress, current operation and retry wait go into ``statusMessage``),
``completed``, ``cancelled``; a task that failed is ``completed`` with a tool
result that has ``isError: true``, since the specification keeps ``failed`` for
JSON-RPC errors (here: a result that cannot be sent as JSON). A task waiting
for input (``ctx.ask``) is ``input_required``: its ``inputRequests`` hold one
form elicitation under the question's key (its prompt, and the answer's JSON
schema; one that is not an object is wrapped as the property ``value``), and
``tasks/update`` with an ``accept`` response under that key answers it
(``TaskBus.respond``; an answer that does not fit is an invalid-params error),
while ``decline`` or ``cancel`` cancels the task. Responses under keys that are
not outstanding are acknowledged and ignored, as the specification says.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any, Protocol

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import Context, require_client_extension
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    ElicitRequest,
    ElicitRequestFormParams,
    ElicitResult,
    RequestParams,
    TextContent,
)
from mcp_types.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field, ValidationError
from pydantic_core import PydanticSerializationError

from taskbus import (
    Identity,
    InputQuestion,
    InvalidAnswer,
    TaskNotFound,
    TaskNotWaiting,
    TaskSnapshot,
    TaskState,
)

__all__ = ["EXTENSION_ID", "TaskTools", "TasksExtension"]

logger = logging.getLogger("taskbus.mcp")

EXTENSION_ID = "io.modelcontextprotocol/tasks"
"""The identifier under which clients and servers declare the extension."""

SUBMIT_TOOL = "submit_task"


class TaskTools(Protocol):
    """What the extension needs from the taskbus tools (`TaskbusMCP` is one)."""

    def owner_of(self, ctx: Context[Any, Any]) -> str:
        """The owner of the request's tasks; raises `ToolError` if it has none."""
        ...

    async def start(self, owner: str, type: str, input: Any, priority: int | None) -> TaskSnapshot:
        """Submit a task for `owner`; raises `ToolError` for bad input."""
        ...

    def identity_of(self, ctx: Context[Any, Any]) -> Identity:
        """Who the request comes from; raises `ToolError` if it has no owner."""
        ...

    async def owned(self, owner: str | Identity, task_id: str) -> TaskSnapshot:
        """`owner`'s task (any, for an administrator); raises `ToolError` for an
        unknown task or another owner's."""
        ...

    async def cancel(self, task_id: str, reason: str) -> bool:
        """Cancel a task; False if it had already finished."""
        ...

    async def respond(self, task_id: str, value: Any) -> TaskSnapshot:
        """Answer a waiting task's question (`TaskBus.respond`)."""
        ...

    def answer(self, snapshot: TaskSnapshot) -> dict[str, Any]:
        """The ``submit_task`` answer (JSON) for a task, with its result once completed."""
        ...

    def failure_text(self, snapshot: TaskSnapshot) -> str:
        """What a failed task's tool result says."""
        ...


class TaskIdParams(RequestParams):
    """The params of ``tasks/get`` and ``tasks/cancel``."""

    task_id: str = Field(alias="taskId")


class UpdateTaskParams(RequestParams):
    """The params of ``tasks/update``."""

    task_id: str = Field(alias="taskId")
    input_responses: dict[str, Any] = Field(default_factory=dict, alias="inputResponses")


class _SubmitArguments(BaseModel):
    type: str
    input: Any = None
    priority: int | None = Field(default=None, ge=1, le=10)


class TasksExtension(Extension):
    """Serves taskbus tasks through the MCP tasks extension (see the module docstring).

    `poll_interval`: the polling interval, in seconds, suggested to clients
    (``pollIntervalMs``).
    """

    identifier = EXTENSION_ID

    def __init__(self, tools: TaskTools, *, poll_interval: float = 1.0) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0, not {poll_interval}")
        self.source = tools
        self.poll_interval_ms = max(1, round(poll_interval * 1000))

    def methods(self) -> list[MethodBinding]:
        return [
            MethodBinding("tasks/get", TaskIdParams, self._get),
            MethodBinding("tasks/cancel", TaskIdParams, self._cancel),
            MethodBinding("tasks/update", UpdateTaskParams, self._update),
        ]

    async def intercept_tool_call(
        self,
        params: CallToolRequestParams,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
    ) -> HandlerResult:
        """A task handle for ``submit_task`` when the request declares the extension."""
        if (
            params.name != SUBMIT_TOOL
            or ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS  # legacy wires carry no handle
            or not _declared(ctx)
        ):
            return await call_next(ctx)
        try:
            arguments = _SubmitArguments.model_validate(params.arguments or {})
        except ValidationError:
            return await call_next(ctx)  # the plain tool answers its own validation error
        try:
            owner = self.source.owner_of(Context(request_context=ctx))
            snapshot = await self.source.start(
                owner, arguments.type, arguments.input, arguments.priority
            )
        except ToolError as exc:
            return CallToolResult(content=[TextContent(type="text", text=str(exc))], is_error=True)
        return {**self._task(snapshot), "resultType": "task"}

    # -- methods -------------------------------------------------------------------

    async def _get(
        self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams
    ) -> HandlerResult:
        snapshot = await self._owned(ctx, params.task_id)
        return self._detailed(snapshot)

    async def _cancel(
        self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams
    ) -> HandlerResult:
        await self._owned(ctx, params.task_id)
        try:
            await self.source.cancel(params.task_id, "cancelled by MCP client (tasks/cancel)")
        except TaskNotFound as exc:  # purged in between
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from exc
        return {}

    async def _update(
        self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams
    ) -> HandlerResult:
        snapshot = await self._owned(ctx, params.task_id)
        question = snapshot.question if snapshot.state is TaskState.WAITING else None
        ignored = set(params.input_responses)
        if question is not None and question.key in params.input_responses:
            ignored.discard(question.key)
            await self._take_response(snapshot, question, params.input_responses[question.key])
        if ignored:  # no request is outstanding under those keys: the spec says ignore
            logger.debug(
                "tasks/update for %s: ignored response(s) to no outstanding request: %s",
                params.task_id,
                sorted(ignored),
            )
        return {}

    async def _take_response(
        self, snapshot: TaskSnapshot, question: InputQuestion, response: Any
    ) -> None:
        """Answer the task's question with an elicitation result, or cancel the task
        when the user declined it."""
        try:
            result = ElicitResult.model_validate(response)
        except ValidationError as exc:
            raise MCPError(
                code=INVALID_PARAMS, message=f"not an elicitation result: {exc}"
            ) from exc
        try:
            if result.action != "accept":
                done = "declined" if result.action == "decline" else "cancelled"
                await self.source.cancel(snapshot.id, f"input {done} by the MCP client")
                return
            content = result.content or {}
            wrapped = _wrapped(question.json_schema)
            value = content.get("value") if wrapped else content
            await self.source.respond(snapshot.id, value)
        except InvalidAnswer as exc:
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from exc
        except TaskNotWaiting:  # answered or cancelled meanwhile: nothing is outstanding
            logger.debug("tasks/update for %s: no longer waiting", snapshot.id)
        except TaskNotFound as exc:  # purged in between
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from exc

    async def _owned(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> TaskSnapshot:
        require_client_extension(ctx, EXTENSION_ID)
        try:
            caller = self.source.identity_of(Context(request_context=ctx))
        except ToolError as exc:
            raise MCPError(code=INVALID_REQUEST, message=str(exc)) from exc
        try:
            return await self.source.owned(caller, task_id)
        except ToolError as exc:  # unknown, or another owner's: the same answer
            raise MCPError(code=INVALID_PARAMS, message=str(exc)) from exc

    # -- the Task shape ------------------------------------------------------------

    def _task(self, snapshot: TaskSnapshot) -> dict[str, Any]:
        """The extension's ``Task`` for a taskbus task (without result or error)."""
        status, message = _status(snapshot)
        task: dict[str, Any] = {
            "taskId": snapshot.id,
            "status": status,
            "createdAt": snapshot.created_at.isoformat(),
            "lastUpdatedAt": _last_updated(snapshot).isoformat(),
            "ttlMs": None,  # kept until the store's purge policy removes it
            "pollIntervalMs": self.poll_interval_ms,
        }
        if message:
            task["statusMessage"] = message
        if snapshot.state is TaskState.WAITING and snapshot.question is not None:
            task["inputRequests"] = {snapshot.question.key: _elicitation(snapshot.question)}
        return task

    def _detailed(self, snapshot: TaskSnapshot) -> dict[str, Any]:
        """The ``tasks/get`` answer: the task, with its final result when it has one."""
        task = self._task(snapshot)
        if snapshot.state is TaskState.FAILED:
            task["result"] = CallToolResult(
                content=[TextContent(type="text", text=self.source.failure_text(snapshot))],
                is_error=True,
            ).model_dump(by_alias=True, mode="json", exclude_none=True)
        elif snapshot.state is TaskState.COMPLETED:
            try:
                answer = self.source.answer(snapshot)
            except PydanticSerializationError as exc:
                task.update(
                    status="failed",
                    statusMessage=f"the task's result is not JSON: {exc}",
                    error={"code": INTERNAL_ERROR, "message": "the task's result is not JSON"},
                )
                return task
            task["result"] = CallToolResult(
                content=[TextContent(type="text", text=_json_text(answer))],
                structured_content=answer,
            ).model_dump(by_alias=True, mode="json", exclude_none=True)
        return task


def _declared(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request's client declared the extension (per request, at 2026-07-28)."""
    capabilities = ctx.session.client_capabilities
    extensions = capabilities.extensions if capabilities is not None else None
    return extensions is not None and EXTENSION_ID in extensions


def _status(snapshot: TaskSnapshot) -> tuple[str, str | None]:
    """The extension's status for a taskbus state, and a status message."""
    state = snapshot.state
    if state is TaskState.COMPLETED:
        return "completed", None
    if state is TaskState.FAILED:
        error = snapshot.error
        return "completed", f"failed: {error.message}" if error is not None else "failed"
    if state is TaskState.CANCELLED:
        return "cancelled", snapshot.cancel_reason
    if state is TaskState.WAITING:
        question = snapshot.question
        return "input_required", question.prompt if question is not None else None
    if state is TaskState.QUEUED:
        if snapshot.error is not None:
            return "working", f"queued to run again after: {snapshot.error.message}"
        return "working", "queued"
    details = [] if snapshot.progress is None else [f"{snapshot.progress:g}%"]
    if snapshot.message:
        details.append(snapshot.message)
    return "working", "running: " + ", ".join(details) if details else "running"


def _wrapped(schema: dict[str, Any]) -> bool:
    """Whether an answer's schema is not an object, so the form asks for ``value``."""
    return schema.get("type") != "object"


def _elicitation(question: InputQuestion) -> dict[str, Any]:
    """A form elicitation (``elicitation/create``) for a waiting task's question."""
    schema = question.json_schema
    if _wrapped(schema):
        schema = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
    request = ElicitRequest(
        params=ElicitRequestFormParams(message=question.prompt, requested_schema=schema)
    )
    return request.model_dump(by_alias=True, mode="json", exclude_none=True)


def _last_updated(snapshot: TaskSnapshot) -> datetime:
    return max(
        stamp
        for stamp in (
            snapshot.created_at,
            snapshot.queued_at,
            snapshot.started_at,
            snapshot.finished_at,
        )
        if stamp is not None
    )


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)
