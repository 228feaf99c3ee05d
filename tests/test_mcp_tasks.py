"""MCP tasks (the ``io.modelcontextprotocol/tasks`` extension) through the MCP SDK's client.

The first tests run the server in-process (the SDK's in-memory stream, in both
protocol eras); the others spawn tests/_mcp_task_server.py and talk to it over
stdio and over streamable HTTP on loopback, in both eras, and through the MCP
Inspector's CLI (npm ``@modelcontextprotocol/inspector``, installed once into
``.venv/npm`` when it is missing). At 2026-07-28 a ``submit_task`` call that
declares the extension answers a task handle; at 2025-11-25 the wire cannot
carry one, so it answers the plain status and the ``tasks/*`` methods follow its
id. Polls are bounded by `anyio.fail_after` and spaced by the server's
``pollIntervalMs``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client._memory import InMemoryTransport
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim, advertise
from mcp.shared.exceptions import MCPError
from mcp_types import (
    CallToolRequest,
    CallToolRequestParams,
    CallToolResult,
    Request,
    RequestParams,
    Result,
)
from pydantic import BaseModel, ConfigDict

from taskbus import TaskBus, TaskContext, TaskState, UserActionableError
from taskbus.integrations.mcp import LOCAL_OWNER, create_mcp_server

pytestmark = pytest.mark.anyio
MakeBus = Callable[..., TaskBus]

EXTENSION = "io.modelcontextprotocol/tasks"
ERAS = ["2025-11-25", "2026-07-28"]
ROOT = Path(__file__).resolve().parent.parent
SERVER = Path(__file__).resolve().parent / "_mcp_task_server.py"
INSPECTOR_VERSION = "2.12.0"
INVALID_PARAMS = -32602
MISSING_CAPABILITY = -32021


class TaskIdParams(RequestParams):
    task_id: str


class UpdateParams(RequestParams):
    task_id: str
    input_responses: dict[str, Any]


class Raw(BaseModel):
    """Any result, as sent."""

    model_config = ConfigDict(extra="allow")


async def submit(client: Client, **arguments: Any) -> dict[str, Any]:
    """``tools/call submit_task``, answered as sent: a task handle or a tool result."""
    request = CallToolRequest(params=CallToolRequestParams(name="submit_task", arguments=arguments))
    return (await client.session.send_request(request, Raw)).model_dump(by_alias=True)


def task_id_of(answer: dict[str, Any]) -> str:
    if answer.get("resultType") == "task":
        return str(answer["taskId"])
    return str(answer["structuredContent"]["task_id"])  # the plain tool's status


async def tasks(client: Client, method: str, task_id: str, **extra: Any) -> dict[str, Any]:
    params: RequestParams = (
        UpdateParams(task_id=task_id, **extra) if extra else TaskIdParams(task_id=task_id)
    )
    request: Request[Any, Any] = Request(method=method, params=params)
    return (await client.session.send_request(request, Raw)).model_dump(by_alias=True)


async def poll(
    client: Client, task_id: str, until: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """``tasks/get`` until `until` holds (10 s at most), at the suggested interval."""
    with anyio.fail_after(10):
        while True:
            task = await tasks(client, "tasks/get", task_id)
            if until(task):
                return task
            await anyio.sleep(task.get("pollIntervalMs", 50) / 1000)


def final(task: dict[str, Any]) -> bool:
    return task["status"] in ("completed", "failed", "cancelled")


# -- in-process --------------------------------------------------------------------


class Gate:
    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()


def register(bus: TaskBus, gate: Gate) -> None:
    @bus.task("math:double")
    async def double(ctx: TaskContext, params: dict[str, int]) -> dict[str, int]:
        return {"value": params["n"] * 2}

    @bus.task("math:slow")
    async def slow(ctx: TaskContext) -> str:
        await ctx.progress(40, "step 40")
        gate.started.set()
        await gate.release.wait()
        return "released"

    @bus.task("math:broken")
    async def broken() -> None:
        raise UserActionableError("no licence", suggested_action="buy one")

    @bus.task("math:opaque")
    async def opaque() -> object:
        return object()


def connect(server: Any, era: str, *, declare: bool = True) -> Client:
    extensions = [advertise(EXTENSION)] if declare else None
    if era == "2026-07-28":
        return Client(InMemoryTransport(server), extensions=extensions)
    return Client(server, mode="legacy", extensions=extensions)


async def test_a_declaring_2026_client_gets_a_task_handle_at_once(make_bus: MakeBus) -> None:
    bus = make_bus()
    gate = Gate()
    register(bus, gate)
    async with bus, connect(create_mcp_server(bus, poll_interval=0.25), "2026-07-28") as client:
        handle = await submit(client, type="math:slow")
        with anyio.fail_after(5):
            await gate.started.wait()
        working = await poll(client, handle["taskId"], lambda task: "40%" in task["statusMessage"])
        gate.release.set()
        done = await poll(client, handle["taskId"], final)
    assert handle["resultType"] == "task"
    assert handle["status"] == "working"
    assert handle["pollIntervalMs"] == 250
    assert handle["ttlMs"] is None
    assert {"createdAt", "lastUpdatedAt"} <= handle.keys()
    assert (await bus.get(handle["taskId"])).owner == LOCAL_OWNER
    assert working["resultType"] == "complete"
    assert working["statusMessage"] == "running: 40%, step 40"
    assert done["status"] == "completed"
    assert done["result"]["isError"] is False
    assert done["result"]["structuredContent"]["result"] == "released"
    assert done["result"]["structuredContent"]["state"] == "completed"
    assert json.loads(done["result"]["content"][0]["text"])["result"] == "released"


class TaskHandle(Result):
    """The extension's CreateTaskResult, as a client extension claims it."""

    result_type: Literal["task"] = "task"
    task_id: str
    status: str
    poll_interval_ms: int | None = None


class TasksClient(ClientExtension):
    """A minimal client side of the extension: ``call_tool`` polls a handle to its result."""

    identifier = EXTENSION

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=TaskHandle, resolve=self.resolve)]

    async def resolve(self, handle: TaskHandle, ctx: ClaimContext) -> CallToolResult:
        request: Request[Any, Any] = Request(
            method="tasks/get", params=TaskIdParams(task_id=handle.task_id)
        )
        with anyio.fail_after(10):
            while True:
                task = (await ctx.session.send_request(request, Raw)).model_dump(by_alias=True)
                if task["status"] == "completed":
                    return CallToolResult.model_validate(task["result"])
                assert task["status"] == "working", task
                await anyio.sleep(task["pollIntervalMs"] / 1000)


async def test_the_sdks_client_extension_api_resolves_a_task_handle(make_bus: MakeBus) -> None:
    bus = make_bus()
    register(bus, Gate())
    async with bus:
        client = Client(InMemoryTransport(create_mcp_server(bus)), extensions=[TasksClient()])
        async with client:
            await client.list_tools()  # so the client can check the result against its schema
            result = await client.call_tool(
                "submit_task", {"type": "math:double", "input": {"n": 4}}
            )
    assert result.is_error is False
    assert result.structured_content is not None
    assert result.structured_content["result"] == {"value": 8}
    assert result.structured_content["state"] == "completed"


@pytest.mark.parametrize("era", ERAS)
async def test_clients_without_the_extension_get_the_plain_tool(
    make_bus: MakeBus, era: str
) -> None:
    bus = make_bus()
    register(bus, Gate())
    async with bus, connect(create_mcp_server(bus), era, declare=False) as client:
        answer = await submit(client, type="math:double", input={"n": 2})
        with pytest.raises(MCPError) as refused:
            await tasks(client, "tasks/get", task_id_of(answer))
    assert "resultType" not in answer or answer["resultType"] == "complete"
    assert answer["structuredContent"]["type"] == "math:double"
    assert refused.value.error.code == MISSING_CAPABILITY


async def test_a_handshake_era_client_follows_the_plain_answer_with_tasks_get(
    make_bus: MakeBus,
) -> None:
    bus = make_bus()
    register(bus, Gate())
    async with bus, connect(create_mcp_server(bus), "2025-11-25") as client:
        answer = await submit(client, type="math:double", input={"n": 21})
        done = await poll(client, task_id_of(answer), final)
    assert answer["structuredContent"]["state"] in ("queued", "running", "completed")
    assert done["status"] == "completed"
    assert done["result"]["structuredContent"]["result"] == {"value": 42}


@pytest.mark.parametrize("era", ERAS)
async def test_tasks_cancel_cancels_the_taskbus_task(make_bus: MakeBus, era: str) -> None:
    bus = make_bus()
    gate = Gate()
    register(bus, gate)
    async with bus, connect(create_mcp_server(bus), era) as client:
        task_id = task_id_of(await submit(client, type="math:slow"))
        with anyio.fail_after(5):
            await gate.started.wait()
        ack = await tasks(client, "tasks/cancel", task_id)
        cancelled = await poll(client, task_id, final)
    assert ack.get("resultType", "complete") == "complete"
    assert set(ack) - {"resultType", "_meta"} == set()
    assert cancelled["status"] == "cancelled"
    assert cancelled["statusMessage"] == "cancelled by MCP client (tasks/cancel)"
    assert (await bus.get(task_id)).state is TaskState.CANCELLED


@pytest.mark.parametrize("era", ERAS)
async def test_a_failed_task_completes_with_a_tool_error(make_bus: MakeBus, era: str) -> None:
    bus = make_bus()
    register(bus, Gate())
    async with bus, connect(create_mcp_server(bus), era) as client:
        task_id = task_id_of(await submit(client, type="math:broken"))
        failed = await poll(client, task_id, final)
        opaque = await poll(client, task_id_of(await submit(client, type="math:opaque")), final)
    # The spec keeps "failed" for JSON-RPC errors; a tool's own failure is an isError result.
    assert failed["status"] == "completed"
    assert failed["statusMessage"] == "failed: no licence"
    assert failed["result"]["isError"] is True
    text = failed["result"]["content"][0]["text"]
    assert (
        "failed (user-actionable) after 1 attempt(s): no licence; suggested action: buy one" in text
    )
    assert opaque["status"] == "failed"
    assert opaque["error"]["code"] == -32603
    assert "not JSON" in opaque["statusMessage"]


@pytest.mark.parametrize("era", ERAS)
async def test_unknown_and_other_owners_tasks_are_the_same_invalid_params(
    make_bus: MakeBus, era: str
) -> None:
    bus = make_bus()
    register(bus, Gate())
    async with bus:
        theirs = (await bus.submit("math:double", {"n": 1}, owner="someone-else")).id
        async with connect(create_mcp_server(bus), era) as client:
            errors: dict[str, list[str]] = {}
            for method in ("tasks/get", "tasks/cancel", "tasks/update"):
                for task_id in (theirs, "0" * 32):
                    extra: dict[str, Any] = (
                        {"input_responses": {}} if method == "tasks/update" else {}
                    )
                    with pytest.raises(MCPError) as caught:
                        await tasks(client, method, task_id, **extra)
                    assert caught.value.error.code == INVALID_PARAMS
                    message = caught.value.error.message.replace(task_id, "ID")
                    errors.setdefault(method, []).append(message)
    for messages in errors.values():
        assert messages[0] == messages[1] == "no task with id 'ID'"


@pytest.mark.parametrize("era", ERAS)
async def test_tasks_update_is_acknowledged_and_ignored(make_bus: MakeBus, era: str) -> None:
    bus = make_bus()
    register(bus, Gate())
    async with bus, connect(create_mcp_server(bus), era) as client:
        task_id = task_id_of(await submit(client, type="math:double", input={"n": 3}))
        ack = await tasks(
            client, "tasks/update", task_id, input_responses={"never-asked": {"action": "accept"}}
        )
        done = await poll(client, task_id, final)
    assert set(ack) - {"resultType", "_meta"} == set()
    assert done["result"]["structuredContent"]["result"] == {"value": 6}


class Branch(BaseModel):
    name: str
    depth: int = 1


def register_asking(bus: TaskBus) -> None:
    @bus.task("ask:branch")
    async def branch(ctx: TaskContext) -> str:
        choice = await ctx.ask("Which branch?", model=Branch)
        return f"{choice.name}/{choice.depth}"

    @bus.task("ask:word")
    async def word(ctx: TaskContext) -> str:
        return (await ctx.ask("One word?")).upper()


def waiting(task: dict[str, Any]) -> bool:
    return bool(task["status"] == "input_required")


@pytest.mark.parametrize("era", ERAS)
async def test_a_task_waiting_for_input_is_input_required_and_tasks_update_answers_it(
    make_bus: MakeBus, era: str
) -> None:
    bus = make_bus()
    register_asking(bus)
    async with bus, connect(create_mcp_server(bus), era) as client:
        task_id = task_id_of(await submit(client, type="ask:branch"))
        asked = await poll(client, task_id, waiting)
        with pytest.raises(MCPError) as caught:
            await tasks(
                client,
                "tasks/update",
                task_id,
                input_responses={"ask-1": {"action": "accept", "content": {"depth": 2}}},
            )
        assert (await bus.get(task_id)).state is TaskState.WAITING
        ack = await tasks(
            client,
            "tasks/update",
            task_id,
            input_responses={
                "ask-1": {"action": "accept", "content": {"name": "main", "depth": 3}},
                "never-asked": {"action": "accept"},
            },
        )
        done = await poll(client, task_id, final)

        word_id = task_id_of(await submit(client, type="ask:word"))
        word = await poll(client, word_id, waiting)
        await tasks(
            client,
            "tasks/update",
            word_id,
            input_responses={"ask-1": {"action": "accept", "content": {"value": "yes"}}},
        )
        word_done = await poll(client, word_id, final)

        declined_id = task_id_of(await submit(client, type="ask:branch"))
        await poll(client, declined_id, waiting)
        await tasks(
            client, "tasks/update", declined_id, input_responses={"ask-1": {"action": "decline"}}
        )
        declined = await poll(client, declined_id, final)
    assert asked["statusMessage"] == "Which branch?"
    request = asked["inputRequests"]["ask-1"]
    assert request["method"] == "elicitation/create"
    assert request["params"]["mode"] == "form"
    assert request["params"]["message"] == "Which branch?"
    assert request["params"]["requestedSchema"]["required"] == ["name"]
    assert caught.value.error.code == INVALID_PARAMS
    assert "name" in caught.value.error.message
    assert set(ack) - {"resultType", "_meta"} == set()
    assert "inputRequests" not in done
    assert done["result"]["structuredContent"]["result"] == "main/3"
    assert word["inputRequests"]["ask-1"]["params"]["requestedSchema"] == {
        "type": "object",
        "properties": {"value": {"type": "string"}},
        "required": ["value"],
    }
    assert word_done["result"]["structuredContent"]["result"] == "YES"
    assert declined["status"] == "cancelled"
    assert declined["statusMessage"] == "input declined by the MCP client"


async def test_bad_submissions_answer_as_the_plain_tool_does(make_bus: MakeBus) -> None:
    bus = make_bus()
    register(bus, Gate())
    async with bus, connect(create_mcp_server(bus), "2026-07-28") as client:
        unknown = await submit(client, type="math:nope")
        invalid = await submit(client, type="math:double", input={"n": "x"})
        malformed = await submit(client, priority=3)  # no type: the SDK's own validation
        stored = await bus.list()
    for answer in (unknown, invalid, malformed):
        assert answer.get("resultType") != "task"
        assert answer["isError"] is True
    assert "no task type named 'math:nope'" in unknown["content"][0]["text"]
    assert "n" in invalid["content"][0]["text"]
    assert stored == []


async def test_a_hook_that_names_no_owner_refuses_tasks_methods(make_bus: MakeBus) -> None:
    bus = make_bus()
    register(bus, Gate())
    async with bus:
        task_id = (await bus.submit("math:double", {"n": 1}, owner="x")).id
        server = create_mcp_server(bus, owner=lambda ctx: None)
        async with connect(server, "2026-07-28") as client:
            refused = await submit(client, type="math:double", input={"n": 1})
            with pytest.raises(MCPError) as caught:
                await tasks(client, "tasks/get", task_id)
    assert refused["isError"] is True
    assert "no owner" in refused["content"][0]["text"]
    assert caught.value.error.code == -32600
    assert "no owner" in caught.value.error.message


def test_the_poll_interval_is_checked() -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        create_mcp_server(TaskBus(), poll_interval=0)


# -- over stdio and streamable HTTP, in a server process ------------------------------


def server_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def stdio_client(store: str, era: str) -> Client:
    params = StdioServerParameters(
        command=sys.executable, args=[str(SERVER), "--store", store], env=server_env()
    )
    mode = "legacy" if era == "2025-11-25" else era
    return Client(params, mode=mode, extensions=[advertise(EXTENSION)])


@asynccontextmanager
async def http_server(store: str) -> AsyncIterator[str]:
    """Run the server process on a loopback port; its URL."""
    async with await anyio.open_process(
        [sys.executable, str(SERVER), "--http", "--store", store],
        env=server_env(),
        stderr=subprocess.DEVNULL,
    ) as process:
        assert process.stdout is not None
        try:
            with anyio.fail_after(30):
                line = b""
                while not line.endswith(b"\n"):
                    line += await process.stdout.receive(1)
            yield f"http://127.0.0.1:{int(line)}/mcp"
        finally:
            process.terminate()
            with anyio.fail_after(10):
                await process.wait()


def http_client(url: str, era: str) -> Client:
    mode = "legacy" if era == "2025-11-25" else era
    return Client(url, mode=mode, extensions=[advertise(EXTENSION)])


async def exercise(client: Client, era: str, release: Path) -> str:
    """Plain tools, a task handle polled to completion with progress, cancel, failure.

    Answers the id of a completed task, for reading back from a new connection.
    """
    assert client.protocol_version == era
    plain = await client.call_tool("list_task_types", {})
    assert {t["type"] for t in plain.structured_content["types"]} == {
        "math:double",
        "math:gated",
        "math:broken",
    }
    gated = await submit(client, type="math:gated", input={"path": str(release)})
    if era == "2026-07-28":
        assert (gated["resultType"], gated["status"]) == ("task", "working")
    else:
        assert gated["structuredContent"]["type"] == "math:gated"
    gated_id = task_id_of(gated)
    working = await poll(client, gated_id, lambda task: "40%" in task.get("statusMessage", ""))
    assert working["status"] == "working"
    await anyio.Path(release).touch()
    done = await poll(client, gated_id, final)
    assert (done["status"], done["result"]["structuredContent"]["result"]) == (
        "completed",
        "released",
    )

    stuck = task_id_of(await submit(client, type="math:gated", input={"path": "/nonexistent"}))
    await poll(client, stuck, lambda task: "40%" in task.get("statusMessage", ""))
    await tasks(client, "tasks/cancel", stuck)
    assert (await poll(client, stuck, final))["status"] == "cancelled"

    broken = await poll(client, task_id_of(await submit(client, type="math:broken")), final)
    assert (broken["status"], broken["result"]["isError"]) == ("completed", True)
    return gated_id


@pytest.mark.parametrize("era", ERAS)
async def test_over_stdio(era: str, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'tasks.db'}"
    async with stdio_client(store, era) as client:
        task_id = await exercise(client, era, tmp_path / "release")
    # A new server process on the same store: the local owner reads its task back.
    async with stdio_client(store, era) as client:
        again = await tasks(client, "tasks/get", task_id)
    assert (again["status"], again["result"]["structuredContent"]["result"]) == (
        "completed",
        "released",
    )


# The SDK's HTTP client (httpx2) leaves a response stream to the garbage collector
# when a handshake-era connection closes on trio; trio warns about it. Not ours.
@pytest.mark.filterwarnings(
    r"ignore:Async generator 'http(x|core)2\.[\w.]+' was garbage:ResourceWarning"
)
@pytest.mark.parametrize("era", ERAS)
async def test_over_streamable_http_on_loopback(era: str, tmp_path: Path) -> None:
    async with http_server("memory") as url:
        async with http_client(url, era) as client:
            task_id = await exercise(client, era, tmp_path / "release")
        async with http_client(url, era) as client:  # a new connection, the same owner
            again = await tasks(client, "tasks/get", task_id)
    assert (again["status"], again["result"]["structuredContent"]["result"]) == (
        "completed",
        "released",
    )


# -- the MCP Inspector's CLI ---------------------------------------------------------


@pytest.fixture(scope="session")
def inspector() -> Path:
    """The Inspector CLI, installed once into .venv/npm (the npm registry) if missing."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    assert node and npm, "the Inspector test needs Node.js (node and npm on PATH)"
    prefix = ROOT / ".venv" / "npm"
    binary = prefix / "node_modules" / ".bin" / "mcp-inspector"
    marker = prefix / f".inspector-{INSPECTOR_VERSION}"
    if not marker.exists():
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
             "--loglevel=error", f"@modelcontextprotocol/inspector@{INSPECTOR_VERSION}"],
            check=True,
            timeout=600,
        )  # fmt: skip
        marker.touch()
    assert binary.exists()
    return binary


def run_inspector(inspector: Path, *arguments: str) -> dict[str, Any]:
    """One Inspector CLI call against a fresh stdio server; its JSON result."""
    command = [
        str(inspector), "--cli", "--format", "json", "-q",
        "-e", f"PYTHONPATH={server_env()['PYTHONPATH']}",
        *arguments, sys.executable, str(SERVER), "--store", "memory",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    assert "result" in answer, answer
    result: dict[str, Any] = answer["result"]
    return result


SUBMIT = ["--method", "tools/call", "--tool-name", "submit_task", "--tool-args-json",
          json.dumps({"type": "math:double", "input": {"n": 21}})]  # fmt: skip


# The first one installs the Inspector (about 20 s from the npm registry).
@pytest.mark.timeout(300)
def test_the_inspector_cli_lists_and_calls_the_plain_tools(inspector: Path) -> None:
    listed = run_inspector(inspector, "--method", "tools/list")
    called = run_inspector(inspector, "--protocol-era", "legacy", *SUBMIT)
    assert {tool["name"] for tool in listed["tools"]} >= {"submit_task", "task_status"}
    assert called["structuredContent"]["type"] == "math:double"
    assert called["structuredContent"]["result"] is None  # the plain answer: a status


@pytest.mark.timeout(300)
def test_the_inspector_cli_follows_a_task_handle_to_the_result(inspector: Path) -> None:
    # At 2026-07-28 the Inspector declares the tasks extension and polls tasks/get.
    called = run_inspector(inspector, "--protocol-era", "modern", *SUBMIT)
    assert called["isError"] is False
    assert called["structuredContent"]["state"] == "completed"
    assert called["structuredContent"]["result"] == {"value": 42}
