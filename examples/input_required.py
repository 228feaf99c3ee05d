"""Input required: a handler asks its caller with ``await ctx.ask(...)``.

A deploy task asks which branch to deploy. While it waits it holds no worker
(with one worker, another task runs meanwhile), its question is stored with
it (a SQLite file here), and the bus can even stop: a new bus on the same
file shows the question, refuses an answer that does not fit, takes the right
one, and the handler runs again from the top, where ``ctx.ask`` returns the
answer at once. Prints each step.

Run: ``.venv/bin/python examples/input_required.py``
"""

import tempfile
from pathlib import Path

import anyio
from pydantic import BaseModel

from taskbus import InvalidAnswer, TaskBus, TaskContext, TaskInputRequired


class Choice(BaseModel):
    branch: str
    dry_run: bool = False


def make_bus(path: Path) -> TaskBus:
    bus = TaskBus(store=f"sqlite:///{path}", workers=1)

    @bus.task("deploy:web")
    async def deploy(ctx: TaskContext, service: str) -> str:
        # Runs again from the top once answered: keep the steps before an ask idempotent.
        choice = await ctx.ask(f"Which branch of {service}?", model=Choice, timeout=3600)
        return f"deployed {service}@{choice.branch}" + (" (dry run)" if choice.dry_run else "")

    @bus.task("ping")
    async def ping() -> str:
        return "pong"

    return bus


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "jobs.db"
        first = make_bus(path)
        asked = anyio.Event()
        first.on(TaskInputRequired, lambda event: asked.set())
        async with first:
            handle = await first.submit("deploy:web", "shop")
            with anyio.fail_after(5):
                await asked.wait()
            snap = await first.get(handle.id)
            print(f"{snap.state.value}: {snap.question.prompt if snap.question else '?'}")
            other = await first.submit("ping")
            print(f"meanwhile, with one worker: {await other.result(timeout=5)}")
        print("the bus stopped while the task waited")

        second = make_bus(path)
        async with second:
            snap = await second.get(handle.id)
            print(f"after a restart it is still {snap.state.value}")
            try:
                await second.respond(handle.id, {"dry_run": True})
            except InvalidAnswer as exc:
                print(f"refused: {exc.errors[0]['loc'][0]} {exc.errors[0]['msg'].lower()}")
            await second.respond(handle.id, {"branch": "main"})
            print(await second.result(handle.id, timeout=5))


if __name__ == "__main__":
    anyio.run(main)
