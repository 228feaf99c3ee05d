"""Prometheus metrics: `instrument(bus)` counts a bus's figures, and the HTTP app
serves them on ``GET /metrics`` (needs the ``prometheus`` and ``http`` extras).

Four thumbnails are made, one fails for good and one fails once then succeeds;
the script then reads ``/metrics`` as Prometheus would and prints a few lines
of it: outcomes by type and error type, the retry, the run-time histogram's
count, and the queue depth read from the store at scrape time.

Run: ``.venv/bin/python examples/metrics.py``
"""

import anyio
import httpx
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from taskbus import FatalError, RetryableError, RetryPolicy, TaskBus, TaskContext
from taskbus.integrations.http import create_app
from taskbus.metrics import instrument

bus = TaskBus(workers=4)
metrics = instrument(bus, CollectorRegistry())  # or the default registry: instrument(bus)


@bus.task("images:thumbnail", retry=RetryPolicy(max_attempts=2, base_delay=0.01, jitter=0))
async def thumbnail(ctx: TaskContext, name: str) -> str:
    if name == "broken.png":
        raise FatalError("not an image")
    if name == "flaky.png" and ctx.attempt == 1:
        raise RetryableError("storage busy")
    return f"thumb-{name}"


SHOWN = (
    "taskbus_task_outcomes_total",
    "taskbus_task_retries_total",
    "taskbus_task_run_seconds_count",
    "taskbus_tasks",
)


async def main() -> None:
    app = create_app(bus, metrics=metrics)
    transport = httpx.ASGITransport(app=app)
    names = ["a.png", "b.png", "flaky.png", "broken.png", "c.png"]
    async with bus, httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        handles = [await thumbnail.submit(name) for name in names]
        for handle in handles:
            await bus.wait(handle.id, timeout=10)
        text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in SHOWN and sample.value:
                labels = {k: v for k, v in sample.labels.items() if k != "worker"}
                print(f"{sample.name} {labels} {sample.value:g}")


if __name__ == "__main__":
    anyio.run(main)
