"""OpenTelemetry metrics: `instrument_metrics(bus)` exports a bus's figures through
a meter (needs the ``otel`` extra and an SDK: ``pip install 'taskbus[otel]'
opentelemetry-sdk``).

Four thumbnails are made, one fails for good and one fails once then succeeds;
the script then collects the metrics as a periodic reader would (an in-memory
reader here, a ``PeriodicExportingMetricReader`` with an OTLP exporter in
production) and prints the outcomes, the retry, the run-time histogram's count
and the store's counts.

Run: ``.venv/bin/python examples/otel_metrics.py``
"""

import anyio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)

from taskbus import FatalError, RetryableError, RetryPolicy, TaskBus, TaskContext
from taskbus.otel import instrument_metrics

reader = InMemoryMetricReader()
bus = TaskBus(workers=4)
exported = instrument_metrics(bus, meter_provider=MeterProvider(metric_readers=[reader]))


@bus.task("images:thumbnail", retry=RetryPolicy(max_attempts=2, base_delay=0.01, jitter=0))
async def thumbnail(ctx: TaskContext, name: str) -> str:
    if name == "broken.png":
        raise FatalError("not an image")
    if name == "flaky.png" and ctx.attempt == 1:
        raise RetryableError("storage busy")
    return f"thumb-{name}"


SHOWN = ("taskbus.task.outcomes", "taskbus.task.retries", "taskbus.task.run", "taskbus.tasks")


async def main() -> None:
    names = ["a.png", "b.png", "flaky.png", "broken.png", "c.png"]
    async with bus:
        handles = [await thumbnail.submit(name) for name in names]
        for handle in handles:
            await bus.wait(handle.id, timeout=10)
        await exported.refresh()  # the store's counts now, not at the next interval
        data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name not in SHOWN:
                    continue
                for point in metric.data.data_points:
                    labels = {
                        k.removeprefix("taskbus.task."): v
                        for k, v in (point.attributes or {}).items()
                        if k != "taskbus.worker"
                    }
                    if isinstance(point, HistogramDataPoint):
                        value: float = point.count
                    elif isinstance(point, NumberDataPoint):
                        value = point.value
                    else:
                        continue
                    print(f"{metric.name} {dict(sorted(labels.items()))} {value:g}")


if __name__ == "__main__":
    anyio.run(main)
