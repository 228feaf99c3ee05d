"""The dashboard page, in a real browser: headless Debian Chromium driven by Playwright.

A uvicorn server on loopback serves `create_app(..., dashboard=True)` mounted under
``/jobs`` inside an outer Starlette app whose lifespan runs the bus, with two bearer
tokens. The page is opened with ``?token=``, submits a task from its form, shows the
progress bar move and the final state (from the event stream, no polling), cancels
another task with its Cancel button, and never shows the other user's task.

Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it); this
test fails, never skips, when it is missing.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio
import httpx
import pytest
import uvicorn
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.routing import Mount

from taskbus import Identity, TaskBus, TaskContext
from taskbus.integrations.http import create_app

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError as exc:  # pragma: no cover - the test extra installs it
    raise ImportError("the dashboard test needs Playwright: pip install playwright") from exc

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ALICE, BOB, OPS = "alice-token", "bob-token", "ops-token"
#: Records every value a progress bar takes, so the test sees the bar move step by step.
RECORD_BAR_VALUES = """() => {
  window.barValues = [];
  new MutationObserver((changes) => {
    for (const change of changes) {
      if (change.attributeName === "aria-valuenow") {
        window.barValues.push(change.target.getAttribute("aria-valuenow"));
      }
    }
  }).observe(document.getElementById("tasks"), { attributes: true, subtree: true });
}"""
WAIT_MS = 5_000


class StepsInput(BaseModel):
    steps: int = 8
    delay: float = 0.1


class WaitInput(BaseModel):
    seconds: float = 30.0


def make_bus(store: str | None = None) -> TaskBus:
    bus = TaskBus(store=store, workers=4, shutdown_grace=1.0, progress_interval=0.02)

    @bus.task("ui:steps", description="Count to `steps`, reporting progress")
    async def steps(ctx: TaskContext, params: StepsInput) -> int:
        for step in range(1, params.steps + 1):
            await anyio.sleep(params.delay)
            await ctx.progress(
                current=step, total=params.steps, message=f"step {step}/{params.steps}"
            )
        return params.steps

    @bus.task("ui:wait", description="Wait until cancelled")
    async def wait(ctx: TaskContext, params: WaitInput) -> None:
        await ctx.progress(5, "waiting")
        await anyio.sleep(params.seconds)

    return bus


@contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Serve `app` on a free loopback port in a uvicorn thread; its base URL; stop it after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", ws="none", lifespan="on", timeout_graceful_shutdown=2
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped while starting"
        assert time.monotonic() < deadline, "uvicorn did not start within 10 s"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop within 10 s"


@pytest.fixture
def server_url() -> Iterator[str]:
    """The API with two users' tokens, mounted under /jobs of an app that runs the bus."""
    bus = make_bus()
    tokens: dict[str, str | Identity] = {ALICE: "alice", BOB: "bob"}
    tokens[OPS] = Identity(owner="ops", admin=True)
    api = create_app(bus, tokens=tokens, manage_bus=False, dashboard=True)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with bus:
            yield

    with serve(Starlette(routes=[Mount("/jobs", app=api)], lifespan=lifespan)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install -y chromium`, "
            "as .ci/run does); the dashboard test never skips"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


def submit_from_form(page: Page, task_type: str, input_json: str) -> None:
    page.select_option("#task-type", task_type)
    page.fill("#task-input", input_json)
    page.click("#submit-button")


def test_dashboard_submits_follows_and_cancels(
    server_url: str, browser: Browser, tmp_path: Path
) -> None:
    # Bob's task exists before Alice opens the page: she must never see it.
    bobs = httpx.post(
        f"{server_url}/jobs/tasks",
        json={"type": "ui:steps", "input": {"steps": 1, "delay": 0}},
        headers={"Authorization": f"Bearer {BOB}"},
    )
    assert bobs.status_code == 202, bobs.text

    page = browser.new_page(viewport={"width": 1100, "height": 640})
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{server_url}/jobs/?token={ALICE}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    expect(page.locator("#connection")).to_have_text("live", timeout=WAIT_MS)
    expect(page.locator("#task-type option")).to_have_text(["ui:steps", "ui:wait"])

    # Submit from the form: the bar moves part-way, then the task completes at 100%.
    page.evaluate(RECORD_BAR_VALUES)
    submit_from_form(page, "ui:steps", '{"steps": 10, "delay": 0.12}')
    steps_row = page.locator("tbody#tasks tr", has_text="ui:steps")
    expect(steps_row).to_have_count(1, timeout=WAIT_MS)
    bar = steps_row.locator(".bar")
    expect(bar).to_have_attribute("aria-valuenow", re.compile(r"^[1-9]\d?$"), timeout=WAIT_MS)
    expect(steps_row.locator(".message")).to_contain_text("step ", timeout=WAIT_MS)
    expect(steps_row.locator(".state")).to_have_text("completed", timeout=WAIT_MS)
    expect(bar).to_have_attribute("aria-valuenow", "100")
    seen = [int(v) for v in page.evaluate("window.barValues")]
    assert seen == sorted(seen), seen
    assert len({v for v in seen if 0 < v < 100}) >= 3, seen
    assert seen[-1] == 100, seen
    expect(steps_row.locator(".cancel")).to_be_hidden()

    # Another task, cancelled with its row's Cancel button.
    submit_from_form(page, "ui:wait", '{"seconds": 30}')
    wait_row = page.locator("tbody#tasks tr", has_text="ui:wait")
    expect(wait_row.locator(".state")).to_have_text("running", timeout=WAIT_MS)
    page.screenshot(path=str(tmp_path / "dashboard-running.png"))
    wait_row.locator(".cancel").click()
    expect(wait_row.locator(".state")).to_have_text("cancelled", timeout=WAIT_MS)
    expect(wait_row.locator(".cancel")).to_be_hidden()

    assert console_errors == []  # (a 4xx answer below logs one by itself)

    # Invalid input shows the API's 422 details next to the form.
    submit_from_form(page, "ui:steps", '{"steps": "many"}')
    expect(page.locator("#form-error")).to_contain_text("steps", timeout=WAIT_MS)

    expect(page.locator("tbody#tasks tr")).to_have_count(2)
    expect(page.locator(f'tr[data-task-id="{bobs.json()["id"]}"]')).to_have_count(0)
    expect(page.locator("#owner-filter")).to_be_hidden()  # an owner, not an administrator
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    # Without a token the page says how to get in.
    page.goto(f"{server_url}/jobs/")
    expect(page.locator("#page-error")).to_contain_text("Not authorised", timeout=WAIT_MS)
    page.close()


def test_an_administrator_sees_every_owner_and_filters_by_owner(
    server_url: str, browser: Browser
) -> None:
    ids = {}
    for token, owner in ((ALICE, "alice"), (BOB, "bob")):
        answer = httpx.post(
            f"{server_url}/jobs/tasks",
            json={"type": "ui:steps", "input": {"steps": 1, "delay": 0}},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert answer.status_code == 202, answer.text
        ids[owner] = answer.json()["id"]
    page = browser.new_page(viewport={"width": 1100, "height": 640})
    page.goto(f"{server_url}/jobs/?token={OPS}")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    alices, bobs = (page.locator(f'tr[data-task-id="{ids[o]}"]') for o in ("alice", "bob"))
    expect(alices.locator(".owner")).to_have_text("owner alice", timeout=WAIT_MS)
    expect(bobs.locator(".owner")).to_have_text("owner bob")
    page.fill("#owner-filter", "bob")
    expect(alices).to_be_hidden()
    expect(bobs).to_be_visible()
    page.fill("#owner-filter", "")
    expect(alices).to_be_visible()
    page.close()


def test_dashboard_at_the_root_follows_tasks_submitted_elsewhere(browser: Browser) -> None:
    """Single-user app at the root: a task submitted by another client shows up live."""
    bus = make_bus()
    with serve(create_app(bus, manage_bus=True)) as url:
        page = browser.new_page()
        list_requests: list[str] = []
        page.on(
            "request",
            lambda r: (
                list_requests.append(r.url) if "/tasks" in r.url and r.method == "GET" else None
            ),
        )
        page.goto(f"{url}/")
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
        expect(page.locator("#connection")).to_have_text("live", timeout=WAIT_MS)
        expect(page.locator("#task-input")).to_have_value('{\n  "steps": 8,\n  "delay": 0.1\n}')

        answer = httpx.post(
            f"{url}/tasks", json={"type": "ui:steps", "input": {"steps": 4, "delay": 0.05}}
        )
        assert answer.status_code == 202, answer.text
        row = page.locator(f'tr[data-task-id="{answer.json()["id"]}"]')
        expect(row.locator(".state")).to_have_text("completed", timeout=WAIT_MS)
        expect(row.locator(".message")).to_have_text("step 4/4")
        expect(page.locator("#stats")).to_have_text("1 completed")
        # Only the first load listed the tasks: everything after came from the stream.
        assert list_requests == [f"{url}/tasks?order=newest&limit=50"]
        page.close()


def test_dashboard_shows_which_worker_runs_a_task_on_a_shared_store(
    browser: Browser, tmp_path: Path
) -> None:
    bus = make_bus(f"sqlite:///{tmp_path / 'shared.db'}")
    with serve(create_app(bus, manage_bus=True)) as url:
        page = browser.new_page()
        page.goto(f"{url}/")
        expect(page.locator("#connection")).to_have_text("live", timeout=WAIT_MS)
        answer = httpx.post(f"{url}/tasks", json={"type": "ui:wait", "input": {"seconds": 30}})
        assert answer.status_code == 202, answer.text
        row = page.locator(f'tr[data-task-id="{answer.json()["id"]}"]')
        expect(row.locator(".state")).to_have_text("running", timeout=WAIT_MS)
        expect(row.locator(".worker")).to_have_text(f"on {bus.worker_id}")
        row.locator(".cancel").click()
        expect(row.locator(".state")).to_have_text("cancelled", timeout=WAIT_MS)
        expect(row.locator(".worker")).to_have_text("")
        page.close()
