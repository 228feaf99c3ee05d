"""Qt (PySide6): bus events as Qt signals on the GUI thread, and a dispatcher.

Needs the ``qt`` extra (``pip install 'taskbus[qt]'``) and a `QApplication`
(or `QCoreApplication`) created before these objects::

    app = QApplication([])
    tb = TaskBus.start_threaded(dispatcher=QtDispatcher())
    events = QtTaskEvents(tb)
    events.progress.connect(lambda task_id, percent, message: bar.setValue(int(percent)))
    events.completed.connect(lambda event: label.setText(str(event.result)))

`QtDispatcher` hands a function to the thread it lives in (the GUI thread)
through a queued signal: the bus's thread posts the call and goes on, and Qt's
event loop runs it, in order, with the widgets safe to touch. As
``start_threaded(dispatcher=...)`` it makes every sync listener added with
``tb.on`` run on the GUI thread.

`QtTaskEvents` listens to a `ThreadedTaskBus` and re-emits each task event as
a Qt signal, always from the GUI thread, whether or not the bus has a
dispatcher: connect plain functions, lambdas or slots to it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

try:
    import shiboken6
    from PySide6.QtCore import QCoreApplication, QObject, Qt, Signal, Slot
except ImportError as exc:
    raise ImportError(
        f"taskbus.integrations.qt needs PySide6 ({exc.name or exc} could not be imported); "
        "install it with: pip install 'taskbus[qt]'"
    ) from exc

from taskbus import ALL_EVENTS, BusNotRunning, Event, TaskProgress

if TYPE_CHECKING:
    from taskbus import ThreadedTaskBus

__all__ = ["QtDispatcher", "QtTaskEvents"]

logger = logging.getLogger("taskbus.qt")


def _gui_application() -> QCoreApplication:
    app = QCoreApplication.instance()
    if app is None:
        raise RuntimeError("create the QApplication before taskbus's Qt objects")
    return app


def _move_to_gui_thread(obj: QObject, parent: QObject | None) -> None:
    app = _gui_application()
    if parent is None and obj.thread() != app.thread():
        obj.moveToThread(app.thread())


class QtDispatcher(QObject):
    """Runs ``fn(*args)`` on the GUI thread: ``dispatcher(fn, *args)`` from any thread.

    The call is queued (it returns at once, even on the GUI thread) and runs
    in order in Qt's event loop. A function that raises is logged on
    ``taskbus.qt``; the event loop goes on. Calls still queued when the
    dispatcher is deleted are dropped.
    """

    _posted = Signal(object, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        _move_to_gui_thread(self, parent)
        self._posted.connect(self._run, Qt.ConnectionType.QueuedConnection)

    def __call__(self, fn: Callable[..., object], *args: Any) -> None:
        self._posted.emit(fn, args)

    @Slot(object, object)
    def _run(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception:  # a listener never breaks the GUI's event loop; logged
            logger.exception("listener %r raised on the GUI thread", fn)


class QtTaskEvents(QObject):
    """A `ThreadedTaskBus`'s task events as Qt signals, emitted on the GUI thread.

    Each signal but `progress` carries the event object (see `taskbus` events
    for their fields). `published` carries every event, batch events included.
    Call `detach()` to stop listening (also safe after the bus has closed).
    """

    published = Signal(object)
    queued = Signal(object)
    started = Signal(object)
    #: (task_id, percent 0-100, message or "")
    progress = Signal(str, float, str)
    retrying = Signal(object)
    completed = Signal(object)
    failed = Signal(object)
    cancelled = Signal(object)

    _incoming = Signal(object)

    def __init__(self, tb: ThreadedTaskBus, parent: QObject | None = None) -> None:
        super().__init__(parent)
        _move_to_gui_thread(self, parent)
        self._tb: ThreadedTaskBus | None = tb
        self._by_name = {
            "task-queued": self.queued,
            "task-started": self.started,
            "task-retrying": self.retrying,
            "task-completed": self.completed,
            "task-failed": self.failed,
            "task-cancelled": self.cancelled,
        }
        # Queued when the bus calls `_forward` on its own thread, direct when a
        # dispatcher already brought it to this one: either way `_emit` runs here.
        self._incoming.connect(self._emit)
        tb.on(ALL_EVENTS, self._forward)

    def _forward(self, event: Event) -> None:
        if shiboken6.isValid(self):  # the Qt side may be gone before the bus is
            self._incoming.emit(event)

    @Slot(object)
    def _emit(self, event: Event) -> None:
        self.published.emit(event)
        if isinstance(event, TaskProgress):
            self.progress.emit(event.task_id, float(event.progress), event.message or "")
            return
        signal = self._by_name.get(event.name)
        if signal is not None:
            signal.emit(event)

    def detach(self) -> None:
        """Stop listening to the bus; idempotent."""
        tb, self._tb = self._tb, None
        if tb is None or tb.closed:
            return
        try:
            tb.off(ALL_EVENTS, self._forward)
        except BusNotRunning:  # it closed meanwhile, taking its listeners with it
            return
