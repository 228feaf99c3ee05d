"""``taskbus serve``'s uvicorn server: says where it serves once it listens.

`run_server` opens the bus, then runs the app under uvicorn with uvicorn's own
logging setup left out (the CLI configures the ``uvicorn`` loggers beside
taskbus's), calls `announce` with the URL once the sockets are bound, and
returns quietly after Ctrl-C or SIGTERM; the bus stops after the server. A bus
that cannot open (its store file is locked or not writable, say) raises its
`taskbus.TaskbusError` before anything listens. It returns whether the server
started; one that could not (the port is taken) has logged why on
``uvicorn.error``.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from taskbus import TaskBus

__all__ = ["run_server"]


class _AnnouncingServer(uvicorn.Server):
    def __init__(
        self,
        config: uvicorn.Config,
        bus: TaskBus,
        announce: Callable[[str], None],
        say: Callable[[str], None],
    ) -> None:
        super().__init__(config)
        self._bus = bus
        self._announce = announce
        self._say = say

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn holds Ctrl-C and SIGTERM while it serves and raises them again as
        # it returns; holding them around the bus too lets it stop gracefully first.
        with self.capture_signals():
            async with self._bus:
                await super().serve(sockets=sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = not self.should_exit
        super().handle_exit(sig, frame)
        if first and self.started:
            self._announce_stop(signal.Signals(sig).name)

    def _announce_stop(self, name: str) -> None:
        self._say(
            f"taskbus serve: {name}: stopping (running tasks get "
            f"{self._bus.shutdown_grace:g}s, then go back to the queue)"
        )

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._announce(_url(self.config.host, self.servers[0].sockets[0].getsockname()[1]))


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def run_server(
    app: Any,
    bus: TaskBus,
    *,
    host: str,
    port: int,
    log_level: str,
    announce: Callable[[str], None],
    say: Callable[[str], None],
) -> bool:
    """Run `bus` and serve `app` until Ctrl-C or SIGTERM; whether it started.

    `announce` gets the URL once the server listens, `say` a line when it stops.
    """
    config = uvicorn.Config(app, host=host, port=port, log_config=None, log_level=log_level)
    server = _AnnouncingServer(config, bus, announce, say)
    try:
        server.run()
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C it caught once it has stopped
    except SystemExit:  # uvicorn's way out of a failed start (it logged why)
        return False
    return server.started
