"""Many processes on one store (a SQLite file, or Redis): `taskbus worker`
processes run the tasks a client process (``workers=0``) submits, and every
promise holds across them.

Each test starts real worker processes (`tests/_mp_app.py`), so they run on
asyncio only: what they check is between processes, not inside an event loop.
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from _redis import prefix_for
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream

from taskbus import (
    DeadLetterReason,
    InvalidAnswer,
    TaskBus,
    TaskCancelledError,
    TaskEvent,
    TaskFailedError,
    TaskInputRequired,
    TaskState,
    event_order,
)
from taskbus._leasing import is_dead
from taskbus.testing import EventRecorder

pytestmark = pytest.mark.anyio

TESTS = Path(__file__).parent
ClusterFactory = Callable[[], AbstractAsyncContextManager["Cluster"]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "redis"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Cluster:
    """Worker processes on one store, and what their handlers logged."""

    def __init__(
        self,
        tmp_path: Path,
        stack: AsyncExitStack,
        monkeypatch: pytest.MonkeyPatch,
        store_kind: str,
    ) -> None:
        self._monkeypatch = monkeypatch
        self.db = tmp_path / "shared.db"
        self.log = tmp_path / "handlers.log"
        self.log.touch()
        self._stack = stack
        self.env = {
            **os.environ,
            "TASKBUS_TEST_DB": str(self.db),
            "TASKBUS_TEST_LOG": str(self.log),
        }
        self._stderr = stack.enter_context((tmp_path / "workers.err").open("ab"))
        if store_kind == "redis":
            self.env["TASKBUS_TEST_REDIS_PREFIX"] = prefix_for(tmp_path)

    async def worker(self, *extra: str) -> Process:
        """Start ``taskbus worker`` on the test app; return once it runs."""
        process = await anyio.open_process(
            [
                sys.executable,
                "-m",
                "taskbus.integrations.cli",
                "worker",
                "--app",
                "_mp_app:make",
                *extra,
            ],
            cwd=TESTS,
            env=self.env,
            stderr=self._stderr,  # its logs: a pipe nobody reads would fill and block it
        )
        self._stack.push_async_callback(_stop, process)
        assert process.stdout is not None
        lines = TextReceiveStream(process.stdout)
        with anyio.fail_after(20):
            seen = ""
            async for chunk in lines:
                seen += chunk
                if "SIGTERM or Ctrl-C to stop" in seen:
                    break
            else:
                raise AssertionError(f"the worker did not start: {seen!r}")
        return process

    def client(self) -> TaskBus:
        """The same app, with no workers: it submits, reads and listens only."""
        import _mp_app

        for name in ("TASKBUS_TEST_DB", "TASKBUS_TEST_LOG", "TASKBUS_TEST_REDIS_PREFIX"):
            if name in self.env:
                self._monkeypatch.setenv(name, self.env[name])
        bus = _mp_app.make()
        bus.executor.resize(0)
        return bus

    def entries(self, kind: str | None = None) -> list[tuple[str, str, int, float]]:
        rows = []
        for line in self.log.read_text().splitlines():
            what, task_id, pid, at = line.split()
            if kind is None or what == kind:
                rows.append((what, task_id, int(pid), float(at)))
        return rows

    async def wait_for(self, check: Callable[[], bool], timeout: float = 20) -> None:
        with anyio.fail_after(timeout):
            while not check():  # noqa: ASYNC110 - other processes write the log
                await anyio.sleep(0.02)

    def open_gate(self) -> None:
        Path(str(self.db) + ".open").touch()


async def _stop(process: Process) -> None:
    if process.returncode is None:
        process.kill()
    with anyio.fail_after(10):
        await process.wait()


@pytest.fixture
def cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_kind: str
) -> Callable[[], AbstractAsyncContextManager[Cluster]]:
    """``async with cluster() as nodes``: worker processes on a store of each kind."""

    @asynccontextmanager
    async def start() -> AsyncIterator[Cluster]:
        async with AsyncExitStack() as stack:
            yield Cluster(tmp_path, stack, monkeypatch, store_kind)

    return start


async def test_workers_run_what_a_client_submits_once_each_and_it_hears_every_event_in_order(
    cluster: ClusterFactory,
) -> None:
    async with cluster() as nodes:
        first, second = await nodes.worker(), await nodes.worker()
        client = nodes.client()
        heard: list[Any] = []
        client.on("*", heard.append)
        async with client:
            handles = [await client.submit("mp:echo", f"t{i}") for i in range(60)]
            results = [await handle.result(timeout=20) for handle in handles]
            await nodes.wait_for(
                lambda: sum(e.name == "task-completed" for e in heard) == len(handles)
            )
        assert results == [f"t{i}" for i in range(60)]
        ran = nodes.entries("ran")
        assert sorted(task_id for _, task_id, _, _ in ran) == sorted(h.id for h in handles)
        assert {pid for _, _, pid, _ in ran} <= {first.pid, second.pid}
        for handle in handles:  # each task's events, in order, each once
            names = [e.name for e in heard if isinstance(e, TaskEvent) and e.task_id == handle.id]
            assert names == ["task-queued", "task-started", "task-progress", "task-completed"]
        ids = [event_order(e.id or "") for e in heard]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)


async def test_a_dead_letter_failed_in_a_worker_process_is_retried_from_the_client(
    cluster: ClusterFactory,
) -> None:
    async with cluster() as nodes:
        worker = await nodes.worker()
        client = nodes.client()
        async with client:
            old = await client.submit("mp:shut", "again", owner="alice", metadata={"n": 1})
            with pytest.raises(TaskFailedError, match="the gate is shut"):
                await old.result(timeout=20)
            dead = await client.list(dead_letter=True)
            nodes.open_gate()
            new = await client.retry(old.id)
            assert await new.result(timeout=20) == "again"
            rerun = await client.get(new.id)
            before = await client.get(old.id)
        assert [(s.id, s.dead_letter) for s in dead] == [(old.id, DeadLetterReason.EXHAUSTED)]
        assert (rerun.retry_of, rerun.owner, rerun.metadata) == (
            old.id,
            "alice",
            {"n": 1, "retry_of": old.id},
        )
        assert (before.state, before.attempts) == (TaskState.FAILED, 2)
        ran = nodes.entries("ran")
        assert [task_id for _, task_id, _, _ in ran] == [old.id, old.id, new.id]
        assert {pid for _, _, pid, _ in ran} == {worker.pid}


async def test_a_sigkilled_workers_task_finishes_in_the_other_worker(
    cluster: ClusterFactory,
) -> None:
    async with cluster() as nodes:
        doomed = await nodes.worker()
        client = nodes.client()
        async with client:
            handle = await client.submit("mp:gated")
            await nodes.wait_for(lambda: len(nodes.entries("start")) == 1)
            assert nodes.entries("start")[0][2] == doomed.pid
            doomed.send_signal(signal.SIGKILL)
            await doomed.wait()
            survivor = await nodes.worker()  # sees a dead pid holding a lease: reaps at once
            await nodes.wait_for(lambda: len(nodes.entries("start")) == 2)
            nodes.open_gate()
            assert await handle.result(timeout=20) == "through"
            snapshot = await client.get(handle.id)
        assert [pid for _, _, pid, _ in nodes.entries("end")] == [survivor.pid]
        assert snapshot.attempts == 2  # the killed attempt counts
        assert snapshot.error is None and snapshot.state is TaskState.COMPLETED


async def test_the_per_type_limit_holds_across_processes(
    cluster: ClusterFactory,
) -> None:
    async with cluster() as nodes:
        # Three processes that run one task each: without a limit counted across
        # them, three tasks of the type would run at once.
        for _ in range(3):
            await nodes.worker("--workers", "1")
        client = nodes.client()
        async with client:
            handles = [await client.submit("mp:limited") for _ in range(24)]
            for handle in handles:
                await handle.result(timeout=30)
        running = peak = 0
        for kind, _, _, _ in sorted(nodes.entries(), key=lambda entry: entry[3]):
            running += 1 if kind == "start" else -1
            peak = max(peak, running)
        assert peak == 2, f"{peak} tasks of a type limited to 2 ran at once"


async def test_a_key_limit_holds_across_processes(cluster: ClusterFactory) -> None:
    async with cluster() as nodes:
        for _ in range(3):
            await nodes.worker("--workers", "2")
        client = nodes.client()
        async with client:
            users = ["alice", "bob", "carol"] * 6
            handles = [await client.submit("mp:keyed", user) for user in users]
            for handle in handles:
                await handle.result(timeout=30)
        running: Counter[str] = Counter()
        peak: Counter[str] = Counter()
        for kind, user, _, _ in sorted(nodes.entries(), key=lambda entry: entry[3]):
            running[user] += 1 if kind == "kstart" else -1
            peak[user] = max(peak[user], running[user])
        assert peak == {"alice": 1, "bob": 1, "carol": 1}, f"per key at once: {peak}"


async def test_a_rate_holds_across_processes(cluster: ClusterFactory) -> None:
    async with cluster() as nodes:
        for _ in range(3):
            await nodes.worker("--workers", "2")
        client = nodes.client()
        async with client:
            handles = [await client.submit("mp:rated") for _ in range(8)]

            async def settled() -> list[Any]:
                snapshots = [await client.get(handle.id) for handle in handles]
                return [s for s in snapshots if s.state is TaskState.QUEUED and s.waiting_for]

            with anyio.fail_after(20):
                while len(waiting := await settled()) < 3:  # noqa: ASYNC110 - the store says it
                    await anyio.sleep(0.05)
            for snapshot in waiting:
                assert await client.cancel(snapshot.id, reason="the test is over")
        assert len(nodes.entries("ran")) == 5, "5/minute over three processes"
        assert {s.waiting_for for s in waiting} == {"rate limit 5/minute"}
        assert {s.attempts for s in waiting} == {0}


async def test_a_client_cancels_a_task_another_process_runs(
    cluster: ClusterFactory,
) -> None:
    async with cluster() as nodes:
        await nodes.worker()
        client = nodes.client()
        async with client:
            handle = await client.submit("mp:gated")
            await nodes.wait_for(lambda: len(nodes.entries("start")) == 1)
            assert await client.cancel(handle.id, reason="changed my mind")
            with pytest.raises(TaskCancelledError, match="changed my mind"):
                await handle.result(timeout=10)
            assert (await client.get(handle.id)).state is TaskState.CANCELLED
        assert nodes.entries("end") == []


async def test_a_task_waiting_for_input_is_answered_by_a_client_and_survives_its_worker(
    cluster: ClusterFactory,
) -> None:
    """A worker process asks; the client answers (checked against the stored schema)
    and the worker finishes it. Another asks, its worker is killed while it waits, and a
    new worker finishes it once the client answers."""
    async with cluster() as nodes:
        first = await nodes.worker()
        client = nodes.client()
        asked = EventRecorder(client, timeout=20)
        async with client:
            handle = await client.submit("mp:ask")
            await asked.wait_for(TaskInputRequired, task_id=handle.id)
            with pytest.raises(InvalidAnswer, match="name"):
                await client.respond(handle.id, {"branch": "main"})
            await client.respond(handle.id, {"name": "main"})
            assert await handle.result(timeout=10) == "main"

            orphan = await client.submit("mp:ask")
            await asked.wait_for(TaskInputRequired, task_id=orphan.id)
            first.send_signal(signal.SIGKILL)
            await first.wait()
            second = await nodes.worker()
            waiting = await client.get(orphan.id)
            assert waiting.state is TaskState.WAITING and waiting.question is not None
            await client.respond(orphan.id, {"name": "hotfix"})
            assert await orphan.result(timeout=10) == "hotfix"
        runs = {task_id: pid for kind, task_id, pid, _ in nodes.entries("end")}
    assert runs[handle.id] == first.pid
    assert runs[orphan.id] == second.pid


async def test_a_cancel_asked_of_a_dead_worker_holds_when_its_task_is_reaped(
    cluster: ClusterFactory,
) -> None:
    """The worker died before it heard the request: the next worker reaps the task
    as cancelled and never runs it again."""
    async with cluster() as nodes:
        doomed = await nodes.worker()
        client = nodes.client()
        async with client:
            handle = await client.submit("mp:gated")
            await nodes.wait_for(lambda: len(nodes.entries("start")) == 1)
            doomed.send_signal(signal.SIGKILL)
            await doomed.wait()
            answers: list[bool] = []

            async def cancel() -> None:
                answers.append(await client.cancel(handle.id, reason="not any more"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(cancel)
                await nodes.worker()  # reaps the dead pid's task at once: cancelled
            assert answers == [True]
            with pytest.raises(TaskCancelledError, match="not any more"):
                await handle.result(timeout=10)
            snapshot = await client.get(handle.id)
        assert snapshot.state is TaskState.CANCELLED
        assert len(nodes.entries("start")) == 1, "it never ran again"


async def test_sigterm_hands_a_running_task_back_and_another_worker_finishes_it(
    cluster: ClusterFactory,
) -> None:
    async with cluster() as nodes:
        leaving = await nodes.worker("--grace", "0.2")
        client = nodes.client()
        async with client:
            handle = await client.submit("mp:gated")
            await nodes.wait_for(lambda: len(nodes.entries("start")) == 1)
            leaving.send_signal(signal.SIGTERM)
            with anyio.fail_after(10):
                assert await leaving.wait() == 0
            staying = await nodes.worker()
            await nodes.wait_for(lambda: len(nodes.entries("start")) == 2)
            nodes.open_gate()
            assert await handle.result(timeout=20) == "through"
            snapshot = await client.get(handle.id)
        assert [pid for _, _, pid, _ in nodes.entries("end")] == [staying.pid]
        assert snapshot.attempts == 1  # the attempt the stop interrupted is not counted


async def test_a_chain_submitted_by_a_client_runs_in_order_across_worker_processes(
    cluster: ClusterFactory,
) -> None:
    async with cluster() as nodes:
        workers = {(await nodes.worker()).pid, (await nodes.worker()).pid}
        client = nodes.client()
        async with client:
            handles = await client.chain(*[("mp:join", f"s{i}") for i in range(6)])
            joined = await client.submit("mp:join", "all", after=handles[::-1])
            results = [await handle.result(timeout=20) for handle in [*handles, joined]]
        expected: list[Any] = [["s0"]]
        for i in range(1, 6):
            expected.append([f"s{i}", expected[-1]])
        assert results[:-1] == expected
        assert results[-1] == ["all", *expected[::-1]]
        ran = {task_id: (pid, at) for _, task_id, pid, at in nodes.entries("ran")}
        times = [ran[handle.id][1] for handle in handles]
        assert times == sorted(times)
        assert {pid for pid, _ in ran.values()} <= workers


async def test_a_child_runs_after_the_process_that_finished_its_parent_dies(
    cluster: ClusterFactory,
) -> None:
    """The parent's final commit frees the child by itself: the process that
    committed it is killed at once, and the child runs in a worker started later."""
    async with cluster() as nodes:
        doomed = await nodes.worker("--workers", "1")
        client = nodes.client()
        async with client:
            parent = await client.submit("mp:gated")
            await nodes.wait_for(lambda: len(nodes.entries("start")) == 1)
            # Its one worker takes this (priority 10, and it never ends) once the
            # parent is done, so the child is left to whoever comes next.
            blocker = await client.submit("mp:stuck")
            child = await client.submit("mp:join", "child", after=[parent])
            assert (await client.get(child.id)).waiting_for == "parents"
            nodes.open_gate()
            assert await parent.result(timeout=20) == "through"
            await nodes.wait_for(lambda: len(nodes.entries("start")) == 2)
            doomed.send_signal(signal.SIGKILL)
            await doomed.wait()
            survivor = await nodes.worker()
            assert await child.result(timeout=20) == ["child", "through"]
            assert (await client.get(blocker.id)).state is not TaskState.COMPLETED
        [(_, _, pid, _)] = [entry for entry in nodes.entries("ran") if entry[1] == child.id]
        assert pid == survivor.pid


def test_only_a_worker_on_this_host_whose_process_is_gone_is_known_dead() -> None:
    import socket

    host = socket.gethostname()
    assert is_dead(f"{host}:{2**22 + 12345}:abc")  # beyond pid_max: no such process
    assert not is_dead(f"{host}:{os.getppid()}:abc")  # alive
    assert not is_dead(f"elsewhere:{2**22 + 12345}:abc")  # another machine: its lease decides
    assert not is_dead("not-a-worker-id")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("store_kind", ["redis"])  # SQLite's run this size: the benchmark's
async def test_four_workers_run_ten_thousand_tasks_each_exactly_once(
    cluster: ClusterFactory,
) -> None:
    tasks = 10_000
    async with cluster() as nodes:
        workers = [await nodes.worker("--workers", "20") for _ in range(4)]
        client = nodes.client()
        finals: list[str] = []
        client.on("task-completed", lambda event: finals.append(event.task_id))
        async with client:
            submitted: list[str] = []

            async def submit(count: int) -> None:
                for _ in range(count):
                    handle = await client.submit("mp:count")
                    submitted.append(handle.id)

            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(submit, tasks // 50)
            await nodes.wait_for(lambda: len(finals) >= tasks, timeout=150)
            stats = await client.stats()
        assert stats.by_state == {TaskState.COMPLETED: tasks}
        ran = [task_id for _, task_id, _, _ in nodes.entries("ran")]
        assert len(ran) == tasks and set(ran) == set(submitted)  # each ran once
        assert sorted(finals) == sorted(submitted)  # each final event heard once
        assert {pid for _, _, pid, _ in nodes.entries("ran")} <= {w.pid for w in workers}
