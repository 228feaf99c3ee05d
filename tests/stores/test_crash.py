"""Crash recovery of the SQLite store: SIGKILL a running bus, restart, lose nothing.

A child process (`_crash_child.py`) submits `TASK_COUNT` tasks to a SQLite-backed
bus and reports each acknowledged submit and each completion on stdout; the
parent kills it with SIGKILL at a chosen line. The parent then reads the file
with a raw `sqlite3` connection, opens a new bus on it with the same task type,
waits until every stored task is final, and checks the store's promises:

- every submit the child saw acknowledged was on disk, and ends completed with
  its result: none is lost;
- a task already final on disk never runs again, and its row is untouched;
- a task whose ``task-completed`` the child published was completed on disk
  already (order of truth), so it never runs again either;
- every other task runs exactly once in the recovery run;
- a task found ``running`` was queued again, its attempt count including the
  interrupted attempt.

The child runs on the same anyio backend as the test.
"""

from __future__ import annotations

import signal
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import PIPE
from typing import Any

import anyio
import pytest
from anyio.abc import ByteReceiveStream, Process
from anyio.streams.buffered import BufferedByteReceiveStream

from taskbus import TaskBus

from ._crash_child import WORKERS, register

CHILD = Path(__file__).with_name("_crash_child.py")
FINAL_STATES = {"completed", "failed", "cancelled"}

pytestmark = pytest.mark.anyio

#: (line kind, how many of them) after which the child is killed: 20 points of a
#: 1,000-task run, while it submits, right after, and while it works off the rest.
KILL_POINTS = [
    *(
        pytest.param("ack", n, id=f"during-submits-after-{n}-acks")
        for n in (1, 100, 250, 400, 550, 700, 850)
    ),
    pytest.param("submitted", 1, id="right-after-all-submitted"),
    *(
        pytest.param("done", n, id=f"after-{n}-completed")
        for n in (1, 25, 60, 100, 150, 250, 400, 550, 700, 800, 850, 900)
    ),
]
#: The same on trio, at fewer points: what differs there is the event loop, not the store.
TRIO_KILL_POINTS = [KILL_POINTS[i] for i in (1, 7, 10, 16)]


@dataclass
class ChildRun:
    """What the child said before it died."""

    acked: dict[str, int] = field(default_factory=dict)  # task id -> input
    announced: set[str] = field(default_factory=set)  # ids whose task-completed it saw
    counts: Counter[str] = field(default_factory=Counter)

    def take(self, line: str) -> None:
        kind, *args = line.split()
        self.counts[kind] += 1
        if kind == "ack":
            self.acked[args[0]] = int(args[1])
        elif kind == "done":
            self.announced.add(args[0])


async def _lines(stream: ByteReceiveStream) -> AsyncIterator[str]:
    buffered = BufferedByteReceiveStream(stream)
    while True:
        try:
            line = await buffered.receive_until(b"\n", 1024)
        except (anyio.IncompleteRead, anyio.EndOfStream):
            return  # EOF (a line cut short by the kill is dropped)
        yield line.decode()


async def run_and_kill(
    db: Path, backend: str, stderr_path: Path, kill_on: str, count: int
) -> ChildRun:
    """Run the child, SIGKILL it after `count` lines of kind `kill_on`, and read the rest."""
    run = ChildRun()
    with stderr_path.open("wb") as stderr:
        process = await anyio.open_process(
            [sys.executable, str(CHILD), str(db), backend], stdout=PIPE, stderr=stderr
        )
        assert process.stdout is not None
        killed = False
        try:
            with anyio.fail_after(15):
                async for line in _lines(process.stdout):
                    run.take(line)
                    if not killed and run.counts[kill_on] >= count:
                        # Kill while a task is running on disk, so that every kill
                        # point tests the recovery of interrupted tasks too.
                        await _stop_while_running_on_disk(process, db)
                        process.send_signal(signal.SIGKILL)
                        killed = True
                    # after the kill, lines already in the pipe are still read
                await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.CancelScope(shield=True):
                    await process.wait()
            await process.aclose()
    assert killed, f"child ended before {count} {kill_on!r} line(s): {_text(stderr_path)}"
    assert process.returncode == -signal.SIGKILL, _text(stderr_path)
    return run


async def _stop_while_running_on_disk(process: Process, db: Path) -> None:
    """Freeze the child (SIGSTOP) at a moment a committed row says `running`.

    Frozen, its writer commits nothing more, so the kill that follows lands with
    that task claimed on disk (bounded: at most 5 s of tries).
    """
    with anyio.fail_after(5):
        while True:
            process.send_signal(signal.SIGSTOP)
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                running = conn.execute(
                    "SELECT count(*) FROM tasks WHERE state = 'running'"
                ).fetchone()[0]
            finally:
                conn.close()
            if running:
                return
            process.send_signal(signal.SIGCONT)
            await anyio.sleep(0.001)


def _text(path: Path) -> str:
    """The child's stderr, for a failure message."""
    return path.read_text()[-4000:]


def read_rows(db: Path) -> dict[str, dict[str, Any]]:
    """Every task row, by id, through a raw connection (closed before returning)."""
    conn = sqlite3.connect(db)
    try:
        conn.row_factory = sqlite3.Row
        rows = conn.execute(
            "SELECT id, type, state, attempt, input, result, error, started_at, finished_at "
            "FROM tasks"
        ).fetchall()
    finally:
        conn.close()
    return {row["id"]: dict(row) for row in rows}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(("kill_on", "count"), KILL_POINTS)
async def test_sigkill_then_restart_loses_nothing_and_reruns_only_unfinished(
    tmp_path: Path, anyio_backend: str, kill_on: str, count: int
) -> None:
    await _crash_and_recover(tmp_path, anyio_backend, kill_on, count)


@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize(("kill_on", "count"), TRIO_KILL_POINTS)
async def test_sigkill_then_restart_on_trio(
    tmp_path: Path, anyio_backend: str, kill_on: str, count: int
) -> None:
    await _crash_and_recover(tmp_path, anyio_backend, kill_on, count)


async def _crash_and_recover(tmp_path: Path, anyio_backend: str, kill_on: str, count: int) -> None:
    db = tmp_path / "crash.db"
    child = await run_and_kill(db, anyio_backend, tmp_path / "child-stderr.txt", kill_on, count)

    before = read_rows(db)
    lost = set(child.acked) - set(before)
    assert not lost, f"{len(lost)} acknowledged submit(s) not on disk after the crash"
    final_before = {i for i, row in before.items() if row["state"] in FINAL_STATES}
    # Order of truth: whatever the child announced as completed was on disk as such.
    unwritten = {i for i in child.announced if before.get(i, {}).get("state") != "completed"}
    assert not unwritten, f"{len(unwritten)} task(s) announced completed but not stored"
    assert all(before[i]["state"] == "completed" for i in final_before)
    unfinished = set(before) - final_before
    assert unfinished, "the child finished everything before it was killed: nothing recovered"
    left_running = {i for i in unfinished if before[i]["state"] == "running"}
    # The kill waited for a claimed task on disk (see `run_and_kill`).
    states = Counter(row["state"] for row in before.values())
    assert left_running, f"no task was left running on disk: {states} {child.counts}"

    ran: list[str] = []
    bus = TaskBus(store=f"sqlite:///{db}", workers=WORKERS, shutdown_grace=1.0)
    register(bus, ran)
    async with bus:
        with anyio.fail_after(30):
            for task_id in before:
                await bus.wait(task_id)
    after = read_rows(db)

    assert set(after) == set(before), "tasks appeared or vanished during recovery"
    not_completed = {i: row["state"] for i, row in after.items() if row["state"] != "completed"}
    assert not not_completed, f"tasks not completed after recovery: {not_completed}"
    for task_id, value in child.acked.items():
        assert (after[task_id]["input"], after[task_id]["result"]) == (str(value), str(value))
    twice = [task_id for task_id, runs in Counter(ran).items() if runs > 1]
    assert not twice, f"ran more than once in the recovery run: {twice}"
    assert not final_before & set(ran), "a task already final on disk ran again"
    assert set(ran) == unfinished, "every unfinished task runs once, and only those"
    for task_id in final_before:
        assert after[task_id] == before[task_id], f"final row {task_id} changed by recovery"
    for task_id in unfinished:
        assert after[task_id]["attempt"] == before[task_id]["attempt"] + 1, before[task_id]
    for task_id in left_running:  # its interrupted attempt counted, then one more
        assert before[task_id]["attempt"] >= 1, before[task_id]
