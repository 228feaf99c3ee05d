"""Rich tables of the ``taskbus types``, ``show``, ``list`` and ``stats`` commands.

They render the HTTP API's JSON (``GET /types``, ``GET /tasks/{id}``, ``GET
/tasks``, ``GET /stats``). Every value that comes from a user (types, descriptions, inputs,
results, messages, errors) goes in as a `rich.text.Text`, so no markup or emoji
code in it is ever interpreted.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from taskbus import TaskState

__all__ = ["schema_summary", "snapshot_table", "stats_table", "tasks_table", "types_table"]

_STATES = tuple(state.value for state in TaskState)


def schema_summary(schema: Any) -> str:
    """One line for an input JSON schema: ``name: type`` per property (``?``: optional)."""
    if not isinstance(schema, dict):
        return "any"
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return str(schema.get("type") or schema.get("title") or "any")
    required = set(schema.get("required") or ())
    parts = []
    for name, spec in properties.items():
        mark = "" if name in required else "?"
        parts.append(f"{name}{mark}: {_type_name(spec)}")
    return ", ".join(parts) or "{}"


def _type_name(spec: Any) -> str:
    if not isinstance(spec, dict):
        return "any"
    if "type" in spec:
        return str(spec["type"])
    if "$ref" in spec:
        return str(spec["$ref"]).rpartition("/")[2]
    options = spec.get("anyOf") or spec.get("oneOf")
    if isinstance(options, list):
        return " | ".join(_type_name(option) for option in options)
    return "any"


def types_table(types: list[dict[str, Any]], title: str) -> Table:
    """Name, description and input of each task type."""
    table = Table(title=Text(title), title_justify="left")
    table.add_column("type", no_wrap=True)
    table.add_column("description")
    table.add_column("input")
    for item in sorted(types, key=lambda t: str(t.get("name"))):
        table.add_row(
            Text(str(item.get("name"))),
            Text(str(item.get("description") or "")),
            Text(schema_summary(item.get("input_schema"))),
        )
    return table


def _when(value: Any) -> str:
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return moment.astimezone().isoformat(sep=" ", timespec="milliseconds")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _progress(snap: dict[str, Any]) -> str:
    percent = snap.get("progress")
    text = "-" if percent is None else f"{float(percent):.0f}%"
    if snap.get("message"):
        text += f" {snap['message']}"
    return text


def _outcome(snap: dict[str, Any]) -> list[tuple[str, str]]:
    state = snap.get("state")
    if state == "completed":
        return [("result", _json(snap.get("result")))]
    rows = []
    error = snap.get("error")
    if isinstance(error, dict):
        label = "error" if state == "failed" else "last error"
        kind = f"{error.get('error_type')}, {str(error.get('exception_type')).rpartition('.')[2]}"
        rows.append((label, f"{error.get('message')} ({kind})"))
        if error.get("suggested_action"):
            rows.append(("suggested action", str(error["suggested_action"])))
    if state == "cancelled":
        rows.append(("reason", str(snap.get("cancel_reason") or "-")))
    question = snap.get("question")
    if state == "waiting" and isinstance(question, dict):
        rows.append(("asks", f"{question.get('prompt')} ({question.get('key')})"))
        rows.append(("answer schema", _json(question.get("json_schema"))))
        if question.get("deadline") is not None:
            rows.append(("answer by", _when(_iso(question["deadline"]))))
    return rows


def _iso(stamp: Any) -> Any:
    """An epoch time as ISO text (as the snapshot's other times are), else as given."""
    if isinstance(stamp, int | float):
        return datetime.fromtimestamp(stamp, UTC).isoformat()
    return stamp


def snapshot_table(snap: dict[str, Any]) -> Table:
    """One task, one field a row: state, times, attempts, worker, input, outcome."""
    rows: list[tuple[str, str]] = [
        ("id", str(snap.get("id"))),
        ("type", str(snap.get("type"))),
        ("state", str(snap.get("state"))),
        ("progress", _progress(snap)),
        ("attempts", f"{snap.get('attempts', 0)}/{snap.get('max_attempts', 1)}"),
        ("priority", str(snap.get("priority"))),
        ("owner", str(snap.get("owner") or "-")),
        ("worker", str(snap.get("worker") or "-")),
        ("created", _when(snap.get("created_at"))),
        ("started", _when(snap.get("started_at"))),
        ("finished", _when(snap.get("finished_at"))),
    ]
    if snap.get("not_before"):
        rows.append(("not before", _when(snap.get("not_before"))))
    rows.append(("input", _json(snap.get("input"))))
    rows += _outcome(snap)
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, Text(value))
    return table


def tasks_table(items: list[dict[str, Any]], title: str) -> Table:
    """One row a task: id, type, state, progress, attempts, created."""
    table = Table(title=Text(title), title_justify="left")
    for name in ("id", "type", "state", "progress", "attempts", "created"):
        table.add_column(name, no_wrap=True)
    for snap in items:
        percent = snap.get("progress")
        table.add_row(
            Text(str(snap.get("id"))),
            Text(str(snap.get("type"))),
            Text(str(snap.get("state"))),
            "-" if percent is None else f"{float(percent):.0f}%",
            f"{snap.get('attempts', 0)}/{snap.get('max_attempts', 1)}",
            str(snap.get("created_at", ""))[:19].replace("T", " "),
        )
    return table


def stats_table(counts: dict[str, Any], title: str) -> Table:
    """Tasks of each type by state, then every type's; the queued ones by priority,
    most urgent first (``p9 2`` is two tasks queued at priority 9)."""
    table = Table(title=Text(title), title_justify="left")
    table.add_column("type", no_wrap=True)
    for state in _STATES:
        table.add_column(state, justify="right")
    table.add_column("queued by priority")
    levels = counts.get("queued_by_priority") or {}
    for name, by_state in sorted((counts.get("by_type") or {}).items()):
        table.add_row(
            Text(name),
            *(str(by_state.get(state, 0)) for state in _STATES),
            _levels(levels.get(name)),
        )
    total = counts.get("by_state") or {}
    table.add_row("[bold]all[/bold]", *(str(total.get(state, 0)) for state in _STATES), "")
    return table


def _levels(counts: dict[str, int] | None) -> str:
    ordered = sorted((counts or {}).items(), key=lambda item: -int(item[0]))
    return "  ".join(f"p{priority} {count}" for priority, count in ordered)
