"""A Qt window: a progress bar and a Cancel button per task, driven by bus events.

Shows `TaskBus.start_threaded(dispatcher=QtDispatcher())` behind a PySide6
window: the bus runs on its own thread, `QtTaskEvents` turns its events into
Qt signals on the GUI thread, and the widgets change only in slots connected
to those signals. Cancel calls ``tb.cancel(...)`` from the GUI thread.

With ``--auto`` (what the test suite runs, under ``QT_QPA_PLATFORM=offscreen``)
it submits two exports, presses Cancel on the second once its progress passes
40%, waits for both final states, prints ``report.pdf: completed (exported 20
pages)`` and ``photos.zip: cancelled (user pressed Cancel)``, and exits.
Needs the ``qt`` extra: ``pip install 'taskbus[qt]'``.

Run: ``.venv/bin/python examples/qt_window.py`` (close the window to quit), or
``QT_QPA_PLATFORM=offscreen .venv/bin/python examples/qt_window.py --auto``
"""

import sys
import time
from collections.abc import Callable

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from taskbus import TaskBus, TaskCancelled, TaskCompleted, TaskContext, TaskFailed, ThreadedTaskBus
from taskbus.integrations.qt import QtDispatcher, QtTaskEvents


def export(ctx: TaskContext, pages: int) -> str:
    """A sync handler on a worker thread; it stops at the next check once cancelled."""
    for page in range(1, pages + 1):
        ctx.raise_if_cancelled()
        time.sleep(0.04)
        ctx.progress(current=page, total=pages, message=f"page {page}/{pages}")
    return f"exported {pages} pages"


class TaskRow(QWidget):
    """One task: its name, a progress bar, its state, and a Cancel button."""

    def __init__(self, title: str, on_cancel: Callable[[], object]) -> None:
        super().__init__()
        self.bar = QProgressBar()
        self.state = QLabel("queued")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(on_cancel)
        layout = QHBoxLayout(self)
        layout.addWidget(QLabel(title))
        layout.addWidget(self.bar)
        layout.addWidget(self.state)
        layout.addWidget(self.cancel_button)

    def finish(self, state: str) -> None:
        self.state.setText(state)
        self.cancel_button.setEnabled(False)


class Window(QWidget):
    """The tasks, one row each; `auto` presses Cancel itself and quits at the end."""

    def __init__(self, tb: ThreadedTaskBus, events: QtTaskEvents, *, auto: bool) -> None:
        super().__init__()
        self.setWindowTitle("taskbus: exports")
        self.tb = tb
        self.auto = auto
        self.rows: dict[str, TaskRow] = {}
        self.titles: dict[str, str] = {}
        self.outcomes: dict[str, str] = {}
        self.to_cancel: str | None = None
        self.column = QVBoxLayout(self)
        # The window changes only here, in slots run on the GUI thread.
        events.progress.connect(self.on_progress)
        events.completed.connect(self.on_final)
        events.failed.connect(self.on_final)
        events.cancelled.connect(self.on_final)

    def add(self, title: str, pages: int) -> str:
        task_id = self.tb.submit("files:export", pages).id
        row = TaskRow(title, lambda: self.tb.cancel(task_id, reason="user pressed Cancel"))
        self.column.addWidget(row)
        self.rows[task_id] = row
        self.titles[task_id] = title
        return task_id

    def on_progress(self, task_id: str, percent: float, message: str) -> None:
        row = self.rows.get(task_id)
        if row is None:
            return
        row.bar.setValue(int(percent))
        row.state.setText(message)
        if self.auto and task_id == self.to_cancel and percent > 40:
            self.to_cancel = None
            print(f"{self.titles[task_id]}: pressing Cancel at {percent:.0f}%")
            row.cancel_button.click()

    def on_final(self, event: TaskCompleted | TaskFailed | TaskCancelled) -> None:
        row = self.rows.get(event.task_id)
        if row is None:
            return
        if isinstance(event, TaskCompleted):
            outcome = f"completed ({event.result})"
        elif isinstance(event, TaskCancelled):
            outcome = f"cancelled ({event.reason})"
        else:
            outcome = f"failed ({event.error})"
        row.finish(outcome)
        self.outcomes[event.task_id] = outcome
        if self.auto and len(self.outcomes) == len(self.rows):
            for task_id, title in self.titles.items():
                print(f"{title}: {self.outcomes[task_id]}")
            QApplication.quit()


def main() -> int:
    auto = "--auto" in sys.argv[1:]
    app = QApplication(sys.argv[:1])
    with TaskBus.start_threaded(dispatcher=QtDispatcher(), workers=2, shutdown_grace=1) as tb:
        tb.task("files:export", description="Export a document")(export)
        events = QtTaskEvents(tb)
        window = Window(tb, events, auto=auto)
        window.add("report.pdf", 20)
        window.to_cancel = window.add("photos.zip", 40)
        window.show()
        if auto:  # a safety net: never hang a test run
            QTimer.singleShot(10_000, lambda: app.exit(1))
        code = app.exec()
        events.detach()
    return code


if __name__ == "__main__":
    sys.exit(main())
