"""Failures: retries with back-off, timeouts, and errors a person must act on.

Shows `RetryableError` with a `RetryPolicy` (fails twice, then succeeds), a
`timeout` that is retried once and then fails, a `UserActionableError` with a
`suggested_action` (never retried), an unknown exception (fatal by default),
and catching `TaskFailedError` around `handle.result()`. Prints each retry as
it is announced by a task-retrying event, then one line per outcome.

Run: ``.venv/bin/python examples/retries_and_timeouts.py``
"""

from typing import Any

import anyio

from taskbus import (
    RetryableError,
    RetryPolicy,
    TaskBus,
    TaskContext,
    TaskFailedError,
    TaskHandle,
    TaskRetrying,
    UserActionableError,
)

bus = TaskBus()
QUICK = RetryPolicy(max_attempts=3, base_delay=0.1, multiplier=2.0, jitter=0.0)


@bus.task("net:fetch", retry=QUICK)
async def fetch(ctx: TaskContext, url: str) -> str:
    if ctx.attempt < 3:
        raise RetryableError(f"connection reset (attempt {ctx.attempt})")
    return f"200 OK from {url} on attempt {ctx.attempt}"


@bus.task("net:slow", timeout=0.2, retry=QUICK.model_copy(update={"max_attempts": 2}))
async def slow(ctx: TaskContext) -> None:
    await anyio.sleep(5)  # always overruns its 0.2 s timeout


@bus.task("net:upload")
async def upload(ctx: TaskContext, path: str) -> None:
    raise UserActionableError(
        f"not allowed to upload {path}: the token has expired",
        suggested_action="run `app login`, then try again",
    )


@bus.task("net:parse")
async def parse(ctx: TaskContext, text: str) -> int:
    return int(text)  # ValueError: not a TaskError, classified fatal, not retried


def on_retry(event: TaskRetrying) -> None:
    print(
        f"  retrying {event.task_type}: attempt {event.attempt} failed ({event.error}), "
        f"next in {event.delay:.2f}s"
    )


async def main() -> None:
    bus.on(TaskRetrying, on_retry)
    async with bus:
        handles: list[TaskHandle[Any]] = [
            await fetch.submit("https://example.org"),
            await slow.submit(),
            await upload.submit("report.pdf"),
            await parse.submit("forty-two"),
        ]
        for handle in handles:
            try:
                print(f"{handle.type}: completed: {await handle.result(timeout=10)}")
            except TaskFailedError as exc:
                snap = exc.snapshot
                kind = exc.error_type.value
                if kind == "retryable":  # it will not be retried again: say why not
                    kind = "retryable, but no attempts left"
                print(
                    f"{handle.type}: failed after {snap.attempts} attempt(s), "
                    f"{kind}: {snap.error.message if snap.error else '?'}"
                )
                if exc.suggested_action:
                    print(f"  suggested action: {exc.suggested_action}")


if __name__ == "__main__":
    anyio.run(main)
