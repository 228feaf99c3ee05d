"""Rate limits and keyed concurrency: `rate=`, `rate_key=`, `concurrency_key=`.

Clones run one at a time per user (``concurrency_key``), while another user's
clone goes on; API calls are limited to 2 a second per tenant (``rate`` with
``rate_key="owner"``), while another tenant's call goes on. A task held back
waits without holding a worker, and its snapshot says why (``waiting_for``).
The same options hold across processes on a SQLite or Redis store.

Run: ``.venv/bin/python examples/rate_limits.py``
"""

import time
from collections import Counter

import anyio
from pydantic import BaseModel

from taskbus import TaskBus, TaskContext, TaskSnapshot

bus = TaskBus(workers=8)
running: Counter[str] = Counter()
peak: Counter[str] = Counter()
release_first = anyio.Event()
started: dict[str, float] = {}


class Clone(BaseModel):
    user: str
    repo: str


@bus.task("repo:clone", concurrency_key=lambda clone: clone.user, key_concurrency=1)
async def clone_repo(ctx: TaskContext, clone: Clone) -> str:
    running[clone.user] += 1
    peak[clone.user] = max(peak[clone.user], running[clone.user])
    if clone.repo == "big":
        await release_first.wait()
    running[clone.user] -= 1
    return f"{clone.user}/{clone.repo}"


@bus.task("api:call", rate="2/second", rate_key="owner")
async def call_api(ctx: TaskContext) -> None:
    started[ctx.task_id] = time.monotonic()


async def waiting(task_id: str) -> TaskSnapshot:
    """The task's snapshot once it says why it waits."""
    with anyio.fail_after(5):
        while True:
            snapshot = await bus.get(task_id)
            if snapshot.waiting_for is not None:
                return snapshot
            await anyio.sleep(0.01)


async def main() -> None:
    async with bus:
        first = await clone_repo.submit(Clone(user="alice", repo="big"))
        second = await clone_repo.submit(Clone(user="alice", repo="small"))
        other = await clone_repo.submit(Clone(user="bob", repo="docs"))
        print(f"bob's clone ran while alice's first ran: {await other.result(timeout=5)}")
        print(f"alice's second clone waits for: {(await bus.get(second.id)).waiting_for}")
        release_first.set()
        await first.result(timeout=5)
        await second.result(timeout=5)
        print(f"at most one clone per user at once: {dict(sorted(peak.items()))}")

        acme = [await bus.submit("api:call", owner="acme") for _ in range(3)]
        globex = await bus.submit("api:call", owner="globex")
        await globex.result(timeout=5)
        late = [h for h in acme if h.id not in started]
        print(f"globex's call was not held up; acme calls waiting: {len(late)}")
        print(f"acme's third call waits for: {(await waiting(late[0].id)).waiting_for}")
        for handle in acme:
            await handle.result(timeout=5)
        gap = started[late[0].id] - min(started[h.id] for h in acme)
        print(f"acme's third call started a window after its first: {gap >= 0.9}")


if __name__ == "__main__":
    anyio.run(main)
