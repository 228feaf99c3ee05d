"""Dead letters and re-runs: list the tasks that failed, fix the cause, run them again.

An invoice sender fails while its mail server is down: one task uses up its two
attempts on a retryable error, another fails at once on a fatal one. Both are
dead letters (`list(dead_letter=True)`), each with its reason. Once the server
is back, `retry(id)` runs each again as a new task with the same input, owner
and metadata, naming the old one in ``metadata["retry_of"]``; the old tasks
stay as they were. A second bus on the same SQLite file (another process, as
far as the store can tell) does the listing and the retrying. Retrying a
completed task is refused with `TaskNotRetryable`.

Run: ``.venv/bin/python examples/dead_letters.py``
"""

import tempfile
from pathlib import Path

import anyio
from pydantic import BaseModel

from taskbus import (
    FatalError,
    RetryableError,
    RetryPolicy,
    TaskBus,
    TaskContext,
    TaskNotRetryable,
)

#: The operator fixes both causes below (the mail server is back, Bob's address is on file).
fixed = False


class Invoice(BaseModel):
    number: int
    email: str


def register(bus: TaskBus) -> None:
    @bus.task("billing:send-invoice", retry=RetryPolicy(max_attempts=2, base_delay=0.05))
    async def send(ctx: TaskContext, invoice: Invoice) -> str:
        if not fixed and "@" not in invoice.email:
            raise FatalError(f"no address for invoice {invoice.number}")
        if not fixed:
            raise RetryableError("mail server unreachable")
        return f"invoice {invoice.number} sent to {invoice.email}"


async def main() -> None:
    global fixed
    with tempfile.TemporaryDirectory() as folder:
        store = f"sqlite:///{Path(folder) / 'billing.db'}"
        worker = TaskBus(store=store, workers=2)
        operator = TaskBus(store=store, workers=0)  # lists and retries; runs nothing
        register(worker)
        register(operator)
        async with worker, operator:
            first = await worker.submit(
                "billing:send-invoice",
                {"number": 1, "email": "ann@example.com"},
                owner="ann",
                metadata={"batch": "march"},
            )
            second = await worker.submit(
                "billing:send-invoice", {"number": 2, "email": "bob"}, owner="bob"
            )
            for handle in (first, second):
                await worker.wait(handle.id, timeout=10)

            dead = await operator.list(dead_letter=True)
            print(f"dead letters: {len(dead)}")
            for snap in dead:
                assert snap.error is not None
                print(
                    f"  invoice {snap.input['number']}: {snap.dead_letter} after "
                    f"{snap.attempts}/{snap.max_attempts} attempt(s): {snap.error.message}"
                )

            fixed = True  # the causes are fixed: run them again
            for snap in dead:
                rerun = await operator.retry(snap.id)
                print(f"  retried: {await rerun.result(timeout=10)}")
                again = await operator.get(rerun.id)
                print(f"  re-run names the old task: {again.retry_of == snap.id}")
                print(f"  owner {again.owner}, metadata keys {sorted(again.metadata)}")

            old = await operator.get(first.id)
            print(f"the old task stays {old.state.value}")
            try:
                await operator.retry(rerun.id)
            except TaskNotRetryable as exc:
                print(f"refused: {exc.state} tasks are not retried")


if __name__ == "__main__":
    anyio.run(main)
