"""An MCP server that runs shell commands as taskbus tasks (type ``shell:run``).

**It runs any command it is sent, as you.** Serve it over stdio to a client you
trust (your own MCP host), never on a network.

Each command runs under ``/bin/sh -c`` in a process group of its own
(``start_new_session=True``). Every line it prints becomes the task's progress
message (debounced by the bus), and the result is the exit code and the last
lines of output. Cancelling the task, or its timeout, kills the whole group:
SIGTERM, then SIGKILL to whatever is still alive after a short grace. The
server keeps the groups it started (`CommandGroups`) and outlives none of them:
when its client goes away (stdin closed) or it gets SIGTERM, SIGHUP or SIGINT,
it cancels every running command, kills what is left, and only then exits
(after a signal, by that signal). Only a SIGKILL of the server itself can leave
a command behind. The tools come from
`taskbus.integrations.mcp.create_mcp_server` (``pip install 'taskbus[mcp]'``).

With ``--demo`` it talks to itself through the MCP SDK's in-memory client
instead: it lists the task types, runs an ``echo`` and a ``printf`` loop
(printing the progress forwarded while it waits), starts ``sleep 30``, shows
that a second connection reads it back (tasks belong to their owner, here the
one local owner, not to a connection), cancels it, prints each status and the
task list, and exits 0 in about a second.

Run: ``.venv/bin/python examples/mcp_command_runner.py --demo``
(without ``--demo`` it serves MCP on stdin/stdout).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from mcp import Client
from mcp.server.mcpserver import MCPServer
from pydantic import BaseModel, Field

from taskbus import RetryPolicy, TaskBus, TaskContext, TaskDefinition, TaskState
from taskbus.integrations.mcp import create_mcp_server

MAX_LINE = 4096  # bytes; a longer run without a newline is cut into lines this long
GRACE = 2.0  # seconds between SIGTERM and SIGKILL
SIGNAL_GRACE = 0.5  # the same, when the server itself is being stopped by a signal
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

logger = logging.getLogger("mcp_command_runner")


class ShellCommand(BaseModel):
    """Input of ``shell:run``."""

    command: str = Field(min_length=1, description="A command line for /bin/sh -c.")
    tail: int = Field(default=20, ge=1, le=1000, description="Output lines kept in the result.")


class ShellResult(BaseModel):
    """Output of ``shell:run``."""

    exit_code: int = Field(description="The shell's exit status (-N: killed by signal N).")
    output_tail: list[str] = Field(description="The last lines of stdout and stderr.")
    lines: int = Field(description="Lines printed in all.")


class CommandGroups:
    """The process groups of the commands running now (each command leads its own)."""

    def __init__(self) -> None:
        self._pgids: set[int] = set()

    def __len__(self) -> int:
        return len(self._pgids)

    @contextmanager
    def hold(self, pgid: int) -> Iterator[None]:
        """Keep `pgid` while the block runs (the command is being run or killed)."""
        self._pgids.add(pgid)
        try:
            yield
        finally:
            self._pgids.discard(pgid)

    def kill_all(self) -> None:
        """SIGKILL every group still held: the last resort when stopping."""
        for pgid in list(self._pgids):
            signal_group(pgid, signal.SIGKILL)


def register_shell_task(
    bus: TaskBus,
    *,
    timeout: float = 60.0,
    grace: float = GRACE,
    groups: CommandGroups | None = None,
) -> TaskDefinition[ShellCommand, ShellResult]:
    """Register ``shell:run`` on `bus`: `timeout` seconds per command, never retried.

    `groups` collects the process groups of running commands (see `stop_commands`).
    """
    held = groups if groups is not None else CommandGroups()

    @bus.task(
        "shell:run",
        timeout=timeout,
        retry=RetryPolicy.never(),  # a command with side effects is not run twice
        description="Run a shell command; its output lines are the progress messages.",
    )
    async def run_command(ctx: TaskContext, params: ShellCommand) -> ShellResult:
        return await run_shell(ctx, params, grace=grace, groups=held)

    return run_command


async def run_shell(
    ctx: TaskContext, params: ShellCommand, *, grace: float, groups: CommandGroups | None = None
) -> ShellResult:
    """Run one command, reporting each output line; kill its group if we stop early."""
    process = await anyio.open_process(
        ["/bin/sh", "-c", params.command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so one signal reaches all of it
    )
    with (groups if groups is not None else CommandGroups()).hold(process.pid):
        return await _follow(ctx, params, process, grace)


async def _follow(
    ctx: TaskContext, params: ShellCommand, process: Process, grace: float
) -> ShellResult:
    """Read the command's output to its end, or kill its group if the task stops first."""
    tail: deque[str] = deque(maxlen=params.tail)
    count = 0
    finished = False
    try:
        assert process.stdout is not None
        pending = b""
        async for chunk in process.stdout:
            lines, pending = split_lines(pending + chunk)
            for line in lines:
                count += 1
                tail.append(line)
                await ctx.progress(message=line[:200])
        if pending:
            count += 1
            tail.append(pending.decode(errors="replace"))
        exit_code = await process.wait()
        finished = True
    finally:
        with anyio.CancelScope(shield=True):  # cancelled or timed out: clean up anyway
            # Also when the shell exited but left children behind (`cmd &`): no
            # process of a command outlives its task.
            if not finished or group_alive(process.pid):
                await kill_group(process, grace)
            await process.aclose()
    return ShellResult(exit_code=exit_code, output_tail=list(tail), lines=count)


def split_lines(data: bytes) -> tuple[list[str], bytes]:
    """Complete lines of `data` (decoded) and the incomplete rest."""
    *complete, rest = data.split(b"\n")
    while len(rest) > MAX_LINE:
        complete.append(rest[:MAX_LINE])
        rest = rest[MAX_LINE:]
    return [raw.decode(errors="replace").rstrip("\r") for raw in complete], rest


async def kill_group(process: Process, grace: float) -> None:
    """SIGTERM the process's group, then SIGKILL it if anything outlives `grace`."""
    pgid = process.pid  # with start_new_session the shell leads a group of its own
    signal_group(pgid, signal.SIGTERM)
    with anyio.move_on_after(grace):
        await process.wait()
        while group_alive(pgid):  # noqa: ASYNC110 - nothing signals that a group is gone
            await anyio.sleep(0.02)
    if group_alive(pgid):
        signal_group(pgid, signal.SIGKILL)
    await process.wait()


def signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass  # the group is gone already


def group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process is still in group `pgid`.

    ``kill(-pgid, 0)`` alone is not enough: children orphaned by the shell are
    reparented to init, and an init that does not reap (common in containers)
    leaves them as zombies, which still count as members of the group. Where
    /proc exists, zombies are skipped; elsewhere a non-empty group counts as alive.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it exited while we looked
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


# -- the MCP server, and the demo -----------------------------------------------


def build(groups: CommandGroups | None = None) -> tuple[TaskBus, MCPServer[Any]]:
    bus = TaskBus(workers=4, shutdown_grace=3.0)
    register_shell_task(bus, timeout=60.0, grace=GRACE, groups=groups)
    return bus, create_mcp_server(bus, name="command-runner", types=["shell:"])


async def stop_commands(
    bus: TaskBus, groups: CommandGroups, reason: str, *, grace: float = GRACE
) -> None:
    """Cancel every running command (each kills its group); after `grace` seconds,
    SIGKILL every group still there."""
    with anyio.move_on_after(grace):
        running = await bus.list(state=TaskState.RUNNING, type_prefix="shell:", limit=1000)
        async with anyio.create_task_group() as tg:
            for snapshot in running:
                tg.start_soon(lambda task_id: bus.cancel(task_id, reason=reason), snapshot.id)
    groups.kill_all()


async def serve() -> None:
    """Serve MCP on stdin/stdout; no command outlives the server.

    When the client closes stdin, every running command is cancelled before the
    bus stops. On SIGTERM, SIGHUP or SIGINT the same happens with a shorter grace,
    then the process ends by that signal (the SDK's stdin reader, blocked in a
    thread, cannot be cancelled, so the server does not wait for it).
    """
    groups = CommandGroups()
    bus, server = build(groups)
    async with bus, anyio.create_task_group() as tg:
        tg.start_soon(_stop_on_signal, bus, groups)
        await server.run_stdio_async()  # returns when the client closes stdin
        logger.info("MCP client went away: stopping %d command(s)", len(groups))
        await stop_commands(bus, groups, "the MCP client went away")
        tg.cancel_scope.cancel()


async def _stop_on_signal(bus: TaskBus, groups: CommandGroups) -> None:
    with anyio.open_signal_receiver(*STOP_SIGNALS) as signals:
        signum = await anext(signals)
    name = signal.Signals(signum).name
    logger.info("%s: stopping %d command(s)", name, len(groups))
    with anyio.CancelScope(shield=True):
        await stop_commands(bus, groups, f"the MCP server got {name}", grace=SIGNAL_GRACE)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


async def call(client: Client, tool: str, **arguments: Any) -> Any:
    """Call a tool; its structured answer, or its error text."""
    result = await client.call_tool(tool, arguments)
    if result.is_error:
        return result.content[0].text if result.content else "error"  # type: ignore[union-attr]
    return result.structured_content


async def on_progress(progress: float, total: float | None, message: str | None) -> None:
    print(f"  progress: {message}")


async def demo() -> None:
    bus, server = build()
    async with bus, Client(server, mode="legacy") as client:
        types = await call(client, "list_task_types")
        print("task types:", ", ".join(item["type"] for item in types["types"]))

        echo = await call(client, "submit_task", type="shell:run", input={"command": "echo hello"})
        print(f"submitted echo: {echo['state']}")
        answer = await call(client, "task_result", task_id=echo["task_id"], wait_seconds=5)
        result = answer["result"]
        print(f"echo: {answer['state']}, exit {result['exit_code']}: {result['output_tail']}")

        loop = "for i in 1 2 3; do printf 'step %s\\n' $i; sleep 0.1; done"
        submitted = await call(client, "submit_task", type="shell:run", input={"command": loop})
        final = await client.call_tool(
            "task_result",
            {"task_id": submitted["task_id"], "wait_seconds": 5},
            progress_callback=on_progress,
        )
        result = (final.structured_content or {})["result"]
        print(
            f"printf: exit {result['exit_code']}, {result['lines']} lines: {result['output_tail']}"
        )

        sleeper = await call(client, "submit_task", type="shell:run", input={"command": "sleep 30"})
        answer = await call(client, "task_result", task_id=sleeper["task_id"], wait_seconds=0.3)
        print(f"sleep 30 after 0.3 s: done={answer['done']}, state={answer['state']}")
        async with Client(server, mode="legacy") as other:
            seen = await call(other, "task_status", task_id=sleeper["task_id"])
            print(f"a second connection reads it back: state={seen['state']}")
        started = time.monotonic()
        cancelled = await call(client, "cancel_task", task_id=sleeper["task_id"], reason="demo")
        took = time.monotonic() - started
        print(f"cancel: cancelled={cancelled['cancelled']}, state={cancelled['state']}")
        print(f"SIGTERM was enough, no SIGKILL after the grace: {took < GRACE}")

        listed = await call(client, "list_tasks")
        print("your tasks:", ", ".join(task["state"] for task in listed["tasks"]))


def main() -> None:
    # Configure logging first: the MCP SDK's server otherwise sets up INFO
    # logging to stderr on the root logger when it is created.
    logging.basicConfig(level=logging.WARNING)
    anyio.run(demo if "--demo" in sys.argv[1:] else serve)


if __name__ == "__main__":
    main()
