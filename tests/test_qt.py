"""The Qt adapter: signals and dispatched listeners arrive on the GUI thread.

Runs on Qt's offscreen platform (set before the QApplication exists). The Qt
event loop is driven by `run_until`, a `QEventLoop` that checks its condition
every few milliseconds and gives up at a deadline, so a lost signal fails the
test in seconds instead of hanging it.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

pytest.importorskip("PySide6", reason="needs the qt extra: pip install 'taskbus[qt]'")

from PySide6.QtCore import QCoreApplication, QEventLoop, QThread, QTimer
from PySide6.QtWidgets import QApplication

from taskbus import (
    FatalError,
    TaskBus,
    TaskCancelled,
    TaskCompleted,
    TaskContext,
    TaskFailed,
    TaskQueued,
    TaskStarted,
)
from taskbus._threaded import ThreadedTaskBus
from taskbus.integrations.qt import QtDispatcher, QtTaskEvents

WAIT = 5.0


@pytest.fixture(scope="module")
def app() -> QCoreApplication:
    os.environ["QT_QPA_PLATFORM"] = "offscreen"
    existing = QApplication.instance()
    return existing if existing is not None else QApplication([])


@pytest.fixture
def tb(app: QCoreApplication) -> Iterator[ThreadedTaskBus]:
    with TaskBus.start_threaded(dispatcher=QtDispatcher(), workers=2, shutdown_grace=0.5) as bus:
        gate = threading.Event()

        @bus.task("t:steps")
        def steps(ctx: TaskContext, count: int) -> int:
            for step in range(1, count + 1):
                ctx.progress(current=step, total=count, message=f"step {step}")
            return count

        @bus.task("t:gated")
        def gated(ctx: TaskContext) -> None:
            while not gate.wait(0.01):
                ctx.raise_if_cancelled()

        @bus.task("t:fail")
        def fail() -> None:
            raise FatalError("nope")

        @bus.task("t:ask")
        async def ask(ctx: TaskContext) -> str:
            return await ctx.ask("Name?")

        yield bus
        gate.set()


def run_until(condition: Callable[[], bool], timeout: float = WAIT) -> None:
    """Run the Qt event loop until `condition()` holds; fail after `timeout` seconds."""
    loop = QEventLoop()
    deadline = time.monotonic() + timeout

    def check() -> None:
        if condition() or time.monotonic() > deadline:
            loop.quit()

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(check)
    timer.start()
    if not condition():
        loop.exec()
    timer.stop()
    assert condition(), f"not true within {timeout}s"


class Recorder:
    """Records what each slot received and whether it ran on the GUI thread."""

    def __init__(self, app: QCoreApplication) -> None:
        self.app = app
        self.calls: list[tuple[str, Any]] = []
        self.off_gui_thread: list[str] = []

    def slot(self, name: str) -> Callable[..., None]:
        def record(*args: Any) -> None:
            if QThread.currentThread() != self.app.thread():
                self.off_gui_thread.append(name)
            self.calls.append((name, args[0] if len(args) == 1 else args))

        return record

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def test_signals_arrive_on_the_gui_thread(app: QCoreApplication, tb: ThreadedTaskBus) -> None:
    events = QtTaskEvents(tb)
    recorder = Recorder(app)
    for name in ("queued", "started", "progress", "completed", "published"):
        getattr(events, name).connect(recorder.slot(name))
    handle = tb.submit("t:steps", 4)
    run_until(lambda: "completed" in recorder.names())
    events.detach()

    assert recorder.off_gui_thread == []
    names = [name for name in recorder.names() if name != "published"]
    assert names[:2] == ["queued", "started"]
    assert names[-1] == "completed"
    progress = [args for name, args in recorder.calls if name == "progress"]
    assert progress[-1] == (handle.id, 100.0, "step 4")
    by_name = dict(recorder.calls)
    assert isinstance(by_name["queued"], TaskQueued)
    assert isinstance(by_name["started"], TaskStarted)
    assert isinstance(by_name["completed"], TaskCompleted)
    assert by_name["completed"].result == 4
    published = [event.name for name, event in recorder.calls if name == "published"]
    assert published[0] == "task-queued"
    assert published[-1] == "task-completed"


def test_failed_and_cancelled_signals(app: QCoreApplication, tb: ThreadedTaskBus) -> None:
    events = QtTaskEvents(tb)
    recorder = Recorder(app)
    events.failed.connect(recorder.slot("failed"))
    events.cancelled.connect(recorder.slot("cancelled"))
    events.started.connect(recorder.slot("started"))
    failing = tb.submit("t:fail")
    gated = tb.submit("t:gated")
    run_until(lambda: recorder.names().count("started") == 2)
    assert tb.cancel(gated.id, reason="user pressed Cancel")
    run_until(lambda: {"failed", "cancelled"} <= set(recorder.names()))
    events.detach()

    assert recorder.off_gui_thread == []
    by_name = dict(recorder.calls)
    assert isinstance(by_name["failed"], TaskFailed)
    assert by_name["failed"].task_id == failing.id
    assert "nope" in by_name["failed"].error
    assert isinstance(by_name["cancelled"], TaskCancelled)
    assert by_name["cancelled"].reason == "user pressed Cancel"


def test_a_question_reaches_the_gui_thread(app: QCoreApplication, tb: ThreadedTaskBus) -> None:
    seen: list[str] = []
    on_gui_thread: list[bool] = []

    def asked(event: Any) -> None:
        on_gui_thread.append(QThread.currentThread() == app.thread())
        seen.append(event.prompt)

    tb.on("task-input-required", asked)
    handle = tb.submit("t:ask")
    run_until(lambda: seen == ["Name?"])
    tb.respond(handle.id, "Ada")
    assert handle.result(timeout=WAIT) == "Ada"
    assert (seen, on_gui_thread) == (["Name?"], [True])


def test_the_dispatcher_runs_listeners_on_the_gui_thread(
    app: QCoreApplication, tb: ThreadedTaskBus
) -> None:
    ran: list[tuple[str, bool]] = []

    def on_completed(event: TaskCompleted) -> None:
        ran.append((event.task_id, QThread.currentThread() == app.thread()))

    tb.on(TaskCompleted, on_completed)
    handle = tb.submit("t:steps", 1)
    assert handle.result(timeout=WAIT) == 1
    run_until(lambda: len(ran) == 1)
    assert ran == [(handle.id, True)]
    assert threading.current_thread() is threading.main_thread()


def test_the_dispatcher_queues_calls_in_order_from_any_thread(app: QCoreApplication) -> None:
    dispatcher = QtDispatcher()
    calls: list[tuple[int, bool]] = []

    def record(n: int) -> None:
        calls.append((n, QThread.currentThread() == app.thread()))

    dispatcher(record, 0)
    assert calls == []  # queued, even on the GUI thread

    def post() -> None:
        for n in range(1, 50):
            dispatcher(record, n)

    poster = threading.Thread(target=post)
    poster.start()
    poster.join(WAIT)
    run_until(lambda: len(calls) == 50)
    assert calls == [(n, True) for n in range(50)]


def test_a_listener_that_raises_on_the_gui_thread_is_logged(
    app: QCoreApplication, caplog: pytest.LogCaptureFixture
) -> None:
    dispatcher = QtDispatcher()
    after: list[str] = []

    def broken() -> None:
        raise ValueError("bad slot")

    with caplog.at_level(logging.ERROR, logger="taskbus.qt"):
        dispatcher(broken)
        dispatcher(after.append, "still running")
        run_until(lambda: after == ["still running"])
    assert "bad slot" in caplog.text


def test_detach_is_idempotent_and_safe_after_close(app: QCoreApplication) -> None:
    with TaskBus.start_threaded(workers=1) as bus:
        events = QtTaskEvents(bus)
        assert bus.bus.events.listener_count() == 1
        events.detach()
        events.detach()
        assert bus.bus.events.listener_count() == 0
        closed_later = QtTaskEvents(bus)
    closed_later.detach()


def test_objects_need_an_application_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(QCoreApplication, "instance", staticmethod(lambda: None))
    with pytest.raises(RuntimeError, match="create the QApplication"):
        QtDispatcher()


def test_a_missing_pyside6_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "taskbus.integrations.qt")
    monkeypatch.setitem(sys.modules, "PySide6.QtCore", None)
    with pytest.raises(ImportError, match=r"pip install 'taskbus\[qt\]'"):
        importlib.import_module("taskbus.integrations.qt")


def test_the_xcb_platform_plugin_finds_every_system_library_it_loads() -> None:
    """On a real or virtual (Xvfb) screen Qt loads its xcb plugin, whose system
    libraries (libxcb-cursor0, libxcb-icccm4, libxcb-keysyms1...) `make test` installs."""
    import subprocess
    from pathlib import Path

    import PySide6

    qt = Path(PySide6.__file__).parent / "Qt"
    for library in (qt / "plugins/platforms/libqxcb.so", qt / "lib/libQt6XcbQpa.so.6"):
        linked = subprocess.run(
            ["ldd", str(library)], capture_output=True, text=True, check=True
        ).stdout
        missing = [line.strip() for line in linked.splitlines() if "not found" in line]
        assert missing == [], f"{library.name} needs {missing}"
