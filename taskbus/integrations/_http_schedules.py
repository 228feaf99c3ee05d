"""The HTTP API's ``/schedules`` routes: list, store (upsert), read, remove, pause and
resume schedules, each caller seeing only their own (an administrator every one).

A schedule belongs to the caller who stores it; another owner's schedule answers
404, as an unknown id does.
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from .. import (
    MAX_DELAY,
    MAX_PRIORITY,
    MIN_PRIORITY,
    BusNotRunning,
    Identity,
    InvalidSubmission,
    InvalidTaskInput,
    Schedule,
    ScheduleNotFound,
    TaskBus,
    UnknownTaskType,
)
from ._http_errors import ApiError, echo, pydantic_details
from ._http_input import MAX_NAME_LENGTH, read_json, valid_task_id
from ._http_json import model_json

__all__ = ["ScheduleBody", "ScheduleList", "ScheduleRoutes"]


class ScheduleBody(BaseModel):
    """The body of ``POST /schedules`` (strict; the keywords of `TaskBus.schedule`)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, description="The task type.")
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        description="The schedule's id (default: the type, `owner/type` with an owner).",
    )
    cron: str | None = Field(default=None, max_length=256, description="A cron expression.")
    every: float | None = Field(
        default=None, gt=0, le=MAX_DELAY, allow_inf_nan=False, description="Seconds."
    )
    tz: str = Field(default="UTC", min_length=1, max_length=64, description="IANA time zone.")
    input: Any = None
    jitter: float | None = Field(default=None, ge=0, le=MAX_DELAY, allow_inf_nan=False)
    misfire: Literal["skip", "once", "all"] = "once"
    misfire_limit: int = Field(default=100, ge=1, le=10_000)
    misfire_grace: float = Field(default=60.0, ge=0, le=MAX_DELAY, allow_inf_nan=False)
    priority: int | None = Field(default=None, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    metadata: dict[str, Any] | None = None
    paused: bool | None = None


class ScheduleList(BaseModel):
    """The answer of ``GET /schedules``."""

    model_config = ConfigDict(frozen=True)

    items: builtins.list[Schedule]


Caller = Callable[[Request], Awaitable[Identity | None]]


def _json(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, headers=headers, media_type="application/json")


def _not_found(schedule_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no schedule with id {echo(schedule_id)}")


class ScheduleRoutes:
    """The handlers of ``/schedules``, over one bus and the API's caller lookup."""

    def __init__(self, bus: TaskBus, caller: Caller, max_body: int) -> None:
        self.bus = bus
        self.caller = caller
        self.max_body = max_body

    async def _visible(self, request: Request) -> Schedule:
        """The caller's schedule named in the path; 404 for unknown and another's alike."""
        caller = await self.caller(request)
        schedule_id = request.path_params["schedule_id"]
        if not valid_task_id(schedule_id):
            raise _not_found(schedule_id)
        try:
            schedule = await self.bus.get_schedule(schedule_id)
        except ScheduleNotFound:
            raise _not_found(schedule_id) from None
        if caller is not None and not caller.admin and schedule.owner != caller.owner:
            raise _not_found(schedule_id)
        return schedule

    async def list(self, request: Request) -> Response:
        caller = await self.caller(request)
        owner = request.query_params.get("owner") or None
        if owner is not None and len(owner) > MAX_NAME_LENGTH:
            raise ApiError(400, "bad_request", f"owner is longer than {MAX_NAME_LENGTH} characters")
        if caller is not None and not caller.admin:
            if owner is not None and owner != caller.owner:
                return _json(model_json(ScheduleList(items=[])))
            owner = caller.owner
        items = await self.bus.schedules(owner=owner)
        return _json(model_json(ScheduleList(items=items)))

    async def store(self, request: Request) -> Response:
        caller = await self.caller(request)
        payload = await read_json(request, self.max_body)
        try:
            body = ScheduleBody.model_validate(payload)
        except ValidationError as exc:
            details = pydantic_details(exc, with_input=False)
            raise ApiError(422, "invalid_schedule", "invalid schedule", details) from None
        try:
            schedule = await self.bus.schedule(
                body.type,
                cron=body.cron,
                every=body.every,
                tz=body.tz,
                input=body.input,
                id=body.id,
                jitter=body.jitter,
                misfire=body.misfire,
                misfire_limit=body.misfire_limit,
                misfire_grace=body.misfire_grace,
                priority=body.priority,
                owner=None if caller is None else caller.owner,
                metadata=body.metadata,
                paused=body.paused,
            )
        except UnknownTaskType as exc:
            raise ApiError(404, "unknown_task_type", str(exc)) from None
        except InvalidTaskInput as exc:
            details = pydantic_details(exc, with_input=True)
            raise ApiError(422, "invalid_input", exc.title, details) from None
        except InvalidSubmission as exc:  # InvalidSchedule is one
            raise ApiError(422, "invalid_schedule", str(exc)) from None
        except BusNotRunning as exc:
            raise ApiError(503, "bus_not_running", str(exc)) from None
        return _json(model_json(schedule), 200, {"Location": f"/schedules/{schedule.id}"})

    async def get(self, request: Request) -> Response:
        return _json(model_json(await self._visible(request)))

    async def remove(self, request: Request) -> Response:
        schedule = await self._visible(request)
        try:
            await self.bus.remove_schedule(schedule.id)
        except ScheduleNotFound:  # removed meanwhile
            raise _not_found(schedule.id) from None
        return Response(status_code=204)

    async def pause(self, request: Request) -> Response:
        return await self._switch(request, self.bus.pause_schedule)

    async def resume(self, request: Request) -> Response:
        return await self._switch(request, self.bus.resume_schedule)

    async def _switch(
        self, request: Request, switch: Callable[[str], Awaitable[Schedule]]
    ) -> Response:
        schedule = await self._visible(request)
        try:
            switched = await switch(schedule.id)
        except ScheduleNotFound:
            raise _not_found(schedule.id) from None
        return _json(model_json(switched))
