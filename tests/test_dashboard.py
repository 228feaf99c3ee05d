"""The dashboard page, in a real browser: headless Debian Chromium driven by Playwright.

A uvicorn server on loopback serves `create_app(..., dashboard=True)` mounted under
``/jobs`` inside an outer Starlette app whose lifespan runs the bus, with two bearer
tokens. The page is opened with ``?token=``, submits a task from its form, shows the
progress bar move and the final state (from the event stream, no polling), cancels
another task with its Cancel button, and never shows the other user's task.
With 3,000 tasks in the store, the page paints its first rows in under a second
and holds one page of them; paging, the filters (kept in the URL), the detail
pane (a screenshot), a narrow window, a retrying task, new tasks arriving live and
a dropped event stream are each checked, and so are the dead-letter filter and the
detail pane's Retry button (a failed or cancelled task runs again; the pane follows it).

Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it); this
test fails, never skips, when it is missing.
"""

from __future__ import annotations

import re
import socket
import struct
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

from taskbus import Identity, RetryPolicy, TaskBus, TaskContext
from taskbus.integrations.http import create_app

try:
    from playwright.sync_api import Browser, Page, Request, expect, sync_playwright
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
    with serve_with_server(app) as (url, _):
        yield url


def drop_connections(server: uvicorn.Server) -> None:
    """Cut every open connection, as a flaky network would (the event stream too)."""
    for protocol in list(server.server_state.connections):
        protocol.loop.call_soon_threadsafe(protocol.transport.abort)


@contextmanager
def serve_with_server(app: Starlette) -> Iterator[tuple[str, uvicorn.Server]]:
    """`serve`, also yielding the uvicorn server."""
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
        yield f"http://127.0.0.1:{port}", server
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
        # The mounted app's own lifespan samples the live view's figures.
        async with bus, api.router.lifespan_context(api):
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
    expect(page.locator("#activity")).to_be_hidden()  # aggregate figures: not for an owner
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
    # An administrator sees the live view, sampled by the mounted app's lifespan.
    expect(page.locator("#activity")).to_be_visible(timeout=WAIT_MS)
    expect(page.locator("#spark-completed")).to_have_attribute("data-value", "2", timeout=WAIT_MS)
    expect(page.locator("#activity-note")).to_be_empty()
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


def test_the_live_view_shows_throughput_queue_depth_and_failures(
    browser: Browser, tmp_path: Path
) -> None:
    """After 5 completed, 2 failed and 3 queued for an hour, the panel's figures say so,
    its sparklines have drawn them, and a narrow window stacks the three."""
    bus = make_seeded_bus()
    with serve(create_app(bus, manage_bus=True, stats_interval=0.2)) as url:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        console_errors: list[str] = []
        page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{url}/")
        expect(page.locator("#activity")).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#activity-window")).to_have_text("10 minutes")
        runs: list[tuple[str, dict[str, int], int | None]] = [
            ("ui:steps", {"steps": 0, "delay": 0}, None)
        ] * 5
        runs += [("ui:fail", {"seconds": 1}, None)] * 2
        runs += [("ui:wait", {"seconds": 1}, 3600)] * 3
        for task_type, task_input, delay in runs:
            body = {"type": task_type, "input": task_input, "delay": delay}
            answer = httpx.post(f"{url}/tasks", json=body)
            assert answer.status_code == 202, answer.text
        completed, failed, queued = (
            page.locator(f"#spark-{name}") for name in ("completed", "failed", "queued")
        )
        expect(completed).to_have_attribute("data-value", "5", timeout=WAIT_MS)
        expect(failed).to_have_attribute("data-value", "2", timeout=WAIT_MS)
        expect(queued).to_have_attribute("data-value", "3", timeout=WAIT_MS)
        expect(completed.locator(".now")).to_have_text("5")
        expect(failed.locator(".now")).to_have_text("2")
        expect(queued.locator(".now")).to_have_text("3")
        expect(queued.locator(".sub")).to_have_text("0 running")
        expect(completed.locator("svg")).to_have_attribute(
            "aria-label", re.compile(r"5 in the last minute$")
        )
        expect(failed.locator("svg")).to_have_attribute(
            "aria-label", re.compile(r"2 in the last minute$")
        )
        assert completed.locator("svg rect").count() >= 1
        assert failed.locator("svg rect").count() >= 1
        path = queued.locator("svg path").get_attribute("d") or ""
        assert path.startswith("M"), path
        expect(page.locator("#activity-note")).to_be_empty()
        page.locator("#activity").screenshot(path=str(tmp_path / "live-view.png"))

        # Narrow: the three stack, and nothing scrolls sideways.
        page.set_viewport_size({"width": 380, "height": 760})
        fits = "document.documentElement.scrollWidth <= window.innerWidth"
        assert page.evaluate(fits), page.evaluate("document.documentElement.scrollWidth")
        boxes = [each.bounding_box() for each in (completed, queued, failed)]
        assert all(box is not None for box in boxes)
        tops = [box["y"] for box in boxes if box is not None]
        assert tops == sorted(tops) and len(set(tops)) == 3, tops
        page.locator("#activity").screenshot(path=str(tmp_path / "live-view-narrow.png"))
        assert console_errors == []
        page.close()


# ---- thousands of tasks ------------------------------------------------------------------

SEEDED = 3_000
PAGE_SIZE = 50
#: The first rows must be on screen this soon after navigation starts (ms).
FIRST_PAINT_BUDGET_MS = 1_000


def make_seeded_bus() -> TaskBus:
    """`make_bus` plus a type that fails with a traceback and one that retries slowly."""
    bus = make_bus()

    @bus.task("ui:fail", description="Fail at once", retry=RetryPolicy.never())
    async def fail(ctx: TaskContext, params: WaitInput) -> None:
        raise ValueError(f"cannot wait {params.seconds} s")

    @bus.task(
        "ui:flaky",
        description="Fail with a retryable error, then wait 30 s before the next attempt",
        retry=RetryPolicy(max_attempts=3, base_delay=30, jitter=0),
    )
    async def flaky(ctx: TaskContext, params: WaitInput) -> None:
        await ctx.progress(50, "connecting")
        raise ConnectionError("the upstream hung up")

    return bus


async def seed(bus: TaskBus) -> None:
    """3,000 tasks: alice's completed `ui:steps` and bob's `ui:wait` queued for an hour,
    alternating, then one failed `ui:fail` (the newest, its events still in the history)."""
    handles = []
    for number in range(SEEDED - 1):
        if number % 2:
            await bus.submit("ui:wait", {"seconds": number}, owner="bob", delay=3600)
        else:
            handles.append(await bus.submit("ui:steps", {"steps": 0, "delay": 0}, owner="alice"))
    for handle in handles:
        await bus.wait(handle.id, timeout=30)
    failing = await bus.submit("ui:fail", {"seconds": 7}, owner="alice", metadata={"ticket": 42})
    await bus.wait(failing.id, timeout=30)


@pytest.fixture(scope="module")
def seeded_url() -> Iterator[str]:
    """A single-user API (its caller sees every owner) over a bus holding 3,000 tasks."""
    bus = make_seeded_bus()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with bus:
            await seed(bus)
            yield

    api = create_app(bus, manage_bus=False)
    with serve(Starlette(routes=[Mount("/jobs", app=api)], lifespan=lifespan)) as url:
        yield f"{url}/jobs"


def newest(url: str, **params: str) -> list[dict[str, object]]:
    """The first page GET /tasks answers, newest first: what the page should show."""
    answer = httpx.get(f"{url}/tasks", params={"order": "newest", "limit": PAGE_SIZE, **params})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, object]] = answer.json()["items"]
    return items


def row_ids(page: Page) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        "tbody#tasks tr", "rows => rows.map(r => r.dataset.taskId)"
    )
    return ids


def task_list_requests(page: Page) -> list[str]:
    """Every GET of the task list the page makes, recorded from now on."""
    seen: list[str] = []

    def record(request: Request) -> None:
        if re.search(r"/tasks(\?|$)", request.url) and request.method == "GET":
            seen.append(request.url)

    page.on("request", record)
    return seen


def test_first_paint_of_3000_tasks_is_under_a_second_and_shows_one_page(
    seeded_url: str, browser: Browser
) -> None:
    expected = [item["id"] for item in newest(seeded_url)]
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    requests = task_list_requests(page)
    page.goto(f"{seeded_url}/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    first_rows_ms = page.evaluate("performance.getEntriesByName('taskbus-rows')[0].startTime")
    print(f"first paint of the task list with {SEEDED} tasks: {first_rows_ms:.0f} ms")  # noqa: T201
    assert first_rows_ms < FIRST_PAINT_BUDGET_MS
    # One page, newest first, and only that page was asked for.
    assert row_ids(page) == expected
    assert len(expected) == PAGE_SIZE
    assert requests == [f"{seeded_url}/tasks?order=newest&limit={PAGE_SIZE}"]
    expect(page.locator("#stats")).to_contain_text(
        "1500 completed · 1 failed · 1499 queued", timeout=WAIT_MS
    )
    expect(page.locator("#prev-page")).to_be_disabled()
    expect(page.locator("#next-page")).to_be_enabled()
    page.close()


def test_pages_go_older_and_newer_with_cursors_kept_in_the_url(
    seeded_url: str, browser: Browser
) -> None:
    first = newest(seeded_url)
    cursor = httpx.get(
        f"{seeded_url}/tasks", params={"order": "newest", "limit": PAGE_SIZE}
    ).json()["next_cursor"]
    second = newest(seeded_url, cursor=cursor)
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    page.goto(f"{seeded_url}/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    requests = task_list_requests(page)

    page.click("#next-page")
    expect(page.locator("tbody#tasks tr").first).to_have_attribute(
        "data-task-id", str(second[0]["id"]), timeout=WAIT_MS
    )
    assert row_ids(page) == [item["id"] for item in second]
    assert f"cursor={cursor}" in page.url
    expect(page.locator("#page-info")).to_have_text("page 2")
    # A reload (or a shared link) shows the same page.
    page.reload()
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    assert row_ids(page) == [item["id"] for item in second]
    page.click("#prev-page")
    expect(page.locator("tbody#tasks tr").first).to_have_attribute(
        "data-task-id", str(first[0]["id"]), timeout=WAIT_MS
    )
    assert row_ids(page) == [item["id"] for item in first]
    assert "cursor=" not in page.url
    # Each page was one request of one page, never more.
    assert len(requests) == 3, requests
    assert all(f"limit={PAGE_SIZE}" in r for r in requests), requests
    page.close()


def test_filters_by_state_type_and_owner_run_on_the_server_and_stay_in_the_url(
    seeded_url: str, browser: Browser
) -> None:
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    page.goto(f"{seeded_url}/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    requests = task_list_requests(page)
    rows = page.locator("tbody#tasks tr")

    page.select_option("#state-filter", "queued")
    expect(rows.first.locator(".state")).to_have_text("queued", timeout=WAIT_MS)
    expect(rows).to_have_count(PAGE_SIZE)
    assert set(page.locator("tbody#tasks .state").all_inner_texts()) == {"queued"}
    assert row_ids(page) == [item["id"] for item in newest(seeded_url, state="queued")]
    assert "state=queued" in page.url

    page.select_option("#state-filter", "")
    page.fill("#type-filter", "ui:st")
    expect(page).to_have_url(re.compile(r"type=ui%3Ast"), timeout=WAIT_MS)
    expect(rows.first.locator(".type")).to_have_text("ui:steps", timeout=WAIT_MS)
    assert set(page.locator("tbody#tasks .type").all_inner_texts()) == {"ui:steps"}

    page.fill("#type-filter", "")
    page.fill("#owner-filter", "bob")
    expect(page).to_have_url(re.compile(r"owner=bob"), timeout=WAIT_MS)
    expect(rows.first.locator(".owner")).to_have_text("owner bob", timeout=WAIT_MS)
    assert set(page.locator("tbody#tasks .owner").all_inner_texts()) == {"owner bob"}
    assert row_ids(page) == [item["id"] for item in newest(seeded_url, owner="bob")]
    # Every filter was a query parameter of one request for one page.
    assert requests and all(f"limit={PAGE_SIZE}" in r for r in requests), requests
    assert any("state=queued" in r for r in requests), requests
    assert any("type=ui%3Ast" in r for r in requests), requests
    assert any("owner=bob" in r for r in requests), requests

    # A shared link keeps the filters.
    link = f"{seeded_url}/?state=queued&owner=bob&type=ui:wa"
    page.goto(link)
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    expect(page.locator("#state-filter")).to_have_value("queued")
    expect(page.locator("#type-filter")).to_have_value("ui:wa")
    expect(page.locator("#owner-filter")).to_have_value("bob")
    expected = newest(seeded_url, state="queued", owner="bob", type="ui:wa")
    assert row_ids(page) == [item["id"] for item in expected]
    page.close()


def png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def test_detail_pane_screenshot_shows_every_field_and_the_event_history(
    seeded_url: str, browser: Browser, tmp_path: Path
) -> None:
    failed = newest(seeded_url, state="failed")
    assert len(failed) == 1
    task_id = str(failed[0]["id"])
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    page.goto(f"{seeded_url}/#task={task_id}")  # reachable by URL
    pane = page.locator("#detail")
    expect(pane).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    expect(pane).to_be_visible()
    expect(page.locator("#detail-id")).to_have_text(task_id)
    expect(page.locator("#detail-type")).to_have_text("ui:fail")
    expect(page.locator("#detail-state")).to_have_text("failed")
    expect(page.locator("#detail-owner")).to_have_text("alice")
    expect(page.locator("#detail-attempts")).to_have_text("1 of 1")
    expect(page.locator("#detail-input")).to_have_text('{\n  "seconds": 7\n}')
    expect(page.locator("#detail-metadata")).to_contain_text('"ticket": 42')
    expect(page.locator("#detail-failure")).to_contain_text("ValueError: cannot wait 7.0 s")
    expect(page.locator("#detail-traceback")).to_contain_text("Traceback")
    for field in ("#detail-created", "#detail-started", "#detail-finished"):
        expect(page.locator(field)).to_have_text(re.compile(r"\d"))
    expect(page.locator("#detail-cancel")).to_be_hidden()
    history = page.locator("#detail-events li")
    expect(history).to_have_count(3, timeout=WAIT_MS)
    assert [item.get_attribute("data-event") for item in history.all()] == [
        "task-queued",
        "task-started",
        "task-failed",
    ]
    expect(page.locator(f'tr[data-task-id="{task_id}"]')).to_have_class(re.compile("selected"))

    png = pane.screenshot(path=str(tmp_path / "detail-pane.png"), animations="disabled")
    box = pane.bounding_box()
    assert box is not None
    assert png_size(png) == (round(box["width"]), round(box["height"]))
    # A blank pane this size compresses to a few KB; one with its text is many times more.
    assert len(png) > 20_000, len(png)

    page.click("#detail-close")
    expect(pane).to_be_hidden()
    assert "#task=" not in page.url
    page.locator(f'tr[data-task-id="{task_id}"]').press("Enter")  # from the keyboard
    expect(pane).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    assert page.url.endswith(f"#task={task_id}")
    page.close()


def test_a_narrow_window_never_scrolls_sideways(seeded_url: str, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 380, "height": 760})
    page.goto(f"{seeded_url}/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    fits = "document.documentElement.scrollWidth <= window.innerWidth"
    assert page.evaluate(fits), page.evaluate("document.documentElement.scrollWidth")
    expect(page.locator("thead")).to_be_hidden()  # the rows are cards
    page.locator("tbody#tasks tr").first.click()
    pane = page.locator("#detail")
    expect(pane).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
    box = pane.bounding_box()
    assert box is not None and box["x"] == 0 and box["width"] == 380
    assert page.evaluate(fits)
    page.close()


def test_a_retrying_task_shows_as_retrying_live_in_its_row_and_pane(browser: Browser) -> None:
    bus = make_seeded_bus()
    with serve(create_app(bus, manage_bus=True)) as url:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(f"{url}/")
        expect(page.locator("#connection")).to_have_text("live", timeout=WAIT_MS)
        answer = httpx.post(f"{url}/tasks", json={"type": "ui:flaky", "input": {}})
        assert answer.status_code == 202, answer.text
        task_id = answer.json()["id"]
        row = page.locator(f'tr[data-task-id="{task_id}"]')
        expect(row.locator(".state")).to_have_text("retrying", timeout=WAIT_MS)
        expect(row.locator(".error")).to_contain_text("attempt 1 failed: the upstream hung up")
        row.click()
        expect(page.locator("#detail-state")).to_have_text("retrying", timeout=WAIT_MS)
        expect(page.locator("#detail-attempts")).to_have_text("1 of 3")
        expect(page.locator("#detail-failure")).to_contain_text("ConnectionError")
        expect(page.locator("#detail-not-before")).to_have_text(re.compile(r"\d"))
        expect(page.locator('#detail-events li[data-event="task-retrying"]')).to_have_count(1)

        # A reload shows it as retrying from its snapshot alone.
        page.reload()
        expect(row.locator(".state")).to_have_text("retrying", timeout=WAIT_MS)
        expect(row.locator(".error")).to_contain_text("attempt 1 failed: the upstream hung up")

        # Cancelled from the pane: the pane and the row follow.
        expect(page.locator("#detail")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
        page.click("#detail-cancel")
        expect(page.locator("#detail-state")).to_have_text("cancelled", timeout=WAIT_MS)
        expect(row.locator(".state")).to_have_text("cancelled", timeout=WAIT_MS)
        expect(page.locator('#detail-events li[data-event="task-cancelled"]')).to_have_count(1)
        page.close()


def test_a_new_task_appears_on_top_of_a_full_first_page_only_if_it_matches(
    browser: Browser,
) -> None:
    bus = make_seeded_bus()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with bus:
            for number in range(PAGE_SIZE + 5):
                await bus.submit("ui:wait", {"seconds": number}, delay=3600)
            yield

    api = create_app(bus)
    with serve(Starlette(routes=[Mount("/", app=api)], lifespan=lifespan)) as url:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        requests = task_list_requests(page)
        page.goto(f"{url}/?type=ui:steps")
        expect(page.locator("#connection")).to_have_text("live", timeout=WAIT_MS)
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
        expect(page.locator("#empty")).to_be_visible()
        # Not a ui:steps task: not on this page.
        other = httpx.post(f"{url}/tasks", json={"type": "ui:wait", "input": {}, "delay": 3600})
        wanted = httpx.post(
            f"{url}/tasks", json={"type": "ui:steps", "input": {"steps": 1, "delay": 0}}
        )
        row = page.locator(f'tr[data-task-id="{wanted.json()["id"]}"]')
        expect(row.locator(".state")).to_have_text("completed", timeout=WAIT_MS)
        expect(page.locator(f'tr[data-task-id="{other.json()["id"]}"]')).to_have_count(0)

        page.goto(f"{url}/")
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
        before = row_ids(page)
        assert len(before) == PAGE_SIZE
        fresh = httpx.post(f"{url}/tasks", json={"type": "ui:wait", "input": {}, "delay": 3600})
        expect(page.locator("tbody#tasks tr").first).to_have_attribute(
            "data-task-id", fresh.json()["id"], timeout=WAIT_MS
        )
        assert row_ids(page) == [fresh.json()["id"], *before[:-1]]
        # The events did not make the page list anything more.
        assert len(requests) == 2, requests
        page.close()


def test_after_a_dropped_connection_the_rows_miss_nothing_and_repeat_nothing(
    browser: Browser,
) -> None:
    bus = make_bus()
    with serve_with_server(create_app(bus, manage_bus=True)) as (url, server):
        page = browser.new_page()
        streams: list[Request] = []
        page.on("request", lambda r: streams.append(r) if "/events" in r.url else None)
        page.goto(f"{url}/")
        expect(page.locator("#connection")).to_have_text("live", timeout=WAIT_MS)
        before = httpx.post(f"{url}/tasks", json={"type": "ui:wait", "input": {}})
        before_row = page.locator(f'tr[data-task-id="{before.json()["id"]}"]')
        expect(before_row.locator(".state")).to_have_text("running", timeout=WAIT_MS)

        # While the page is cut off: one task is cancelled, another runs to the end.
        # (The browser waits a few seconds before it reconnects.)
        drop_connections(server)
        expect(page.locator("#connection")).to_have_text("reconnecting", timeout=WAIT_MS)
        assert httpx.delete(f"{url}/tasks/{before.json()['id']}").status_code == 200
        during = httpx.post(
            f"{url}/tasks", json={"type": "ui:steps", "input": {"steps": 2, "delay": 0}}
        )
        assert during.status_code == 202, during.text

        during_row = page.locator(f'tr[data-task-id="{during.json()["id"]}"]')
        expect(page.locator("#connection")).to_have_text("live", timeout=3 * WAIT_MS)
        expect(during_row.locator(".state")).to_have_text("completed", timeout=WAIT_MS)
        expect(before_row.locator(".state")).to_have_text("cancelled")
        assert row_ids(page) == [during.json()["id"], before.json()["id"]]
        # The browser resumed the stream where it broke off.
        assert len(streams) == 2, streams
        assert "last-event-id" not in streams[0].all_headers()
        assert streams[1].all_headers()["last-event-id"]
        page.close()


def test_dead_letters_are_a_filter_and_the_pane_retries_a_failed_or_cancelled_task(
    browser: Browser,
) -> None:
    bus = make_bus()
    fixed = threading.Event()

    @bus.task("ui:fixable", retry=RetryPolicy(max_attempts=2, base_delay=0.01, jitter=0))
    async def fixable(ctx: TaskContext, params: WaitInput) -> float:
        if not fixed.is_set():
            raise ConnectionError("the printer is offline")
        return params.seconds

    with serve(create_app(bus, manage_bus=True)) as url:

        def post(path: str, body: dict[str, object]) -> str:
            answer = httpx.post(f"{url}/{path}", json=body)
            assert answer.status_code == 202, answer.text
            return str(answer.json()["id"])

        def final(task_id: str) -> dict[str, object]:
            deadline = time.monotonic() + 5
            while True:
                snapshot: dict[str, object] = httpx.get(f"{url}/tasks/{task_id}").json()
                if snapshot["state"] in ("completed", "failed", "cancelled"):
                    return snapshot
                assert time.monotonic() < deadline, snapshot
                time.sleep(0.02)

        failed = post("tasks", {"type": "ui:fixable", "input": {"seconds": 3}})
        done = post("tasks", {"type": "ui:steps", "input": {"steps": 1, "delay": 0}})
        waiting = post("tasks", {"type": "ui:wait", "input": {"seconds": 30}})
        assert final(failed)["state"] == "failed" and final(done)["state"] == "completed"
        assert httpx.delete(f"{url}/tasks/{waiting}").status_code == 200
        assert final(waiting)["state"] == "cancelled"

        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(f"{url}/?state=dead-letters")
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
        expect(page.locator("#state-filter")).to_have_value("dead-letters")
        assert row_ids(page) == [failed]

        page.locator(f'tr[data-task-id="{failed}"]').click()
        pane = page.locator("#detail")
        expect(pane).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
        expect(page.locator("#detail-dead-letter")).to_have_text("attempts-exhausted")
        expect(page.locator("#detail-retry-of")).to_have_text("—")
        expect(page.locator("#detail-cancel")).to_be_hidden()
        fixed.set()
        page.click("#detail-retry")
        expect(page.locator("#detail-id")).not_to_have_text(failed, timeout=WAIT_MS)
        rerun = page.url.rpartition("#task=")[2]
        assert rerun not in ("", failed)
        expect(page.locator("#detail-id")).to_have_text(rerun)
        expect(page.locator("#detail-state")).to_have_text("completed", timeout=WAIT_MS)
        expect(page.locator("#detail-result")).to_have_text("3")
        expect(page.locator("#detail-dead-letter")).to_have_text("—")
        expect(page.locator("#detail-retry")).to_be_hidden()
        page.click("#detail-retry-of a")  # back to the task it re-ran
        expect(page.locator("#detail-id")).to_have_text(failed, timeout=WAIT_MS)
        expect(page.locator("#detail-state")).to_have_text("failed")

        page.goto(f"{url}/#task={done}")
        expect(pane).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
        expect(page.locator("#detail-retry")).to_be_hidden()
        page.goto(f"{url}/#task={waiting}")
        expect(pane).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
        expect(page.locator("#detail-state")).to_have_text("cancelled")
        expect(page.locator("#detail-retry")).to_be_visible()
        page.click("#detail-retry")
        expect(page.locator("#detail-id")).not_to_have_text(waiting, timeout=WAIT_MS)
        expect(page.locator("#detail-state")).to_have_text("running", timeout=WAIT_MS)
        expect(page.locator("#detail-retry-of")).to_have_text(waiting)


def test_the_schedules_panel_lists_pauses_and_resumes(browser: Browser) -> None:
    """The page lists the caller's schedules with their next fire; Pause and Resume
    change the stored schedule; another owner's schedule is not shown."""
    bus = make_bus()
    tokens: dict[str, str | Identity] = {ALICE: "alice", BOB: "bob"}
    with serve(create_app(bus, tokens=tokens, manage_bus=True)) as url:
        for token, item in ((ALICE, 3), (BOB, 4)):
            answer = httpx.post(
                f"{url}/schedules",
                json={"type": "ui:steps", "every": 3600, "input": {"steps": item}},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert answer.status_code == 200, answer.text
        page = browser.new_page()
        page.goto(f"{url}/?token={ALICE}")
        expect(page.locator("body")).to_have_attribute("data-ready", "true", timeout=WAIT_MS)
        rows = page.locator("#schedules tr")
        expect(rows).to_have_count(1, timeout=WAIT_MS)
        row = page.locator('#schedules tr[data-schedule-id="alice/ui:steps"]')
        expect(row.locator(".when")).to_have_text("every 3600 s")
        expect(row.locator(".next")).not_to_have_text("paused")
        row.locator("button.toggle").click()
        expect(row).to_have_attribute("data-paused", "true", timeout=WAIT_MS)
        expect(row.locator(".next")).to_have_text("paused")
        mine = httpx.get(
            f"{url}/schedules/alice/ui:steps", headers={"Authorization": f"Bearer {ALICE}"}
        )
        assert mine.json()["paused"] is True
        row.locator("button.toggle").click()
        expect(row).to_have_attribute("data-paused", "false", timeout=WAIT_MS)
        expect(row.locator("button.toggle")).to_have_text("Pause")


class Release(BaseModel):
    branch: str
    notes: str = ""


def test_a_waiting_task_shows_its_question_and_is_answered_from_the_pane(
    browser: Browser, tmp_path: Path
) -> None:
    bus = make_bus(f"sqlite:///{tmp_path / 'ask.db'}")

    @bus.task("ui:release", description="Ask which branch, then release it")
    async def release(ctx: TaskContext) -> str:
        choice = await ctx.ask("Which branch to release?", model=Release)
        return f"released {choice.branch}"

    with serve(create_app(bus, manage_bus=True)) as url:
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(f"{url}/")
        expect(page.locator("#connection")).to_have_text("live", timeout=WAIT_MS)
        answer = httpx.post(f"{url}/tasks", json={"type": "ui:release"})
        assert answer.status_code == 202, answer.text
        task_id = answer.json()["id"]
        row = page.locator(f'tr[data-task-id="{task_id}"]')
        expect(row.locator(".state")).to_have_text("waiting", timeout=WAIT_MS)
        expect(row.locator(".message")).to_have_text("asks: Which branch to release?")
        expect(row.locator(".cancel")).to_be_visible()

        row.click()
        expect(page.locator("#detail-state")).to_have_text("waiting", timeout=WAIT_MS)
        expect(page.locator("#detail-question")).to_be_visible()
        expect(page.locator("#detail-prompt")).to_have_text("Which branch to release?")
        expect(page.locator("#answer-input")).to_have_value('{\n  "branch": "",\n  "notes": ""\n}')
        expect(page.locator('#detail-events li[data-event="task-input-required"]')).to_have_count(
            1, timeout=WAIT_MS
        )
        page.screenshot(path=str(tmp_path / "dashboard-question.png"))

        # An answer that is not JSON, then one that does not fit: said next to the form.
        page.fill("#answer-input", "{branch")
        page.click("#answer-button")
        expect(page.locator("#answer-error")).to_contain_text("not valid JSON")
        page.fill("#answer-input", '{"notes": "hi"}')
        page.click("#answer-button")
        expect(page.locator("#answer-error")).to_contain_text("branch: Field required")
        assert (httpx.get(f"{url}/tasks/{task_id}").json())["state"] == "waiting"

        page.fill("#answer-input", '{"branch": "main"}')
        page.click("#answer-button")
        expect(row.locator(".state")).to_have_text("completed", timeout=WAIT_MS)
        expect(page.locator("#detail-state")).to_have_text("completed", timeout=WAIT_MS)
        expect(page.locator("#detail-question")).to_be_hidden()
        expect(page.locator("#detail-result")).to_have_text('"released main"')
        expect(page.locator('#detail-events li[data-event="task-input-received"]')).to_have_count(1)

        # The state filter offers waiting tasks.
        page.select_option("#state-filter", "waiting")
        expect(page.locator("#empty")).to_be_visible(timeout=WAIT_MS)
        page.close()
