"""The MCP surface (`taskbus.integrations.mcp`) through the MCP SDK's own client.

Each test opens a bus and connects the SDK's in-process `Client` to the server
with ``mode="legacy"`` (the initialize handshake over in-memory streams), and
some also at 2026-07-28 over an in-memory stream, as stdio would. In-process
clients are local, so without an ``owner=`` hook they share the local owner;
tests that need two owners name them with a hook. The MCP tasks extension and
the stdio, HTTP and Inspector runs are in tests/test_mcp_tasks.py.
Every test runs on asyncio and trio. The command runner's tests read the pids
its shell writes to a file and check that they are dead after a cancel or a
timeout (gone, or zombies left for a non-reaping init to collect).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp import Client
from mcp.client._memory import InMemoryTransport
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import Implementation
from pydantic import BaseModel
from starlette.requests import Request

from taskbus import (
    Identity,
    RetryableError,
    RetryPolicy,
    TaskBus,
    TaskContext,
    TaskFailed,
    TaskInputRequired,
    TaskProgress,
    TaskRetrying,
    TaskState,
    UserActionableError,
)
from taskbus.integrations.mcp import LOCAL_OWNER, TaskbusMCP, create_mcp_server
from taskbus.testing import EventRecorder, FakeClock

pytestmark = pytest.mark.anyio
MakeBus = Callable[..., TaskBus]

RUNNER_PATH = Path(__file__).resolve().parent.parent / "examples" / "mcp_command_runner.py"
TOOLS = {
    "answer_task",
    "cancel_task",
    "list_task_types",
    "list_tasks",
    "retry_task",
    "submit_task",
    "task_result",
    "task_status",
}


class Numbers(BaseModel):
    n: int


class Doubled(BaseModel):
    value: int


class Gate:
    """Lets a test know that ``math:slow`` runs, and let it finish."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()

    async def running(self) -> None:
        with anyio.fail_after(5):
            await self.started.wait()
        self.started = anyio.Event()  # for the next task


def register(bus: TaskBus, gate: Gate) -> None:
    @bus.task("math:double", description="Double a number")
    async def double(ctx: TaskContext, params: Numbers) -> Doubled:
        return Doubled(value=params.n * 2)

    @bus.task("math:slow", description="Wait to be released (or cancelled)")
    async def slow(ctx: TaskContext) -> str:
        for step in (10, 40, 70):
            await ctx.progress(step, f"step {step}")
        gate.started.set()
        await gate.release.wait()
        return "released"

    @bus.task("math:broken")
    async def broken() -> None:
        raise UserActionableError("no licence", suggested_action="buy one")

    @bus.task("admin:purge", description="Hidden from MCP clients in some tests")
    async def purge() -> None:
        return None


ERAS = ["2025-11-25", "2026-07-28"]


def connect(server: Any, era: str) -> Client:
    """A client with a session of its own, in either protocol era.

    2025-11-25: the initialize handshake. 2026-07-28: every request carries its
    own envelope over one in-memory stream (the SDK's transport, as stdio would).
    """
    if era == "2026-07-28":
        return Client(InMemoryTransport(server))
    return Client(server, mode="legacy")


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    return result.structured_content


async def call_error(client: Client, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    text = result.content[0].text  # type: ignore[union-attr]
    assert isinstance(text, str)
    return text


# -- the tools -------------------------------------------------------------------


async def test_lists_the_tools_and_types(make_bus: MakeBus) -> None:
    bus = make_bus()
    register(bus, Gate())
    server = create_mcp_server(bus, types=["math:"])
    async with bus, Client(server, mode="legacy") as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        types = await call(client, "list_task_types")
    assert set(tools) == TOOLS
    assert tools["task_status"].annotations is not None
    assert tools["task_status"].annotations.read_only_hint is True
    assert tools["submit_task"].input_schema["required"] == ["type"]
    by_name = {item["type"]: item for item in types["types"]}
    assert sorted(by_name) == ["math:broken", "math:double", "math:slow"]  # not admin:purge
    double = by_name["math:double"]
    assert double["description"] == "Double a number"
    assert double["input_schema"]["properties"]["n"]["type"] == "integer"
    assert double["input_schema"]["required"] == ["n"]


@pytest.mark.parametrize("era", ERAS)
async def test_submit_status_result_round_trip(make_bus: MakeBus, era: str) -> None:
    bus = make_bus()
    register(bus, Gate())
    async with bus, connect(create_mcp_server(bus), era) as client:
        assert client.protocol_version == era
        submitted = await call(client, "submit_task", type="math:double", input={"n": 21})
        assert submitted["state"] in ("queued", "running", "completed")
        assert submitted["type"] == "math:double"
        answer = await call(client, "task_result", task_id=submitted["task_id"], wait_seconds=5)
        status = await call(client, "task_status", task_id=submitted["task_id"])
        snapshot = await bus.get(submitted["task_id"])
        listed = await call(client, "list_tasks", state="completed")
        next_page = await call(client, "list_tasks", offset=1)
    assert answer["done"] is True
    assert answer["state"] == "completed"
    assert answer["result"] == {"value": 42}
    assert (status["state"], status["attempts"], status["error"]) == ("completed", 1, None)
    assert snapshot.result == Doubled(value=42)  # the bus keeps the typed result
    assert [task["task_id"] for task in listed["tasks"]] == [submitted["task_id"]]
    assert next_page == {"tasks": []}
    assert snapshot.owner == LOCAL_OWNER  # stdio-like and in-process clients are local


async def test_result_of_a_running_task_says_not_done(make_bus: MakeBus) -> None:
    bus = make_bus()
    gate = Gate()
    register(bus, gate)
    async with bus, Client(create_mcp_server(bus), mode="legacy") as client:
        task_id = (await call(client, "submit_task", type="math:slow"))["task_id"]
        await gate.running()
        now = await call(client, "task_result", task_id=task_id)
        waited = await call(client, "task_result", task_id=task_id, wait_seconds=0.05)
        gate.release.set()
        done = await call(client, "task_result", task_id=task_id, wait_seconds=5)
    assert (now["done"], now["state"], now["result"]) == (False, "running", None)
    assert now["status"]["message"] == "step 70"
    assert now["status"]["progress"] == 70
    assert waited["done"] is False
    assert (done["done"], done["result"]) == (True, "released")


async def test_waiting_forwards_progress_notifications(make_bus: MakeBus) -> None:
    bus = make_bus(progress_interval=0)
    heard = anyio.Event()

    @bus.task("math:count")
    async def count(ctx: TaskContext) -> int:
        while not heard.is_set():  # until task_result has subscribed and forwards progress
            await ctx.progress(0, "waiting for a listener")
            await anyio.sleep(0.01)
        for step in range(1, 4):
            await ctx.progress(current=step, total=4, message=f"item {step}")
        return 3

    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))
        heard.set()

    async with bus, Client(create_mcp_server(bus), mode="legacy") as client:
        task_id = (await call(client, "submit_task", type="math:count"))["task_id"]
        result = await client.call_tool(
            "task_result", {"task_id": task_id, "wait_seconds": 5}, progress_callback=on_progress
        )
    assert result.structured_content is not None
    assert result.structured_content["result"] == 3
    assert seen[-3:] == [(25, 100, "item 1"), (50, 100, "item 2"), (75, 100, "item 3")]
    assert set(seen[:-3]) == {(0, 100, "waiting for a listener")}


async def test_invalid_input_is_a_tool_error_with_pydantic_message(make_bus: MakeBus) -> None:
    bus = make_bus()
    register(bus, Gate())
    async with bus, Client(create_mcp_server(bus), mode="legacy") as client:
        text = await call_error(client, "submit_task", type="math:double", input={"n": "many"})
        missing = await call_error(client, "submit_task", type="math:double", input={})
        priority = await call_error(
            client, "submit_task", type="math:double", input={"n": 1}, priority=11
        )
        listed = await call(client, "list_tasks")
    assert "1 validation error for input of task type 'math:double'" in text
    assert "Input should be a valid integer" in text
    assert "Field required" in missing
    assert "priority" in priority
    assert listed["tasks"] == []  # nothing was stored


async def test_unknown_and_hidden_types_are_clear_errors(make_bus: MakeBus) -> None:
    bus = make_bus()
    register(bus, Gate())
    async with bus, Client(create_mcp_server(bus, types=["math:double"]), mode="legacy") as client:
        unknown = await call_error(client, "submit_task", type="math:nope", input={"n": 1})
        hidden = await call_error(client, "submit_task", type="admin:purge")
    assert "no task type named 'math:nope'; registered types: math:double" in unknown
    assert "no task type named 'admin:purge'; registered types: math:double" in hidden
    assert await bus.list() == []


async def test_failed_and_cancelled_results_are_errors(make_bus: MakeBus) -> None:
    bus = make_bus()
    gate = Gate()
    register(bus, gate)
    async with bus, Client(create_mcp_server(bus), mode="legacy") as client:
        broken = (await call(client, "submit_task", type="math:broken"))["task_id"]
        failure = await call_error(client, "task_result", task_id=broken, wait_seconds=5)
        status = await call(client, "task_status", task_id=broken)
        slow = (await call(client, "submit_task", type="math:slow"))["task_id"]
        await gate.running()
        cancel = await call(client, "cancel_task", task_id=slow, reason="user pressed stop")
        again = await call(client, "cancel_task", task_id=slow)
        cancelled = await call_error(client, "task_result", task_id=slow)
    assert "failed (user-actionable) after 1 attempt(s): no licence" in failure
    assert "suggested action: buy one" in failure
    assert status["error"] == {
        "message": "no licence",
        "error_type": "user-actionable",
        "suggested_action": "buy one",
    }
    assert cancel == {"task_id": slow, "cancelled": True, "state": "cancelled"}
    assert again == {"task_id": slow, "cancelled": False, "state": "cancelled"}
    assert f"task {slow} (math:slow) was cancelled: user pressed stop" in cancelled


@pytest.mark.parametrize("era", ERAS)
async def test_a_dead_letter_is_listed_and_retried_by_its_owner_only(
    make_bus: MakeBus, era: str
) -> None:
    bus = make_bus()
    gate = Gate()
    register(bus, gate)
    server = create_mcp_server(bus, owner=by_client_name)
    async with bus, named(server, era, "alice") as alice, named(server, era, "bob") as bob:
        broken = (await call(alice, "submit_task", type="math:broken"))["task_id"]
        await call_error(alice, "task_result", task_id=broken, wait_seconds=5)
        done = (await call(alice, "submit_task", type="math:double", input={"n": 1}))["task_id"]
        await call(alice, "task_result", task_id=done, wait_seconds=5)
        dead = await call(alice, "list_tasks", dead_letter=True)
        contrary = await call(alice, "list_tasks", dead_letter=True, state="completed")
        theirs = await call(bob, "list_tasks", dead_letter=True)
        refused = await call_error(bob, "retry_task", task_id=broken)
        retried = await call(alice, "retry_task", task_id=broken, priority=9)
        failure = await call_error(alice, "task_result", task_id=retried["task_id"], wait_seconds=5)
        not_again = await call_error(alice, "retry_task", task_id=done)
        rerun = await bus.get(retried["task_id"])
    assert [task["task_id"] for task in dead["tasks"]] == [broken]
    assert contrary == theirs == {"tasks": []}
    assert refused.endswith(f"no task with id '{broken}'")
    assert retried["task_id"] != broken and retried["type"] == "math:broken"
    assert "no licence" in failure
    assert (rerun.retry_of, rerun.owner, rerun.priority) == (broken, "alice", 9)
    assert "only a failed or cancelled task can be retried" in not_again


async def test_a_task_waiting_for_input_shows_its_question_and_answer_task_answers_it(
    make_bus: MakeBus,
) -> None:
    bus = make_bus()

    @bus.task("ask:size")
    async def size(ctx: TaskContext) -> int:
        return (await ctx.ask("How many?", model=int)) * 2

    recorder = EventRecorder(bus)
    async with bus, Client(create_mcp_server(bus), mode="legacy") as client:
        task_id = (await call(client, "submit_task", type="ask:size"))["task_id"]
        await recorder.wait_for(TaskInputRequired, task_id=task_id)
        status = await call(client, "task_status", task_id=task_id)
        refused = await call_error(client, "answer_task", task_id=task_id, value="many")
        answered = await call(client, "answer_task", task_id=task_id, value=21)
        result = await call(client, "task_result", task_id=task_id, wait_seconds=5)
        again = await call_error(client, "answer_task", task_id=task_id, value=1)
        unknown = await call_error(client, "answer_task", task_id="nope", value=1)
    assert status["state"] == "waiting"
    assert status["question"]["prompt"] == "How many?"
    assert status["question"]["json_schema"] == {"type": "integer"}
    assert "does not fit" in refused
    assert answered["state"] in ("queued", "running", "completed")
    assert result["result"] == 42
    assert "not waiting for input" in again
    assert "no task with id 'nope'" in unknown


def by_client_name(ctx: Context[Any, Any]) -> str | None:
    """An owner hook for tests: the client's self-declared name (never do this for real)."""
    params = ctx.request_context.session.client_params
    return None if params is None else params.client_info.name


def named(server: Any, era: str, name: str) -> Client:
    info = Implementation(name=name, version="1")
    if era == "2026-07-28":
        return Client(InMemoryTransport(server), client_info=info)
    return Client(server, mode="legacy", client_info=info)


@pytest.mark.parametrize("era", ERAS)
async def test_owners_cannot_see_each_others_tasks(make_bus: MakeBus, era: str) -> None:
    bus = make_bus()
    gate = Gate()
    register(bus, gate)
    server = create_mcp_server(bus, owner=by_client_name)
    unknown_id = "0" * 32
    async with bus, named(server, era, "alice") as alice, named(server, era, "bob") as bob:
        task_id = (await call(alice, "submit_task", type="math:slow"))["task_id"]
        await gate.running()
        answers = {}
        for tool in ("task_status", "task_result", "cancel_task"):
            theirs = await call_error(bob, tool, task_id=task_id)
            nobodys = await call_error(bob, tool, task_id=unknown_id)
            answers[tool] = theirs
            assert theirs.replace(task_id, "ID") == nobodys.replace(unknown_id, "ID")
        bob_list = await call(bob, "list_tasks")
        alice_list = await call(alice, "list_tasks", state="running")
        still = await call(alice, "task_status", task_id=task_id)
        gate.release.set()
        done = await call(alice, "task_result", task_id=task_id, wait_seconds=5)
    assert answers["task_status"].endswith(f"no task with id '{task_id}'")
    assert bob_list == {"tasks": []}
    assert [task["task_id"] for task in alice_list["tasks"]] == [task_id]
    assert still["state"] == "running"  # bob's cancel did nothing
    assert done["result"] == "released"
    assert (await bus.get(task_id)).owner == "alice"


@pytest.mark.parametrize("era", ERAS)
async def test_a_task_outlives_its_connection_and_is_read_back(make_bus: MakeBus, era: str) -> None:
    bus = make_bus()
    gate = Gate()
    register(bus, gate)
    server = create_mcp_server(bus)
    async with bus:
        async with connect(server, era) as first:
            task_id = (await call(first, "submit_task", type="math:slow"))["task_id"]
            await gate.running()
        gate.release.set()  # the first connection is gone, its task is not
        async with connect(server, era) as second:
            done = await call(second, "task_result", task_id=task_id, wait_seconds=5)
            listed = await call(second, "list_tasks")
    assert done["result"] == "released"
    assert [task["task_id"] for task in listed["tasks"]] == [task_id]


async def test_stateless_in_process_requests_are_local_and_a_hook_decides(
    make_bus: MakeBus,
) -> None:
    bus = make_bus()
    register(bus, Gate())
    async with bus:
        async with Client(create_mcp_server(bus)) as client:  # 2026-07-28, no stream
            assert client.protocol_version == "2026-07-28"
            local = (await call(client, "submit_task", type="math:double", input={"n": 1}))[
                "task_id"
            ]
        server = create_mcp_server(bus, owner=lambda ctx: "alice")
        async with Client(server) as client:
            task_id = (await call(client, "submit_task", type="math:double", input={"n": 2}))[
                "task_id"
            ]
            answer = await call(client, "task_result", task_id=task_id, wait_seconds=5)
        nobody = create_mcp_server(bus, owner=lambda ctx: None)
        async with Client(nobody) as client:
            no_owner = await call_error(client, "list_tasks")
    assert (await bus.get(local)).owner == LOCAL_OWNER
    assert answer["result"] == {"value": 4}
    assert (await bus.get(task_id)).owner == "alice"
    assert "no owner" in no_owner


def http_context(host: str) -> Context[Any, Any]:
    """A tool context for an HTTP request from `host` (only what owner_of reads)."""
    request = Request({"type": "http", "client": (host, 50000), "headers": [], "method": "POST"})
    request_context: ServerRequestContext[Any, Any] = ServerRequestContext(
        session=None,  # type: ignore[arg-type]  # owner_of reads the request only
        lifespan_context={},
        protocol_version="2026-07-28",
        method="tools/call",
        request=request,
    )
    return Context(request_context=request_context)


def test_without_a_hook_only_loopback_http_is_served() -> None:
    tools = TaskbusMCP(TaskBus())
    assert tools.owner_of(http_context("127.0.0.1")) == LOCAL_OWNER
    assert tools.owner_of(http_context("::1")) == LOCAL_OWNER
    for remote in ("203.0.113.9", "2001:db8::1", "testclient"):
        with pytest.raises(ToolError, match="no owner= hook, so it serves tasks only to local"):
            tools.owner_of(http_context(remote))
    hooked = TaskbusMCP(TaskBus(), owner=lambda ctx: "carol")
    assert hooked.owner_of(http_context("203.0.113.9")) == "carol"


async def test_submit_needs_a_running_bus(make_bus: MakeBus) -> None:
    bus = make_bus()
    register(bus, Gate())
    async with Client(create_mcp_server(bus), mode="legacy") as client:
        text = await call_error(client, "submit_task", type="math:double", input={"n": 1})
    assert "not running" in text


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="max_wait"):
        TaskbusMCP(TaskBus(), max_wait=-1)
    tools = TaskbusMCP(TaskBus(), types=["shell:", "math:double"])
    assert tools.exposes("shell:run")
    assert tools.exposes("math:double")
    assert not tools.exposes("math:doubled")
    assert not tools.exposes("shell")


async def test_only_a_task_that_will_run_again_is_shown_as_retrying(
    make_bus: MakeBus, fake_clock: FakeClock
) -> None:
    bus = make_bus(clock=fake_clock)

    @bus.task("net:down", retry=RetryPolicy(max_attempts=2, base_delay=10, jitter=0))
    async def down() -> None:
        raise RetryableError("service down")

    async with bus, Client(create_mcp_server(bus), mode="legacy") as client:
        recorder = EventRecorder(bus)
        task_id = (await call(client, "submit_task", type="net:down"))["task_id"]
        await recorder.wait_for(TaskRetrying, task_id=task_id)
        waiting = await call(client, "task_status", task_id=task_id)
        fake_clock.advance(11)
        await recorder.wait_for(TaskFailed, task_id=task_id)
        final = await call(client, "task_status", task_id=task_id)
        failure = await call_error(client, "task_result", task_id=task_id)
    assert (waiting["state"], waiting["will_retry"]) == ("queued", True)
    assert (final["state"], final["will_retry"], final["attempts"]) == ("failed", False, 2)
    assert final["error"]["error_type"] == "retryable"  # the kind of error, not a promise
    assert f"task {task_id} (net:down) failed after 2 attempt(s): service down" in failure
    assert "retryable" not in failure


# -- the command runner example ---------------------------------------------------


@pytest.fixture(scope="module")
def runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mcp_command_runner", RUNNER_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def is_dead(pid: int) -> bool:
    """Gone, or a zombie (dead, waiting to be reaped by a parent or init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"


def pid_script(*, ignore_term: bool = False) -> str:
    """Print the shell's pid and its child's, then wait for the child."""
    trap = "trap '' TERM; " if ignore_term else ""  # ignored signals stay ignored in children
    return f"{trap}echo $$; sleep 30 & echo $!; wait"


async def submit_and_read_pids(bus: TaskBus, client: Client, command: str) -> tuple[str, list[int]]:
    """Submit `command`, and read the two pids it prints from its progress events."""
    pids: list[int] = []
    async with bus.subscribe(task_type="shell:run", events=[TaskProgress]) as events:
        answer = await call(client, "submit_task", type="shell:run", input={"command": command})
        with anyio.fail_after(5):
            async for event in events:
                pids.append(int(event.message))
                if len(pids) == 2:
                    break
    return answer["task_id"], pids


async def test_command_runner_streams_output_and_returns_the_tail(
    make_bus: MakeBus, runner: ModuleType
) -> None:
    bus = make_bus()
    runner.register_shell_task(bus)
    command = "printf 'one\\ntwo\\nthree'; echo; echo oops >&2; exit 3"
    async with bus, Client(create_mcp_server(bus), mode="legacy") as client:
        task_id = (
            await call(
                client, "submit_task", type="shell:run", input={"command": command, "tail": 2}
            )
        )["task_id"]
        answer = await call(client, "task_result", task_id=task_id, wait_seconds=5)
    assert answer["result"] == {"exit_code": 3, "output_tail": ["three", "oops"], "lines": 4}
    assert answer["status"]["message"] == "oops"  # the last line, as progress message


def test_command_runner_splits_long_lines(runner: ModuleType) -> None:
    lines, rest = runner.split_lines(b"a\r\nb\n" + b"x" * (runner.MAX_LINE + 5))
    assert lines == ["a", "b", "x" * runner.MAX_LINE]
    assert rest == b"xxxxx"


@pytest.mark.parametrize("ignore_term", [False, True], ids=["sigterm", "sigkill-after-grace"])
async def test_cancel_kills_the_command_process_group(
    make_bus: MakeBus, runner: ModuleType, ignore_term: bool
) -> None:
    bus = make_bus(progress_interval=0)
    grace = 0.2 if ignore_term else 2.0
    runner.register_shell_task(bus, grace=grace)
    async with bus, Client(create_mcp_server(bus), mode="legacy") as client:
        task_id, pids = await submit_and_read_pids(bus, client, pid_script(ignore_term=ignore_term))
        assert not any(is_dead(pid) for pid in pids)
        started = anyio.current_time()
        answer = await call(client, "cancel_task", task_id=task_id)
        took = anyio.current_time() - started
    assert answer == {"task_id": task_id, "cancelled": True, "state": "cancelled"}
    assert all(is_dead(pid) for pid in pids), pids
    if ignore_term:
        assert grace <= took < grace + 1.5  # SIGTERM ignored: SIGKILL once the grace ran out
    else:
        assert took < grace - 0.5  # SIGTERM was enough: no waiting out the grace


async def test_timeout_kills_the_command_process_group(
    make_bus: MakeBus, runner: ModuleType
) -> None:
    bus = make_bus(progress_interval=0)
    runner.register_shell_task(bus, timeout=0.3, grace=0.2)
    async with bus, Client(create_mcp_server(bus), mode="legacy") as client:
        task_id, pids = await submit_and_read_pids(bus, client, pid_script())
        failure = await call_error(client, "task_result", task_id=task_id, wait_seconds=5)
    assert "failed after 1 attempt(s)" in failure
    assert "retryable" not in failure  # it is final: nothing will retry it
    assert "timed out" in failure
    assert all(is_dead(pid) for pid in pids), pids


def stop_pids(pids: list[int]) -> None:
    """Clean-up for a failed test: kill what it started, with the groups they lead."""
    for pid in pids:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


async def wait_dead(pids: list[int], timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while not all(is_dead(pid) for pid in pids):  # noqa: ASYNC110 - no event for a death
            await anyio.sleep(0.02)


async def test_a_command_leaves_no_process_behind_when_its_shell_exits(
    make_bus: MakeBus, runner: ModuleType
) -> None:
    bus = make_bus()
    runner.register_shell_task(bus, grace=0.5)
    command = "sleep 300 >/dev/null 2>&1 & echo $!"
    async with bus, Client(create_mcp_server(bus), mode="legacy") as client:
        task_id = (await call(client, "submit_task", type="shell:run", input={"command": command}))[
            "task_id"
        ]
        answer = await call(client, "task_result", task_id=task_id, wait_seconds=5)
    child = int(answer["result"]["output_tail"][0])
    try:
        assert answer["result"]["exit_code"] == 0
        assert is_dead(child), "the shell's background child was killed with its group"
    finally:
        stop_pids([child])


async def test_stopping_the_runner_cancels_every_command_and_kills_its_group(
    make_bus: MakeBus, runner: ModuleType
) -> None:
    bus = make_bus(progress_interval=0)
    groups = runner.CommandGroups()
    runner.register_shell_task(bus, groups=groups)
    pids: list[int] = []
    try:
        async with bus, Client(create_mcp_server(bus), mode="legacy") as client:
            first, first_pids = await submit_and_read_pids(bus, client, pid_script())
            second, second_pids = await submit_and_read_pids(bus, client, pid_script())
            pids = first_pids + second_pids  # each shell's pid leads its group
            assert len(groups) == 2 and not any(is_dead(pid) for pid in pids)
            await runner.stop_commands(bus, groups, "server stopping", grace=0.5)
            states = [(await bus.get(task_id)).state for task_id in (first, second)]
            assert len(groups) == 0
        assert states == [TaskState.CANCELLED, TaskState.CANCELLED]
        assert all(is_dead(pid) for pid in pids), pids
    finally:
        stop_pids(pids)


class StdioPeer:
    """The command runner as a real MCP server process, driven over its stdin/stdout."""

    def __init__(self, process: Process) -> None:
        self.process = process
        assert process.stdout is not None
        self._lines = BufferedByteReceiveStream(process.stdout)
        self._ids = iter(range(1, 1000))

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(json.dumps(message).encode() + b"\n")

    async def request(self, method: str, params: dict[str, Any]) -> Any:
        request_id = next(self._ids)
        await self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        while True:
            answer = json.loads(await self._lines.receive_until(b"\n", 1 << 20))
            if answer.get("id") == request_id:
                assert "error" not in answer, answer
                return answer["result"]

    async def handshake(self) -> None:
        await self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"},
            },
        )
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})


@pytest.mark.parametrize("goodbye", ["stdin-closed", "sigterm"])
async def test_the_command_runner_kills_its_commands_when_its_client_goes_away(
    runner: ModuleType, tmp_path: Path, goodbye: str
) -> None:
    pid_file = tmp_path / "pids"
    command = f"sleep 300 & echo $$ $! > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; sleep 300"
    pids: list[int] = []
    with (tmp_path / "server.log").open("wb") as log:
        process = await anyio.open_process(
            [sys.executable, str(RUNNER_PATH)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    try:
        peer = StdioPeer(process)
        with anyio.fail_after(30):
            await peer.handshake()
            arguments = {"type": "shell:run", "input": {"command": command}}
            await peer.request("tools/call", {"name": "submit_task", "arguments": arguments})
            while not pid_file.exists():  # noqa: ASYNC110 - the shell only writes a file
                await anyio.sleep(0.02)
        pids = [int(pid) for pid in pid_file.read_text().split()]
        assert len(pids) == 2 and not any(is_dead(pid) for pid in pids)
        if goodbye == "stdin-closed":
            assert process.stdin is not None
            await process.stdin.aclose()
        else:
            process.send_signal(signal.SIGTERM)
        with anyio.fail_after(10):
            code = await process.wait()
        assert code == (0 if goodbye == "stdin-closed" else -signal.SIGTERM)
        await wait_dead(pids, timeout=2)
    finally:
        stop_pids(pids)
        if process.returncode is None:
            process.kill()
        with anyio.CancelScope(shield=True):
            await process.aclose()


ROOT_LOGGER_CHECK = """
import logging
from taskbus import TaskBus
from taskbus.integrations.mcp import create_mcp_server

root = logging.getLogger()
create_mcp_server(TaskBus())
print(len(root.handlers), logging.getLevelName(root.level))
"""


def test_the_mcp_server_leaves_the_root_logger_as_it_was() -> None:
    # A fresh interpreter, as a program that configured no logging: without the
    # guard, the SDK's basicConfig would add a handler and set the level to INFO.
    done = subprocess.run(
        [sys.executable, "-c", ROOT_LOGGER_CHECK],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["0", "WARNING"], done.stderr


def test_the_mcp_server_keeps_the_root_handlers_a_program_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = logging.getLogger()
    mine = logging.NullHandler()
    monkeypatch.setattr(root, "handlers", [mine])
    monkeypatch.setattr(root, "level", logging.ERROR)
    create_mcp_server(TaskBus())
    assert root.handlers == [mine]
    assert root.level == logging.ERROR


def admin_by_name(ctx: Context[Any, Any]) -> Identity | None:
    """An owner hook for tests: the client named "ops" administers every owner's tasks."""
    owner = by_client_name(ctx)
    return None if owner is None else Identity(owner=owner, admin=owner == "ops")


@pytest.mark.parametrize("era", ERAS)
async def test_an_administrator_reads_lists_and_cancels_every_owners_tasks(
    make_bus: MakeBus, era: str
) -> None:
    bus = make_bus()
    gate = Gate()
    register(bus, gate)
    server = create_mcp_server(bus, owner=admin_by_name)
    async with bus, named(server, era, "alice") as alice, named(server, era, "ops") as ops:
        task_id = (await call(alice, "submit_task", type="math:slow"))["task_id"]
        await gate.running()
        seen = await call(ops, "task_status", task_id=task_id)
        listed = await call(ops, "list_tasks")
        cancelled = await call(ops, "cancel_task", task_id=task_id, reason="ops")
        alice_sees = await call(alice, "task_status", task_id=task_id)
        async with named(server, era, "bob") as bob:
            bobs_view = await call_error(bob, "task_status", task_id=task_id)
    assert seen["state"] == "running"
    assert [task["task_id"] for task in listed["tasks"]] == [task_id]
    assert cancelled["cancelled"] is True
    assert alice_sees["state"] == "cancelled"
    assert bobs_view.endswith(f"no task with id '{task_id}'")
