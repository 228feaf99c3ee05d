"""Wrapping slow handlers: an IPC-style router answers fast calls directly.

Each request goes through `bus.background(...)`: a call that finishes within
`inline_for` answers with its result; a slow one answers ``queued`` with a task
id at once and reports progress through events, the way a desktop backend, a
REST endpoint or an MCP tool would. Prints each answer and the slow job's
progress and result.

Run: ``.venv/bin/python examples/ipc_router.py``
"""

from typing import Any

import anyio

from taskbus import Queued, TaskBus, TaskCompleted, TaskContext, TaskProgress

bus = TaskBus(workers=4)


@bus.task("repo:status", description="Quick: read the working tree state")
async def repo_status(ctx: TaskContext, path: str) -> dict[str, Any]:
    return {"path": path, "dirty": False}


@bus.task("repo:clone", description="Slow: clone a repository")
async def repo_clone(ctx: TaskContext, url: str) -> str:
    for percent in (20, 40, 60, 80, 100):
        await anyio.sleep(0.05)
        await ctx.progress(percent, f"receiving objects {percent}%")
    return f"cloned {url}"


ROUTES = {
    "status": bus.background("repo:status", inline_for=0.5),
    "clone": bus.background("repo:clone", inline_for=0.05),
}


async def handle_request(method: str, payload: str) -> dict[str, Any]:
    """What an IPC or HTTP handler would do: route, answer in milliseconds."""
    answer = await ROUTES[method](payload)
    if isinstance(answer, Queued):
        return {"status": "queued", "task_id": answer.task_id}
    return {"status": "done", "result": answer}


async def main() -> None:
    done = anyio.Event()
    bus.on(TaskProgress, lambda e: print(f"  progress {e.progress:.0f}% {e.message}"))

    def on_completed(event: TaskCompleted) -> None:
        if event.task_type == "repo:clone":
            print(f"  completed: {event.result}")
            done.set()

    bus.on(TaskCompleted, on_completed)
    async with bus:
        print("status ->", await handle_request("status", "/src/app"))
        reply = await handle_request("clone", "https://example.com/app.git")
        print("clone ->", reply["status"])
        await done.wait()
        print("clone result:", await bus.result(reply["task_id"]))


if __name__ == "__main__":
    anyio.run(main)
