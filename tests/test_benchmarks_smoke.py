"""Smoke runs of the benchmark scripts: each `--quick` run exits 0 and prints JSON lines.

Figures are not asserted (they depend on the machine); only that every line is
a JSON object with the keys the README documents, and that a check of
correctness a script reports (every task run exactly once) holds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

EXPECTED: dict[str, set[str]] = {
    "throughput": {
        "backend",
        "workers",
        "tasks_per_s",
        "reference_tasks_per_s",
        "ratio",
        "target_ratio",
        "meets_target",
    },
    "latency": {
        "workers",
        "p50_us",
        "p99_us",
        "reference_p50_us",
        "reference_p99_us",
        "ratio_p50",
        "ratio_p99",
        "target_p50_us",
        "meets_target",
    },
    "memory": {
        "rss_growth_mib",
        "mib_per_100k_tasks",
        "bytes_per_task",
        "reference_bytes_per_task",
        "ratio",
        "target_mib_per_100k_tasks",
        "meets_target",
    },
    "durable": {"backend", "store", "workers", "meets_target"},
    "http_api": set(),
    "multiprocess": {"backend", "store", "processes", "workers_per_process", "submitters"},
    "redis": {"system", "version", "store", "redis_py"},
    "keyed_concurrency": {
        "keys",
        "workers",
        "key_concurrency",
        "keyed_tasks_per_s",
        "reference_tasks_per_s",
        "ratio",
    },
    "dependencies": {
        "store",
        "chain_length",
        "tasks_per_s",
        "reference_no_dependencies_tasks_per_s",
        "ratio",
        "target_ratio",
        "in_order",
    },
    "schedule_drift": {
        "store",
        "interval_s",
        "p50_ms",
        "p99_ms",
        "max_ms",
        "reference_p50_ms",
        "reference_p99_ms",
        "target_p99_ms",
    },
    "metrics": {
        "store",
        "tasks_per_s",
        "reference_tasks_per_s",
        "ratio",
        "reference_listener_tasks_per_s",
        "ratio_to_listener",
        "target_ratio",
    },
    "tracing": {
        "task",
        "processor",
        "sampler",
        "caller",
        "tasks",
        "workers",
        "tasks_per_s",
        "reference_tracing_off_tasks_per_s",
        "ratio",
        "cost_per_task_us",
        "cpu_us_per_task",
        "reference_cpu_us_per_task",
        "cpu_cost_per_task_us",
        "cpu_ratio",
        "spans_exported",
        "target_ratio",
        "meets_target",
    },
    "observability": {
        "task",
        "processor",
        "sampler",
        "tasks",
        "workers",
        "tasks_per_s",
        "reference_off_tasks_per_s",
        "ratio",
        "cost_per_task_us",
        "cpu_us_per_task",
        "reference_cpu_us_per_task",
        "cpu_cost_per_task_us",
        "cpu_ratio",
        "target_ratio",
        "meets_target",
    },
    "input_required": {
        "store",
        "p50_us",
        "p99_us",
        "reference_p50_us",
        "reference_p99_us",
        "ratio_p50",
        "ratio_p99",
    },
}
#: Keys of one case only, for scripts whose lines differ by case.
EXPECTED_BY_CASE: dict[tuple[str, str], set[str]] = {
    ("durable", "end-to-end"): {
        "submitters",
        "tasks_per_s",
        "reference_per_commit_tasks_per_s",
        "reference_batched_tasks_per_s",
        "ratio_to_per_commit",
        "ratio_to_batched",
        "target_tasks_per_s",
        "target_ratio_to_batched",
    },
    ("durable", "end-to-end-sequential"): {
        "submitters",
        "tasks_per_s",
        "reference_per_commit_tasks_per_s",
        "reference_batched_tasks_per_s",
        "ratio_to_batched",
        "target_tasks_per_s",
    },
    ("multiprocess", "end-to-end"): {
        "tasks_per_s",
        "finals_not_heard",
        "reference_single_process_tasks_per_s",
        "reference_raw_insert_rows_per_s",
        "ratio_to_single_process",
        "ratio_to_raw_insert",
    },
    ("multiprocess", "exactly-once"): {
        "exactly_once",
        "every_final_heard_once",
        "completed_rows",
        "tasks_run_once",
        "tasks_run_more_than_once",
        "tasks_never_run",
        "finals_heard_once",
    },
    ("multiprocess", "event-latency"): {"p50_us", "p99_us", "reference_p50_us", "reference_p99_us"},
    ("http_api", "submit"): {
        "requests",
        "connections",
        "submits_per_s",
        "reference_requests_per_s",
        "ratio",
    },
    ("http_api", "sse-fan-out"): {
        "clients",
        "p50_us",
        "p99_us",
        "reference_p50_us",
        "reference_p99_us",
        "ratio_p50",
        "ratio_p99",
    },
    ("redis", "end-to-end"): {
        "backend",
        "processes",
        "workers_per_process",
        "submitters",
        "tasks_per_s",
        "submit_loop_per_s",
        "exactly_once",
        "done",
        "tasks_run_once",
        "tasks_run_more_than_once",
        "tasks_never_run",
    },
    ("redis", "submit-to-start"): {"processes", "warmup", "p50_us", "p99_us"},
    ("redis", "memory-per-queued-task"): {
        "used_memory_before",
        "used_memory_after",
        "bytes_per_task",
        "queued",
    },
    ("redis", "event-latency"): {"processes", "heard", "p50_us", "p99_us"},
    ("durable", "submit-latency"): {
        "p50_us",
        "p99_us",
        "reference_p50_us",
        "reference_p99_us",
        "ratio_p50",
        "ratio_p99",
    },
}
#: Keys of taskbus's line of a case that also carries its peers' figures and the targets.
EXPECTED_BY_SYSTEM: dict[tuple[str, str, str], set[str]] = {
    ("redis", "end-to-end", "taskbus"): {
        "completed_in_store",
        "finals_heard_once",
        "finals_not_heard",
        "dramatiq_tasks_per_s",
        "arq_tasks_per_s",
        "saq_tasks_per_s",
        "ratio_to_dramatiq",
        "ratio_to_arq",
        "ratio_to_saq",
        "target_tasks_per_s",
        "target_ratio_to_dramatiq",
        "meets_target_ratio_to_dramatiq",
    },
    ("redis", "submit-to-start", "taskbus"): {
        "dramatiq_p50_us",
        "arq_p50_us",
        "saq_p50_us",
        "target_p50_us",
    },
    ("redis", "memory-per-queued-task", "taskbus"): {
        "event_log_bytes_per_task",
        "dramatiq_bytes_per_task",
        "arq_bytes_per_task",
        "saq_bytes_per_task",
        "target_bytes_per_task",
    },
}
#: Keys that say the run was correct (not a figure): they must be true.
MUST_HOLD: dict[tuple[str, str], str] = {
    # Every task completed once in the store and ran once over the worker processes.
    ("multiprocess", "exactly-once"): "exactly_once",
    # Every task ran once, and was done once, for taskbus and for each peer.
    ("redis", "end-to-end"): "exactly_once",
    # Every chain's steps ran one after the other, in order.
    ("dependencies", "chains"): "in_order",
}
CASES = {
    "throughput": {"no-subscriber", "sync-listener", "async-subscriber", "peer-aiojobs"},
    "latency": {"submit-to-start", "submit-to-result"},
    "memory": {"blocked-worker", "delayed", "input-model"},
    "durable": {"end-to-end", "end-to-end-sequential", "submit-latency"},
    "http_api": {"submit", "sse-fan-out"},
    "multiprocess": {"end-to-end", "exactly-once", "event-latency"},
    "redis": {"end-to-end", "submit-to-start", "memory-per-queued-task", "event-latency"},
    "keyed_concurrency": {"memory", "sqlite", "redis"},
    "dependencies": {"chains"},
    "schedule_drift": {"schedule-drift"},
    "input_required": {"respond-to-result"},
    "metrics": {"on-vs-off"},
    "tracing": {
        "traces-on",
        "batch-processor",
        "ratio-sampler",
        "untraced-caller",
        "realistic",
        "realistic-ratio-sampler",
    },
    "observability": {"noop", "noop-sampled", "realistic", "realistic-sampled"},
}
#: Seconds a quick run may take, where 25 is too few: redis.py starts and stops two
#: worker processes for each of four systems (about 12 s on an idle 2-core machine).
QUICK_TIMEOUT = {"redis": 60, "schedule_drift": 40, "tracing": 40}


def run_quick(script: str, *extra: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{script}.py"), "--quick", *extra],
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT.get(script, 25),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines, "no output"
    parsed = [json.loads(line) for line in lines]
    assert all(isinstance(line, dict) for line in parsed)
    return parsed


@pytest.mark.slow
@pytest.mark.timeout(70)  # above every run_quick timeout
@pytest.mark.parametrize(
    "script",
    [
        "throughput",
        "latency",
        "memory",
        "durable",
        "http_api",
        "multiprocess",
        "redis",
        "keyed_concurrency",
        "dependencies",
        "schedule_drift",
        "input_required",
        "metrics",
        "tracing",
        "observability",
    ],
)
def test_quick_run_prints_json_lines(script: str) -> None:
    if script == "memory":
        pytest.importorskip("psutil")
    lines = run_quick(script)
    for line in lines:
        assert line["bench"] == script
        assert {"bench", "case", "tasks", "meets_target"} <= line.keys()
        assert "error" not in line, line
        expected = EXPECTED[script] | EXPECTED_BY_CASE.get((script, line["case"]), set())
        expected |= EXPECTED_BY_SYSTEM.get((script, line["case"], line.get("system", "")), set())
        missing = expected - line.keys()
        assert not missing, f"{line['case']}: missing {sorted(missing)}"
        must_hold = MUST_HOLD.get((script, line["case"]))
        assert must_hold is None or line[must_hold] is True, line
    assert CASES[script] <= {line["case"] for line in lines}
