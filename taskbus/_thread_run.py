"""`ThreadRun`: one sync handler call on a worker thread, which may outlive its attempt."""

from __future__ import annotations

import threading

import anyio
import anyio.from_thread
import anyio.lowlevel

__all__ = ["ThreadRun"]


class ThreadRun:
    """One handler call on a worker thread, which may outlive the attempt.

    Python cannot stop a thread: when an attempt is cancelled or times out, the
    task is settled at once, but its worker (and its type's concurrency slot) stays
    taken until the thread really returns, so `workers=` and `concurrency=` bound
    real executions.
    """

    __slots__ = (
        "_abandoned",
        "_finished",
        "_lock",
        "_started",
        "_token",
        "holds_thread",
        "returned",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = self._finished = self._abandoned = False
        self._token = anyio.lowlevel.current_token()
        self.returned = anyio.Event()
        #: Whether it holds a token of the executor's thread limiter (until it returns).
        self.holds_thread = False

    def begin(self) -> bool:
        """Called by the thread before the handler; False: the attempt is already over."""
        with self._lock:
            self._started = not self._abandoned
            return self._started

    def finished(self) -> None:
        """Called by the thread as it returns."""
        with self._lock:
            self._finished = True
            abandoned = self._abandoned
        if abandoned:
            try:
                anyio.from_thread.run_sync(self.returned.set, token=self._token)
            except RuntimeError:  # the event loop is gone: nobody waits any more
                pass

    def abandon(self) -> bool:
        """The attempt is over; True if the thread is still running (wait `returned`)."""
        with self._lock:
            self._abandoned = True
            return self._started and not self._finished
