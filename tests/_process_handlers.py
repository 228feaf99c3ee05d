"""Module-level handlers for process tests (a worker process must import them)."""

import os
import time
from pathlib import Path


def write_pid_and_sleep(path: str) -> None:
    Path(path).write_text(str(os.getpid()))
    time.sleep(60)


def square(value: int) -> int:
    return value * value
