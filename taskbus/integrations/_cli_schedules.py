"""``taskbus schedules``: list, add, pause, resume and remove schedules on a running
``taskbus serve`` (``/schedules``).

`make_schedules_app` builds the sub-app from the client helpers of
`taskbus.integrations.cli`, which passes them in (this module imports nothing of
it). Annotations are evaluated at definition (no ``from __future__ import
annotations``): typer reads the options the helpers bring.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["CliHelpers", "make_schedules_app", "schedules_table"]


@dataclass(frozen=True)
class CliHelpers:
    """What the schedule commands use of the main CLI."""

    console: Callable[[], Console]
    client: Callable[[str, str | None], Any]
    run: Callable[[Callable[[], int | None]], None]
    parse_json: Callable[[str | None], Any]
    url_option: Any
    token_option: Any
    default_url: str


def schedules_table(items: list[dict[str, Any]], title: str) -> Table:
    """Id, type, timing, next fire, last task, and whether it is paused."""
    table = Table(title=Text(title), title_justify="left")
    for column in ("id", "type", "when", "next fire", "last task", "paused"):
        table.add_column(column, no_wrap=column != "when")
    for item in items:
        if item.get("cron"):
            when = f"cron {item.get('cron')} ({item.get('tz')})"
        else:
            when = f"every {item.get('every')} s"
        table.add_row(
            Text(str(item.get("id"))),
            Text(str(item.get("task_type"))),
            Text(when),
            Text(str(item.get("next_fire_at") or "-")),
            Text(str(item.get("last_task_id") or "-")),
            Text("yes" if item.get("paused") else "no"),
        )
    return table


def make_schedules_app(cli: CliHelpers) -> typer.Typer:  # noqa: C901 - one def per command
    """The ``schedules`` sub-app."""
    schedules_app = typer.Typer(
        help="Schedules on the server: list them (no subcommand), add, pause, resume, remove.",
        invoke_without_command=True,
        no_args_is_help=False,
    )
    url_option, token_option, default_url = cli.url_option, cli.token_option, cli.default_url

    @schedules_app.callback()
    def list_schedules(
        ctx: typer.Context,
        json_output: Annotated[bool, typer.Option("--json", help="The schedules as JSON.")] = False,
        url: Annotated[str, url_option] = default_url,
        token: Annotated[str | None, token_option] = None,
    ) -> None:
        """Without a subcommand: a table of the schedules (yours, with auth)."""
        if ctx.invoked_subcommand is not None:
            return
        console = cli.console()

        def action() -> None:
            with cli.client(url, token) as client:
                items = client.schedules()
            if json_output:
                console.print_json(data=items)
            else:
                console.print(schedules_table(items, f"taskbus schedules at {url}"))

        cli.run(action)

    @schedules_app.command()
    def add(
        task_type: Annotated[str, typer.Argument(help="Registered task type to fire.")],
        cron: Annotated[
            str | None, typer.Option(help='A cron expression, e.g. "0 2 * * *".')
        ] = None,
        every: Annotated[float | None, typer.Option(min=0, help="An interval in seconds.")] = None,
        tz: Annotated[str, typer.Option(help="IANA time zone of --cron.")] = "UTC",
        json_input: Annotated[
            str | None, typer.Option("--json", help="Input of each fired task, as JSON.")
        ] = None,
        schedule_id: Annotated[str | None, typer.Option("--id", help="The schedule's id.")] = None,
        jitter: Annotated[float | None, typer.Option(min=0, help="Random delay, seconds.")] = None,
        misfire: Annotated[str, typer.Option(help="skip, once or all (after downtime).")] = "once",
        priority: Annotated[int | None, typer.Option(min=1, max=10, help="1-10, 10 first.")] = None,
        paused: Annotated[bool, typer.Option("--paused", help="Store it paused.")] = False,
        url: Annotated[str, url_option] = default_url,
        token: Annotated[str | None, token_option] = None,
    ) -> None:
        """Store a schedule (the same id again replaces it) and print its id and next fire."""
        body: dict[str, Any] = {"type": task_type, "tz": tz, "misfire": misfire}
        optional = {"cron": cron, "every": every, "id": schedule_id, "jitter": jitter}
        body.update({name: value for name, value in optional.items() if value is not None})
        if json_input is not None:
            body["input"] = cli.parse_json(json_input)
        if priority is not None:
            body["priority"] = priority
        if paused:
            body["paused"] = True
        console = cli.console()

        def action() -> None:
            with cli.client(url, token) as client:
                stored = client.store_schedule(body)
            line = f"{stored['id']} next fire {stored.get('next_fire_at')}"
            console.print(line + (" (paused)" if stored.get("paused") else ""), markup=False)

        cli.run(action)

    def _act(schedule_id: str, action_name: str, done: str, url: str, token: str | None) -> None:
        console = cli.console()

        def action() -> None:
            with cli.client(url, token) as client:
                client.schedule_action(schedule_id, action_name)
            console.print(f"{done} {schedule_id}", markup=False, highlight=False)

        cli.run(action)

    @schedules_app.command()
    def pause(
        schedule_id: Annotated[str, typer.Argument(help="The schedule to pause.")],
        url: Annotated[str, url_option] = default_url,
        token: Annotated[str | None, token_option] = None,
    ) -> None:
        """Pause a schedule: it never fires until resumed."""
        _act(schedule_id, "pause", "paused", url, token)

    @schedules_app.command()
    def resume(
        schedule_id: Annotated[str, typer.Argument(help="The schedule to resume.")],
        url: Annotated[str, url_option] = default_url,
        token: Annotated[str | None, token_option] = None,
    ) -> None:
        """Resume a schedule, from its next fire time after now."""
        _act(schedule_id, "resume", "resumed", url, token)

    @schedules_app.command()
    def remove(
        schedule_id: Annotated[str, typer.Argument(help="The schedule to remove.")],
        url: Annotated[str, url_option] = default_url,
        token: Annotated[str | None, token_option] = None,
    ) -> None:
        """Remove a schedule (the tasks it fired stay)."""
        _act(schedule_id, "remove", "removed", url, token)

    return schedules_app
