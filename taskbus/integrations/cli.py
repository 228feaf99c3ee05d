"""The ``taskbus`` command line (typer and rich, from the ``cli`` extra).

``taskbus demo`` runs the ``demo:*`` task types on a bus of its own, with live
progress bars driven only by bus events, then a table of final states (see
`taskbus.integrations.demo`). It exits 0 when every task ended as expected,
1 otherwise.

This module is the CLI, not a library: without typer and rich installed,
importing it exits with a message saying what to install. Its imports of
taskbus are absolute: a worker process re-runs the main module by path, outside
its package, when the CLI runs as ``python -m taskbus.integrations.cli``.
"""

from __future__ import annotations

import importlib.util
import os
from enum import StrEnum
from typing import Annotated

try:
    import typer
    from rich.console import Console
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installation
    raise SystemExit(
        f"taskbus: the command line needs the 'cli' extra ({exc.name} is not installed); "
        "install it with: pip install 'taskbus[cli]'"
    ) from exc

import anyio

from taskbus import __version__
from taskbus.integrations.demo import (
    DEMO_DEADLINE,
    DEMO_PLAN,
    LiveView,
    PlainView,
    count_states,
    progress_bars,
    run_demo,
    summary_table,
)

__all__ = ["Backend", "app", "main"]

app = typer.Typer(
    name="taskbus",
    help="taskbus: an event-bus task runtime. Try `taskbus demo`.",
    no_args_is_help=True,
    add_completion=False,
)


class Backend(StrEnum):
    """Event loops anyio can run the demo on."""

    ASYNCIO = "asyncio"
    TRIO = "trio"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"taskbus {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """taskbus: submit slow work, get an id at once, watch typed events."""


@app.command()
def demo(
    backend: Annotated[
        Backend, typer.Option(help="Event loop to run on (anyio backend).")
    ] = Backend.ASYNCIO,
    live: Annotated[
        bool,
        typer.Option("--live/--no-live", help="Live progress bars, or one line per event."),
    ] = True,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker count of the bus.")] = 4,
) -> None:
    """Run example tasks with live progress bars, then print their final states."""
    if backend is Backend.TRIO and importlib.util.find_spec("trio") is None:
        raise SystemExit("taskbus: --backend trio needs trio: pip install trio")
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 132  # logs and pipes: wider than rich's default of 80
    console.print(
        f"[bold]taskbus demo[/bold]: {len(DEMO_PLAN)} tasks on {workers} workers "
        f"({backend.value}); progress comes from bus events only"
    )
    if live:
        with progress_bars(console) as bars:
            outcome = anyio.run(run_demo, LiveView(bars), workers, DEMO_PLAN, backend=backend.value)
    else:
        outcome = anyio.run(run_demo, PlainView(console), workers, DEMO_PLAN, backend=backend.value)
    table, all_expected = summary_table(outcome)
    console.print()
    console.print(table)
    console.print(
        f"{len(outcome.snapshots)} tasks in {outcome.elapsed:.2f}s: {count_states(outcome)}"
    )
    if not outcome.finished_in_time:
        console.print(f"[bold red]not every task finished within {DEMO_DEADLINE:g}s[/bold red]")
        raise typer.Exit(code=1)
    if not all_expected:
        console.print("[bold red]some tasks did not end as expected[/bold red]")
        raise typer.Exit(code=1)
    console.print("[green]every task ended as expected[/green]")


def main() -> None:
    """Entry point of the ``taskbus`` console script."""
    app(prog_name="taskbus")


if __name__ == "__main__":
    main()
