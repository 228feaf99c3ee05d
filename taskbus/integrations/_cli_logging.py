"""``--log-level`` and ``--log-format`` of ``taskbus serve`` and ``taskbus worker``.

`configure_logging` gives the named logger hierarchies (``taskbus``, and
``uvicorn`` for ``serve``) one stderr handler of their own, text or JSON
(`taskbus.JsonFormatter`), and stops them propagating, so a line is written
once, for as long as the command runs. The root logger is never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import TextIO

from taskbus import JsonFormatter

__all__ = ["TEXT_FORMAT", "LogFormat", "LogLevel", "configure_logging"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LogFormat(StrEnum):
    """How log lines are written."""

    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    """The levels ``--log-level`` takes."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


@contextmanager
def configure_logging(
    level: LogLevel, log_format: LogFormat, names: Iterable[str] = ("taskbus",)
) -> Iterator[logging.StreamHandler[TextIO]]:
    """Send the loggers `names` (and their children) to stderr at `level` while the
    block runs; then put them back as they were."""
    handler: logging.StreamHandler[TextIO] = logging.StreamHandler()
    if log_format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    loggers = [logging.getLogger(name) for name in names]
    saved = [(logger.level, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(level.value)
        logger.propagate = False
    try:
        yield handler
    finally:
        for logger, (old_level, old_propagate) in zip(loggers, saved, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(old_level)
            logger.propagate = old_propagate
