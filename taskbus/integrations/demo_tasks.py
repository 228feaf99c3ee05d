"""The task types `taskbus demo` runs, kept apart so other surfaces can reuse them.

`register_demo_tasks(bus)` registers, under the ``demo:`` namespace:

- ``demo:clone-repo``: async, a fake repository clone reporting objects received;
- ``demo:flaky``: fails with `RetryableError` on its first attempts, then succeeds;
- ``demo:slow-timeout``: overruns its 1 s timeout and is never retried;
- ``demo:long-job``: reports progress in a loop until it is cancelled (or done);
- ``demo:crunch``: CPU-bound, in a worker process, reporting progress and checking
  for cancellation through its `ProcessContext`;
- ``demo:deploy``: asks which branch to deploy (``ctx.ask``) and waits, holding no
  worker, until someone answers (``taskbus respond``, the dashboard, HTTP).

The handlers sleep for small amounts only, so a whole demo takes seconds.
Their input models refuse unknown keys (a misspelt option is an error, not a
silent default), and their docstrings are plain text: pydantic makes them the
descriptions of the JSON schemas that clients (MCP, HTTP) read.
"""

from __future__ import annotations

import anyio
from pydantic import BaseModel, ConfigDict, Field

from taskbus import ProcessContext, RetryableError, RetryPolicy, TaskBus, TaskContext

__all__ = [
    "CloneParams",
    "CloneResult",
    "CrunchParams",
    "DemoInput",
    "DeployChoice",
    "DeployParams",
    "FlakyParams",
    "LongJobParams",
    "SlowParams",
    "clone_repo",
    "crunch",
    "deploy",
    "flaky",
    "long_job",
    "register_demo_tasks",
    "slow_timeout",
]

NAMESPACE = "demo"


class DemoInput(BaseModel):
    """Input of a demo task type."""

    model_config = ConfigDict(extra="forbid")


class CloneParams(DemoInput):
    """Input of demo:clone-repo."""

    repo: str = Field(description="Repository to pretend to clone, as owner/name.")
    objects: int = Field(default=120, ge=1, le=100_000, description="Objects to receive.")
    batch: int = Field(default=8, ge=1, description="Objects received per step.")
    step_delay: float = Field(default=0.05, ge=0, le=1, description="Seconds per step.")


class CloneResult(BaseModel):
    """Output of demo:clone-repo."""

    repo: str
    objects: int
    path: str


class FlakyParams(DemoInput):
    """Input of demo:flaky."""

    failures: int = Field(default=2, ge=0, description="Attempts that fail before one succeeds.")


class SlowParams(DemoInput):
    """Input of demo:slow-timeout."""

    seconds: float = Field(default=3.0, ge=0, le=60, description="How long it would take.")


class LongJobParams(DemoInput):
    """Input of demo:long-job."""

    steps: int = Field(default=50, ge=1, le=10_000, description="Steps to run.")
    step_delay: float = Field(default=0.06, ge=0, le=1, description="Seconds per step.")


class CrunchParams(DemoInput):
    """Input of demo:crunch: count the primes below limit."""

    limit: int = Field(default=60_000, ge=2, le=10_000_000, description="Count primes below this.")


async def clone_repo(ctx: TaskContext, params: CloneParams) -> CloneResult:
    """Pretend to clone a repository, reporting objects received."""
    total = params.objects
    await ctx.progress(0, f"connecting to {params.repo}", current=0, total=total)
    received = 0
    while received < total:
        await anyio.sleep(params.step_delay)
        received = min(received + params.batch, total)
        await ctx.progress(
            current=received, total=total, message=f"receiving objects {received}/{total}"
        )
    await ctx.progress(100, "checking out files", current=total, total=total)
    name = params.repo.rsplit("/", 1)[-1]
    return CloneResult(repo=params.repo, objects=total, path=f"./{name}")


async def flaky(ctx: TaskContext, params: FlakyParams) -> str:
    """Fail with a retryable error on the first `failures` attempts, then succeed."""
    await ctx.progress(10, f"calling a flaky service (attempt {ctx.attempt})")
    await anyio.sleep(0.1)
    if ctx.attempt <= params.failures:
        raise RetryableError(f"service unavailable on attempt {ctx.attempt}")
    await ctx.progress(100, "service answered")
    return f"succeeded on attempt {ctx.attempt}"


async def slow_timeout(ctx: TaskContext, params: SlowParams) -> None:
    """Take longer than the type's timeout allows; the runtime stops it."""
    steps = max(int(params.seconds / 0.1), 1)
    for step in range(1, steps + 1):
        await anyio.sleep(params.seconds / steps)
        await ctx.progress(100.0 * step / steps, f"waiting on a slow upstream ({step}/{steps})")


async def long_job(ctx: TaskContext, params: LongJobParams) -> int:
    """Report progress step by step; meant to be cancelled half-way."""
    for step in range(1, params.steps + 1):
        await anyio.sleep(params.step_delay)
        await ctx.progress(
            current=step, total=params.steps, message=f"processing batch {step}/{params.steps}"
        )
    return params.steps


class DeployParams(DemoInput):
    """Input of demo:deploy."""

    service: str = Field(default="web", description="The service to deploy.")


class DeployChoice(BaseModel):
    """The answer demo:deploy asks for."""

    model_config = ConfigDict(extra="forbid")

    branch: str = Field(min_length=1, description="The branch to deploy.")
    dry_run: bool = Field(default=False, description="Only say what would happen.")


async def deploy(ctx: TaskContext, params: DeployParams) -> str:
    """Ask which branch to deploy, then deploy it (simulated)."""
    await ctx.progress(10, "looking up branches")
    choice = await ctx.ask(f"Which branch of {params.service} to deploy?", model=DeployChoice)
    for percent in (40, 70, 100):
        await anyio.sleep(0.02)
        await ctx.progress(percent, f"deploying {choice.branch}")
    verb = "would deploy" if choice.dry_run else "deployed"
    return f"{verb} {params.service}@{choice.branch}"


#: Numbers tested between two progress reports (and cancellation checks) of crunch.
_CRUNCH_CHUNK = 5_000


def crunch(ctx: ProcessContext, params: CrunchParams) -> int:
    """Count the primes below `limit` by trial division (CPU-bound, in a process)."""
    count = 0
    for n in range(2, params.limit):
        if n % _CRUNCH_CHUNK == 0:
            ctx.raise_if_cancelled()
            ctx.progress(current=n, total=params.limit, message=f"{count} primes below {n:,}")
        divisor = 2
        while divisor * divisor <= n:
            if n % divisor == 0:
                break
            divisor += 1
        else:
            count += 1
    return count


def register_demo_tasks(bus: TaskBus) -> None:
    """Register the ``demo:*`` task types on `bus`."""
    registry = bus.registry
    registry.register(
        f"{NAMESPACE}:clone-repo",
        clone_repo,
        concurrency=2,
        description="Clone a repository (simulated), reporting objects received",
        estimated_duration=1.0,
    )
    registry.register(
        f"{NAMESPACE}:flaky",
        flaky,
        retry=RetryPolicy(max_attempts=3, base_delay=0.2, multiplier=1.5, jitter=0.05),
        description="Call a flaky service: fails twice, then succeeds",
        estimated_duration=0.2,
    )
    registry.register(
        f"{NAMESPACE}:slow-timeout",
        slow_timeout,
        timeout=1.0,
        retry=RetryPolicy.never(),
        description="Overrun a 1 s timeout; never retried",
        estimated_duration=3.0,
    )
    registry.register(
        f"{NAMESPACE}:long-job",
        long_job,
        description="A long job with steady progress, to be cancelled",
        estimated_duration=3.0,
    )
    registry.register(
        f"{NAMESPACE}:crunch",
        crunch,
        run_in="process",
        timeout=10.0,
        retry=RetryPolicy.never(),
        description="Count primes in a worker process (CPU-bound), with progress",
        estimated_duration=0.5,
    )
    registry.register(
        f"{NAMESPACE}:deploy",
        deploy,
        description="Ask which branch to deploy, wait for the answer, then deploy it",
        estimated_duration=0.1,
    )
