"""Taskbus on Redis beside dramatiq, arq and SAQ: one submitter, two worker processes.

Every system runs on the same Redis server in the same run, on its own keys in
one database (``--url``, database 14 by default), which is flushed (FLUSHDB)
before each measure. The submitting process is this script; each worker
process is this script run again with ``--worker``, started and ready before
any clock starts, and stopped (killed on error) after each measure.

- taskbus: ``TaskBus(store=RedisStore(url, prefix=...), workers=50)`` in each
  worker process; the submitter's bus has ``workers=0`` (a client). Events
  reach every process through the store's event stream.
- dramatiq (its Redis broker, default middleware): ``actor.send()`` from the
  submitter; each worker process runs ``dramatiq.Worker(broker,
  worker_threads=8)`` (the CLI's default).
- arq: ``await pool.enqueue_job()`` from the submitter; each worker process runs
  ``arq.Worker(max_jobs=50, poll_delay=0.005)``: arq looks for jobs by polling,
  every 0.5 s and 10 jobs at a time by default.
- SAQ: ``await queue.enqueue()`` from the submitter; each worker process runs
  ``saq.Worker(queue, concurrency=50)`` (each of the 50 waits in a BLMOVE).

A peer has no event a submitter could listen to, so each worker process counts
the tasks its peer has recorded as done (dramatiq: the middleware hook
``after_ack``; arq: ``after_job_end``, once the result is stored; SAQ:
``after_process``, once the job is stored complete), writes that count to a
Redis key of its own whenever it changes (checked every 1 ms), and the
submitter polls the sum every 1 ms: a few ms at the end of a run, and no
round trip per task.

Cases, one JSON line per system (``"system"``); taskbus's line also carries the
peers' figures from the same run, the ratios and the targets:

- ``end-to-end``: 20,000 no-op tasks submitted one after another by one
  coroutine (dramatiq: one thread), timed from the first submit until the
  submitter knows every one is done (taskbus: its ``task-completed`` listener
  has heard them all). ``exactly_once``: every task ran once over the worker
  processes (each writes what it ran) and was counted done once; for taskbus
  also the store counts all of them completed, none in another state, and the
  submitter heard each final event once. Targets: 10,000 tasks/s, and 4 times
  dramatiq's rate.
- ``submit-to-start``: from ``time.time()`` just before the submit to
  ``time.time()`` as the handler starts in a worker process (it pushes that to
  a Redis list the submitter waits on; one machine, one clock), one task at a
  time, each submitted once the previous one is done and the workers idle;
  1,000 samples after 50 warm-up tasks, p50 and p99. Target p50 <= 1,000 us.
- ``memory-per-queued-task``: no worker process; 20,000 tasks whose input is a
  two-field pydantic model (``url: str, depth: int``; the peers get the same two
  arguments), Redis ``INFO memory`` ``used_memory`` after minus before, per
  task. Target <= 500 bytes.
- ``event-latency`` (taskbus only): a worker's ``task-completed`` (its
  ``timestamp``, wall clock) to the submitter's listener (``time.time()``), p50
  and p99 over every task of the end-to-end run.

A peer that fails gets a line with ``"error"``; the others go on. ``--quick``
shares one set of worker processes per system between end-to-end and
submit-to-start. ``--url``, ``--tasks``, ``--processes``, ``--workers`` (per
process: taskbus workers, arq ``max_jobs``, SAQ ``concurrency``),
``--dramatiq-threads``, ``--arq-poll-delay``, ``--samples``, ``--memory-tasks``,
``--rounds`` (end-to-end; the best round counts), ``--peers``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named redis.py, and Python puts its folder first on sys.path, where
# `import redis` (redis-py, which taskbus, dramatiq and arq import) would find this
# file. Move the folder to the end: redis-py comes first, `_reference` is still found.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
sys.path.append(str(_HERE))

import asyncio
import gc
import json
import logging
import os
import select
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio
import anyio.to_thread
import redis
import redis.asyncio
from _reference import FetchParams, emit, median, parser, payload, percentile, rounded

from taskbus import TaskBus, TaskCompleted, TaskContext, TaskState
from taskbus.stores.redis import RedisStore

DEFAULT_URL = "redis://127.0.0.1:6379/14"
PEERS = ("dramatiq", "arq", "saq")
NOOP, START, FETCH = "bench_noop", "bench_start", "bench_fetch"
#: Each system's own keys: taskbus's store prefix, dramatiq's namespace, arq's queue.
TASKBUS_PREFIX = "bench-taskbus:"
DRAMATIQ_NAMESPACE = "bench-dramatiq"
DRAMATIQ_QUEUE = "bench"
ARQ_QUEUE = "bench-arq:queue"
SAQ_QUEUE = "bench-saq"
READY = b"ready\n"
#: Seconds to wait for worker processes to start or to stop.
START_TIMEOUT = 30.0
#: Stop waiting for the rest of a run once nothing has finished for this long.
QUIET = 5.0
#: How often a worker process publishes its done count, and the submitter polls them.
POLL = 0.001
#: Times a memory measure is taken while other databases of the server change.
MEMORY_ATTEMPTS = 3

TARGET_TASKS_PER_S = 10_000
TARGET_RATIO_TO_DRAMATIQ = 4.0
TARGET_P50_US = 1_000
TARGET_BYTES_PER_TASK = 500


def signal_key(system: str, name: str) -> str:
    """A key the benchmark itself uses to hear from a worker process."""
    return f"bench-signal:{system}:{name}"


def done_keys(system: str, processes: int) -> list[str]:
    return [signal_key(system, f"done:{index}") for index in range(processes)]


@dataclass
class Settings:
    url: str
    tasks: int
    processes: int
    workers: int
    dramatiq_threads: int
    arq_poll_delay: float
    samples: int
    warmup: int
    memory_tasks: int
    rounds: int
    peers: tuple[str, ...]
    quick: bool = False


# -- worker processes -----------------------------------------------------------------


def _say_ready() -> None:
    sys.stdout.buffer.write(READY)
    sys.stdout.flush()


class _Count:
    """A count bumped from any thread."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.value += 1


def _publish_sync(client: redis.Redis, key: str, count: _Count, stop: threading.Event) -> None:
    last = -1
    while True:
        stopping = stop.wait(POLL)
        if count.value != last:
            last = count.value
            client.set(key, last)
        if stopping:
            return


async def _publish_async(client: Any, key: str, count: _Count) -> None:
    last = -1
    while True:
        if count.value != last:
            last = count.value
            await client.set(key, last)
        await asyncio.sleep(POLL)


async def taskbus_worker(config: dict[str, Any]) -> list[str]:
    """Run taskbus tasks until stdin closes; return the ids of the tasks it ran."""
    ran: list[str] = []
    signal = redis.asyncio.Redis.from_url(config["url"])
    starts = signal_key("taskbus", "starts")
    bus = TaskBus(store=RedisStore(config["url"], prefix=TASKBUS_PREFIX), workers=config["workers"])

    @bus.task(NOOP)
    async def noop(ctx: TaskContext) -> None:
        ran.append(ctx.task_id)

    @bus.task(START)
    async def start(ctx: TaskContext) -> None:
        started = time.time()
        await signal.rpush(starts, repr(started))

    try:
        async with bus:
            _say_ready()
            await anyio.to_thread.run_sync(sys.stdin.buffer.read)  # until the parent closes it
    finally:
        await signal.aclose()
    return ran


def dramatiq_setup(
    url: str, ran: list[int] | None = None, done: _Count | None = None
) -> tuple[Any, dict[str, Any], redis.Redis]:
    """dramatiq's Redis broker, its three actors and a client for signals. A worker
    process passes `ran` (its noop actor notes each task there) and `done` (bumped
    as each message is acknowledged); the submitter only sends."""
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dramatiq.middleware import Middleware

    broker = RedisBroker(url=url, namespace=DRAMATIQ_NAMESPACE)
    signal = redis.Redis.from_url(url)
    starts = signal_key("dramatiq", "starts")
    runs: list[int] = ran if ran is not None else []

    if done is not None:
        counter = done

        class CountAcks(Middleware):
            def after_ack(self, broker: Any, message: Any) -> None:
                counter.bump()

        broker.add_middleware(CountAcks())

    def noop(n: int) -> None:
        runs.append(n)

    def start(n: int) -> None:
        started = time.time()
        signal.rpush(starts, repr(started))

    def fetch(url: str, depth: int) -> None:
        raise AssertionError("nobody runs the queued fetch tasks")

    actors = {
        name: dramatiq.actor(
            fn, broker=broker, actor_name=name, queue_name=DRAMATIQ_QUEUE, max_retries=0
        )
        for name, fn in ((NOOP, noop), (START, start), (FETCH, fetch))
    }
    return broker, actors, signal


def dramatiq_worker(config: dict[str, Any]) -> list[int]:
    """Run dramatiq messages until stdin closes; return the numbers of the tasks it ran."""
    import dramatiq

    ran: list[int] = []
    done = _Count()
    broker, _, signal = dramatiq_setup(config["url"], ran, done)
    worker = dramatiq.Worker(broker, worker_threads=config["workers"])
    stop = threading.Event()
    publish = threading.Thread(
        target=_publish_sync, args=(signal, config["done_key"], done, stop), daemon=True
    )
    worker.start()
    publish.start()
    try:
        _say_ready()
        sys.stdin.buffer.read()  # until the parent closes it
    finally:
        worker.stop()
        stop.set()
        publish.join()
        broker.close()
        signal.close()
    return ran


async def arq_worker(config: dict[str, Any]) -> list[int]:
    """Run arq jobs until stdin closes; return the numbers of the jobs it ran."""
    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    ran: list[int] = []
    done = _Count()
    starts = signal_key("arq", "starts")
    ready = asyncio.Event()

    async def noop(ctx: dict[str, Any], n: int) -> None:
        ran.append(n)

    async def start(ctx: dict[str, Any], n: int) -> None:
        started = time.time()
        await ctx["redis"].rpush(starts, repr(started))

    async def on_startup(ctx: dict[str, Any]) -> None:
        ready.set()

    async def after_job_end(ctx: dict[str, Any]) -> None:
        done.bump()

    worker = Worker(
        functions=[func(noop, name=NOOP), func(start, name=START)],
        queue_name=ARQ_QUEUE,
        redis_settings=RedisSettings.from_dsn(config["url"]),
        max_jobs=config["workers"],
        poll_delay=config["poll_delay"],
        handle_signals=False,
        on_startup=on_startup,
        after_job_end=after_job_end,
    )
    signal = redis.asyncio.Redis.from_url(config["url"])
    main = asyncio.create_task(worker.main())
    publish = asyncio.create_task(_publish_async(signal, config["done_key"], done))
    try:
        started = asyncio.create_task(ready.wait())
        await asyncio.wait({main, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if main.done():
            main.result()  # its error
            raise RuntimeError("the arq worker stopped before it started")
        _say_ready()
        await asyncio.to_thread(sys.stdin.buffer.read)  # until the parent closes it
    finally:
        for task in (main, publish):
            task.cancel()
        await asyncio.gather(main, publish, return_exceptions=True)
        await signal.set(config["done_key"], done.value)
        await worker.close()
        await signal.aclose()
    return ran


async def saq_worker(config: dict[str, Any]) -> list[int]:
    """Run SAQ jobs until stdin closes; return the numbers of the jobs it ran."""
    from saq import Queue, Worker

    ran: list[int] = []
    done = _Count()
    starts = signal_key("saq", "starts")
    ready = asyncio.Event()
    signal = redis.asyncio.Redis.from_url(config["url"])

    async def noop(ctx: dict[str, Any], *, n: int) -> None:
        ran.append(n)

    async def start(ctx: dict[str, Any], *, n: int) -> None:
        started = time.time()
        await signal.rpush(starts, repr(started))

    async def startup(ctx: dict[str, Any]) -> None:
        ready.set()

    async def after_process(ctx: dict[str, Any]) -> None:
        done.bump()

    # Its stop cancels the idle dequeuers and says so (a warning) every time.
    logging.getLogger("saq").setLevel(logging.ERROR)
    queue = Queue.from_url(config["url"], name=SAQ_QUEUE)
    await queue.connect()
    worker = Worker(
        queue,
        [(NOOP, noop), (START, start)],
        concurrency=config["workers"],
        startup=startup,
        after_process=after_process,
    )
    main = asyncio.create_task(worker.start())
    publish = asyncio.create_task(_publish_async(signal, config["done_key"], done))
    try:
        started = asyncio.create_task(ready.wait())
        await asyncio.wait({main, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if main.done():
            main.result()  # its error
            raise RuntimeError("the SAQ worker stopped before it started")
        _say_ready()
        await asyncio.to_thread(sys.stdin.buffer.read)  # until the parent closes it
    finally:
        await worker.stop()
        for task in (main, publish):
            task.cancel()
        await asyncio.gather(main, publish, return_exceptions=True)
        await signal.set(config["done_key"], done.value)
        await queue.disconnect()
        await signal.aclose()
    return ran


def worker_main(config: dict[str, Any]) -> None:
    system = config["system"]
    ran: list[Any]
    if system == "taskbus":
        ran = asyncio.run(taskbus_worker(config))
    elif system == "dramatiq":
        ran = dramatiq_worker(config)
    elif system == "arq":
        ran = asyncio.run(arq_worker(config))
    elif system == "saq":
        ran = asyncio.run(saq_worker(config))
    else:
        raise ValueError(f"no such system: {system!r}")
    Path(config["runs_file"]).write_text("".join(f"{each}\n" for each in ran))


# -- starting and stopping them ---------------------------------------------------------


@dataclass
class Session:
    """Worker processes of one system; after the `with` block, what each one ran."""

    system: str
    done_keys: list[str]
    ran: Counter[str] = field(default_factory=Counter)


@contextmanager
def worker_processes(system: str, settings: Settings) -> Iterator[Session]:
    """Start `settings.processes` worker processes of `system`, wait until each is ready;
    stop them when the block ends (kill them if it fails), then read what they ran."""
    workers = settings.dramatiq_threads if system == "dramatiq" else settings.workers
    session = Session(system, done_keys(system, settings.processes))
    with tempfile.TemporaryDirectory(prefix="taskbus-redis-bench-") as directory:
        runs_files = [Path(directory) / f"runs-{n}.txt" for n in range(settings.processes)]
        processes: list[subprocess.Popen[bytes]] = []
        failed = True
        try:
            for runs_file, done_key in zip(runs_files, session.done_keys, strict=True):
                config = {
                    "system": system,
                    "url": settings.url,
                    "workers": workers,
                    "poll_delay": settings.arq_poll_delay,
                    "runs_file": str(runs_file),
                    "done_key": done_key,
                }
                command = [sys.executable, __file__, "--worker", json.dumps(config)]
                processes.append(
                    subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                )
            deadline = time.monotonic() + START_TIMEOUT
            for process in processes:
                _wait_ready(process, deadline)
            yield session
            failed = False
        finally:
            _stop(processes, kill=failed)
        for runs_file in runs_files:
            session.ran.update(runs_file.read_text().split())


def _wait_ready(process: subprocess.Popen[bytes], deadline: float) -> None:
    assert process.stdout is not None
    fd = process.stdout.fileno()
    received = b""
    while not received.endswith(READY):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise RuntimeError(f"a worker process was not ready within {START_TIMEOUT:g}s")
        chunk = os.read(fd, 1024)
        if not chunk:
            raise RuntimeError(f"a worker process exited before it was ready: {process.wait()}")
        received += chunk
    if received != READY:
        raise RuntimeError(f"a worker process said {received!r} before it was ready")


def _stop(processes: list[subprocess.Popen[bytes]], *, kill: bool) -> None:
    """Close every worker's stdin (each stops, then writes what it ran); kill any that
    does not stop in time, and all of them at once if `kill`."""
    for process in processes:
        if process.stdin is not None:
            try:
                process.stdin.close()
            except OSError:
                pass
        if kill:
            process.kill()
    deadline = time.monotonic() + START_TIMEOUT
    late = []
    for process in processes:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            late.append(process.pid)
        if process.stdout is not None:
            process.stdout.close()
    if kill:
        return
    if late:
        raise RuntimeError(f"worker processes {late} did not stop within {START_TIMEOUT:g}s")
    codes = [process.returncode for process in processes]
    if any(codes):
        raise RuntimeError(f"worker processes exited with {codes}")


# -- Redis itself -----------------------------------------------------------------------


def flushdb(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def server_info(url: str) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    try:
        info = client.info("server")
        db = client.connection_pool.connection_kwargs.get("db", 0)
    finally:
        client.close()
    return {"redis_version": info["redis_version"], "db": db}


def _total(values: list[Any]) -> int:
    return sum(int(value or 0) for value in values)


def poll_done_sync(client: redis.Redis, keys: list[str], tasks: int) -> tuple[float, int]:
    """Poll the worker processes' done counts until they add up to `tasks` (or stop
    moving for `QUIET` s): the moment the last one was seen, and the count."""
    seen, moved = 0, time.perf_counter()
    while True:
        total = _total(client.mget(keys))
        now = time.perf_counter()
        if total != seen:
            seen, moved = total, now
        if seen >= tasks or now - moved > QUIET:
            return moved, seen
        time.sleep(POLL)


async def poll_done_async(client: Any, keys: list[str], tasks: int) -> tuple[float, int]:
    """`poll_done_sync` on asyncio."""
    seen, moved = 0, time.perf_counter()
    while True:
        total = _total(await client.mget(keys))
        now = time.perf_counter()
        if total != seen:
            seen, moved = total, now
        if seen >= tasks or now - moved > QUIET:
            return moved, seen
        await asyncio.sleep(POLL)


# -- end to end -------------------------------------------------------------------------


@dataclass
class Run:
    """One end-to-end run of one system."""

    elapsed: float = 0.0
    submitting: float = 0.0
    last_heard: float = 0.0
    done: int = 0
    submitted: list[str] = field(default_factory=list)
    finals: Counter[str] = field(default_factory=Counter)
    latencies_us: list[float] = field(default_factory=list)
    ran: Counter[str] = field(default_factory=Counter)
    completed_in_store: int | None = None
    other_in_store: int | None = None


def _client_bus(store: RedisStore) -> TaskBus:
    """The submitter's bus: runs nothing, knows the task types."""
    bus = TaskBus(store=store, workers=0)

    @bus.task(NOOP)
    async def noop(ctx: TaskContext) -> None:
        raise AssertionError("the submitting process runs no task")

    @bus.task(START)
    async def start(ctx: TaskContext) -> None:
        raise AssertionError("the submitting process runs no task")

    @bus.task(FETCH)
    async def fetch(ctx: TaskContext, params: FetchParams) -> None:
        raise AssertionError("the submitting process runs no task")

    return bus


def _listen(bus: TaskBus, run: Run, tasks: int) -> anyio.Event:
    """Count each task-completed event and its latency; the event is set at `tasks`."""
    done = anyio.Event()
    wall, perf_counter = time.time, time.perf_counter
    finals, latencies = run.finals, run.latencies_us

    def completed(event: TaskCompleted) -> None:
        latencies.append((wall() - event.timestamp.timestamp()) * 1e6)
        run.last_heard = perf_counter()
        finals[event.task_id] += 1
        if len(latencies) >= tasks:
            done.set()

    bus.on("task-completed", completed)
    return done


async def taskbus_end_to_end(settings: Settings) -> Run:
    run = Run()
    tasks = settings.tasks
    store = RedisStore(settings.url, prefix=TASKBUS_PREFIX)
    bus = _client_bus(store)
    done = _listen(bus, run, tasks)
    submitted = run.submitted
    async with bus:
        gc.collect()
        start = time.perf_counter()
        for _ in range(tasks):
            handle = await bus.submit(NOOP)
            submitted.append(handle.id)
        run.submitting = time.perf_counter() - start
        heard = -1
        while not done.is_set() and len(run.latencies_us) > heard:
            heard = len(run.latencies_us)
            with anyio.move_on_after(QUIET):
                await done.wait()
        if not run.latencies_us:
            raise RuntimeError("taskbus: no task-completed event heard")
        run.elapsed = run.last_heard - start
        run.done = len(run.finals)
        stats = await bus.stats()
    run.completed_in_store = stats.by_state.get(TaskState.COMPLETED, 0)
    run.other_in_store = sum(stats.by_state.values()) - run.completed_in_store
    return run


def dramatiq_end_to_end(settings: Settings, session: Session) -> Run:
    run = Run()
    broker, actors, signal = dramatiq_setup(settings.url)
    send = actors[NOOP].send
    try:
        gc.collect()
        start = time.perf_counter()
        for n in range(settings.tasks):
            send(n)
        run.submitting = time.perf_counter() - start
        last, run.done = poll_done_sync(signal, session.done_keys, settings.tasks)
        if not run.done:
            raise RuntimeError(f"dramatiq: no task done in {QUIET:g}s")
        run.elapsed = last - start
    finally:
        broker.close()
        signal.close()
    run.submitted = [str(n) for n in range(settings.tasks)]
    return run


async def arq_end_to_end(settings: Settings, session: Session) -> Run:
    from arq import create_pool
    from arq.connections import RedisSettings

    run = Run()
    pool = await create_pool(RedisSettings.from_dsn(settings.url), default_queue_name=ARQ_QUEUE)
    signal = redis.asyncio.Redis.from_url(settings.url)
    try:
        gc.collect()
        start = time.perf_counter()
        for n in range(settings.tasks):
            if await pool.enqueue_job(NOOP, n) is None:
                raise RuntimeError("arq refused a job (its id was taken)")
        run.submitting = time.perf_counter() - start
        last, run.done = await poll_done_async(signal, session.done_keys, settings.tasks)
        if not run.done:
            raise RuntimeError(f"arq: no job done in {QUIET:g}s")
        run.elapsed = last - start
    finally:
        await pool.aclose()
        await signal.aclose()
    run.submitted = [str(n) for n in range(settings.tasks)]
    return run


async def saq_end_to_end(settings: Settings, session: Session) -> Run:
    from saq import Queue

    run = Run()
    queue = Queue.from_url(settings.url, name=SAQ_QUEUE)
    await queue.connect()
    signal = redis.asyncio.Redis.from_url(settings.url)
    try:
        gc.collect()
        start = time.perf_counter()
        for n in range(settings.tasks):
            if await queue.enqueue(NOOP, n=n) is None:
                raise RuntimeError("SAQ refused a job (its key was taken)")
        run.submitting = time.perf_counter() - start
        last, run.done = await poll_done_async(signal, session.done_keys, settings.tasks)
        if not run.done:
            raise RuntimeError(f"SAQ: no job done in {QUIET:g}s")
        run.elapsed = last - start
    finally:
        await queue.disconnect()
        await signal.aclose()
    run.submitted = [str(n) for n in range(settings.tasks)]
    return run


def end_to_end(system: str, settings: Settings, session: Session) -> Run:
    if system == "taskbus":
        return asyncio.run(taskbus_end_to_end(settings))
    if system == "dramatiq":
        return dramatiq_end_to_end(settings, session)
    if system == "arq":
        return asyncio.run(arq_end_to_end(settings, session))
    return asyncio.run(saq_end_to_end(settings, session))


@dataclass
class Check:
    """Whether every task of a run ran, and was done, exactly once."""

    tasks: int
    done: int
    ran_once: int
    ran_more: int
    never_ran: int
    unknown_ran: int
    finals_heard_once: int | None
    completed_in_store: int | None
    other_in_store: int | None

    @property
    def exactly_once(self) -> bool:
        heard = self.finals_heard_once in (None, self.tasks)
        stored = self.completed_in_store in (None, self.tasks) and not self.other_in_store
        return (
            self.ran_once == self.done == self.tasks
            and self.ran_more == self.never_ran == self.unknown_ran == 0
            and heard
            and stored
        )


def check(run: Run, tasks: int, *, events: bool) -> Check:
    submitted = set(run.submitted)
    return Check(
        tasks=tasks,
        done=run.done,
        ran_once=sum(1 for task in submitted if run.ran[task] == 1),
        ran_more=sum(1 for task in submitted if run.ran[task] > 1),
        never_ran=sum(1 for task in submitted if run.ran[task] == 0),
        unknown_ran=sum(1 for task in run.ran if task not in submitted),
        finals_heard_once=(
            sum(1 for task in submitted if run.finals[task] == 1) if events else None
        ),
        completed_in_store=run.completed_in_store,
        other_in_store=run.other_in_store,
    )


# -- submit to start --------------------------------------------------------------------


async def taskbus_submit_to_start(settings: Settings) -> list[float]:
    store = RedisStore(settings.url, prefix=TASKBUS_PREFIX)
    bus = _client_bus(store)
    finished = [0]
    wake = [anyio.Event()]

    def completed(event: TaskCompleted) -> None:
        finished[0] += 1
        wake[0].set()

    bus.on("task-completed", completed)
    signal = redis.asyncio.Redis.from_url(settings.url)
    starts = signal_key("taskbus", "starts")
    latencies: list[float] = []
    wall = time.time
    try:
        async with bus:
            for n in range(settings.warmup + settings.samples):
                submitted = wall()
                await bus.submit(START)
                answer = await signal.blpop([starts], timeout=int(START_TIMEOUT))
                if answer is None:
                    raise RuntimeError("taskbus: a task did not start")
                if n >= settings.warmup:
                    latencies.append((float(answer[1]) - submitted) * 1e6)
                with anyio.fail_after(START_TIMEOUT):  # until it is done: the workers idle
                    while finished[0] <= n:
                        wake[0] = anyio.Event()
                        await wake[0].wait()
    finally:
        await signal.aclose()
    return latencies


def dramatiq_submit_to_start(settings: Settings, session: Session) -> list[float]:
    broker, actors, signal = dramatiq_setup(settings.url)
    send = actors[START].send
    starts = signal_key("dramatiq", "starts")
    latencies: list[float] = []
    wall = time.time
    try:
        base = _total(signal.mget(session.done_keys))  # done before (a --quick run's)
        for n in range(settings.warmup + settings.samples):
            submitted = wall()
            send(n)
            answer = signal.blpop([starts], timeout=int(START_TIMEOUT))
            if answer is None:
                raise RuntimeError("dramatiq: a task did not start")
            if n >= settings.warmup:
                latencies.append((float(answer[1]) - submitted) * 1e6)
            seen = poll_done_sync(signal, session.done_keys, base + n + 1)[1]
            if seen <= base + n:
                raise RuntimeError(f"dramatiq: task {n} not acknowledged in {QUIET:g}s ({seen})")
    finally:
        broker.close()
        signal.close()
    return latencies


async def arq_submit_to_start(settings: Settings, session: Session) -> list[float]:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(settings.url), default_queue_name=ARQ_QUEUE)
    signal = redis.asyncio.Redis.from_url(settings.url)
    starts = signal_key("arq", "starts")
    latencies: list[float] = []
    wall = time.time
    try:
        base = _total(await signal.mget(session.done_keys))  # done before (a --quick run's)
        for n in range(settings.warmup + settings.samples):
            submitted = wall()
            await pool.enqueue_job(START, n)
            answer = await signal.blpop([starts], timeout=int(START_TIMEOUT))
            if answer is None:
                raise RuntimeError("arq: a job did not start")
            if n >= settings.warmup:
                latencies.append((float(answer[1]) - submitted) * 1e6)
            seen = (await poll_done_async(signal, session.done_keys, base + n + 1))[1]
            if seen <= base + n:
                raise RuntimeError(f"arq: job {n} not done in {QUIET:g}s ({seen})")
    finally:
        await pool.aclose()
        await signal.aclose()
    return latencies


async def saq_submit_to_start(settings: Settings, session: Session) -> list[float]:
    from saq import Queue

    queue = Queue.from_url(settings.url, name=SAQ_QUEUE)
    await queue.connect()
    signal = redis.asyncio.Redis.from_url(settings.url)
    starts = signal_key("saq", "starts")
    latencies: list[float] = []
    wall = time.time
    try:
        base = _total(await signal.mget(session.done_keys))  # done before (a --quick run's)
        for n in range(settings.warmup + settings.samples):
            submitted = wall()
            await queue.enqueue(START, n=n)
            answer = await signal.blpop([starts], timeout=int(START_TIMEOUT))
            if answer is None:
                raise RuntimeError("SAQ: a job did not start")
            if n >= settings.warmup:
                latencies.append((float(answer[1]) - submitted) * 1e6)
            seen = (await poll_done_async(signal, session.done_keys, base + n + 1))[1]
            if seen <= base + n:
                raise RuntimeError(f"SAQ: job {n} not done in {QUIET:g}s ({seen})")
    finally:
        await queue.disconnect()
        await signal.aclose()
    return latencies


def submit_to_start(system: str, settings: Settings, session: Session) -> list[float]:
    if system == "taskbus":
        return asyncio.run(taskbus_submit_to_start(settings))
    if system == "dramatiq":
        return dramatiq_submit_to_start(settings, session)
    if system == "arq":
        return asyncio.run(arq_submit_to_start(settings, session))
    return asyncio.run(saq_submit_to_start(settings, session))


def with_workers(
    system: str, settings: Settings, *, runs: bool, starts: bool
) -> tuple[Run | None, list[float] | None]:
    """On a flushed database, with worker processes started for it: an end-to-end run
    if `runs`, then the submit-to-start samples if `starts`."""
    flushdb(settings.url)
    run: Run | None = None
    latencies: list[float] | None = None
    with worker_processes(system, settings) as session:
        if runs:
            run = end_to_end(system, settings, session)
        if starts:
            latencies = submit_to_start(system, settings, session)
    if run is not None:
        run.ran = session.ran  # the start handlers note nothing there
    return run, latencies


# -- memory per queued task -------------------------------------------------------------


@dataclass
class Snapshot:
    """The server's `used_memory`, what this database's keys take, the others' key counts."""

    used: int
    keys: int
    other_dbs: dict[str, int]


def snapshot(client: redis.Redis) -> Snapshot:
    """Taken with the benchmark's clients connected, so their buffers count on both sides."""
    used = int(client.info("memory")["used_memory"])
    pipe = client.pipeline(transaction=False)
    for key in client.scan_iter(count=1000):
        pipe.memory_usage(key, samples=0)
    keys = sum(int(size or 0) for size in pipe.execute())
    own = f"db{client.connection_pool.connection_kwargs.get('db', 0)}"
    keyspace = client.info("keyspace")
    other_dbs = {db: int(info["keys"]) for db, info in keyspace.items() if db != own}
    return Snapshot(used, keys, other_dbs)


@dataclass
class Memory:
    before: Snapshot
    after: Snapshot
    queued: int
    event_log: int | None = None
    attempts: int = 1

    @property
    def others_changed(self) -> bool:
        return self.before.other_dbs != self.after.other_dbs


async def taskbus_memory(settings: Settings) -> Memory:
    store = RedisStore(settings.url, prefix=TASKBUS_PREFIX)
    bus = _client_bus(store)
    client = redis.Redis.from_url(settings.url)
    try:
        async with bus:
            await store.flush()
            gc.collect()
            before = snapshot(client)
            for n in range(settings.memory_tasks):
                await bus.submit(FETCH, payload(n))
            await store.flush()
            after = snapshot(client)
            events = client.memory_usage(f"{TASKBUS_PREFIX}events", samples=0)
            stats = await bus.stats()
    finally:
        client.close()
    queued = stats.by_state.get(TaskState.QUEUED, 0)
    return Memory(before, after, queued, int(events or 0))


def dramatiq_memory(settings: Settings) -> Memory:
    broker, actors, signal = dramatiq_setup(settings.url)
    send = actors[FETCH].send
    try:
        before = snapshot(signal)
        for n in range(settings.memory_tasks):
            fields = payload(n)
            send(fields["url"], fields["depth"])
        after = snapshot(signal)
        queued = int(signal.llen(f"{DRAMATIQ_NAMESPACE}:{DRAMATIQ_QUEUE}"))
    finally:
        broker.close()
        signal.close()
    return Memory(before, after, queued)


async def arq_memory(settings: Settings) -> Memory:
    from arq import create_pool
    from arq.connections import RedisSettings

    pool = await create_pool(RedisSettings.from_dsn(settings.url), default_queue_name=ARQ_QUEUE)
    client = redis.Redis.from_url(settings.url)
    try:
        before = snapshot(client)
        for n in range(settings.memory_tasks):
            fields = payload(n)
            await pool.enqueue_job(FETCH, fields["url"], fields["depth"])
        after = snapshot(client)
        queued = int(client.zcard(ARQ_QUEUE))
    finally:
        await pool.aclose()
        client.close()
    return Memory(before, after, queued)


async def saq_memory(settings: Settings) -> Memory:
    from saq import Queue

    queue = Queue.from_url(settings.url, name=SAQ_QUEUE)
    await queue.connect()
    client = redis.Redis.from_url(settings.url)
    try:
        before = snapshot(client)
        for n in range(settings.memory_tasks):
            await queue.enqueue(FETCH, **payload(n))
        after = snapshot(client)
        queued = int(client.llen(f"saq:{SAQ_QUEUE}:queued"))
    finally:
        await queue.disconnect()
        client.close()
    return Memory(before, after, queued)


def _memory_once(system: str, settings: Settings) -> Memory:
    flushdb(settings.url)
    if system == "taskbus":
        return asyncio.run(taskbus_memory(settings))
    if system == "dramatiq":
        return dramatiq_memory(settings)
    if system == "arq":
        return asyncio.run(arq_memory(settings))
    return asyncio.run(saq_memory(settings))


def memory(system: str, settings: Settings) -> Memory:
    """`used_memory` is the whole server's: a measure during which another database's
    key count changed (someone else at work on the server) is taken again, up to
    `MEMORY_ATTEMPTS` times in all."""
    for attempt in range(1, MEMORY_ATTEMPTS + 1):
        measured = _memory_once(system, settings)
        measured.attempts = attempt
        if not measured.others_changed:
            break
    return measured


# -- output -----------------------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _how(system: str, settings: Settings) -> dict[str, Any]:
    """How `system` runs here, for its lines."""
    if system == "taskbus":
        return {
            "backend": "asyncio",
            "workers_per_process": settings.workers,
            "setup": "TaskBus(store=RedisStore(url, prefix=...), workers=N); submitter workers=0",
            "done_when": "the submitter's task-completed listener heard it",
        }
    if system == "dramatiq":
        return {
            "backend": "threads",
            "workers_per_process": settings.dramatiq_threads,
            "setup": "RedisBroker, default middleware, dramatiq.Worker(worker_threads=N), "
            "actor.send() in a loop",
            "done_when": "acknowledged (after_ack), counted per process and polled every 1 ms",
        }
    if system == "saq":
        return {
            "backend": "asyncio",
            "workers_per_process": settings.workers,
            "setup": "saq.Worker(queue, concurrency=N), await queue.enqueue() in a loop",
            "done_when": "status stored (after_process), counted per process and polled every 1 ms",
        }
    return {
        "backend": "asyncio",
        "workers_per_process": settings.workers,
        "poll_delay_s": settings.arq_poll_delay,
        "setup": "arq.Worker(max_jobs=N, poll_delay=...), await pool.enqueue_job() in a loop",
        "done_when": "result stored (after_job_end), counted per process and polled every 1 ms",
    }


def _base(
    case: str, system: str, settings: Settings, tasks: int, server: dict[str, Any]
) -> dict[str, Any]:
    return {
        "bench": "redis",
        "case": case,
        "system": system,
        "store": f"redis {server['redis_version']}, db {server['db']}",
        "version": _version(system),
        "redis_py": _version("redis"),
        "tasks": tasks,
    }


def _rate(runs: list[Run], tasks: int) -> float:
    return max(tasks / run.elapsed for run in runs)


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or not theirs:
        return None
    return rounded(ours / theirs, 3)


@dataclass
class Results:
    """Every figure of one full run, by system; a peer's error instead of its figures."""

    runs: dict[str, list[Run]] = field(default_factory=dict)
    starts: dict[str, list[float]] = field(default_factory=dict)
    memory: dict[str, Memory] = field(default_factory=dict)
    errors: dict[tuple[str, str], str] = field(default_factory=dict)


def _end_to_end_lines(
    settings: Settings, results: Results, server: dict[str, Any]
) -> list[dict[str, Any]]:
    tasks = settings.tasks
    rates: dict[str, float | None] = {}
    lines = []
    for system in ("taskbus", *settings.peers):
        line = _base("end-to-end", system, settings, tasks, server)
        line.update(_how(system, settings))
        line.update(processes=settings.processes, submitters=1, rounds=settings.rounds)
        runs = results.runs.get(system)
        if not runs:
            rates[system] = None
            line.update(tasks_per_s=None, exactly_once=None, meets_target=None)
            line["error"] = results.errors.get((line["case"], system), "not run")
            lines.append(line)
            continue
        rate = rates[system] = _rate(runs, tasks)
        checks = [check(run, tasks, events=system == "taskbus") for run in runs]
        worst = min(checks, key=lambda c: (c.exactly_once, c.ran_once))
        line.update(
            tasks_per_s=rounded(rate, 0),
            tasks_per_s_median=rounded(median([tasks / run.elapsed for run in runs]), 0),
            submit_loop_per_s=rounded(max(tasks / run.submitting for run in runs), 0),
            exactly_once=all(c.exactly_once for c in checks),
            done=worst.done,
            tasks_run_once=worst.ran_once,
            tasks_run_more_than_once=worst.ran_more,
            tasks_never_run=worst.never_ran,
            unknown_runs=worst.unknown_ran,
        )
        if system == "taskbus":
            line.update(
                completed_in_store=worst.completed_in_store,
                other_states_in_store=worst.other_in_store,
                finals_heard_once=worst.finals_heard_once,
                finals_not_heard=max(tasks - len(run.finals) for run in runs),
            )
        line["meets_target"] = None
        lines.append(line)
    ours = lines[0]
    ours_rate = rates["taskbus"]
    for peer in settings.peers:
        ours[f"{peer}_tasks_per_s"] = rounded(rates[peer], 0)
        ours[f"ratio_to_{peer}"] = _ratio(ours_rate, rates[peer])
    ratio = _ratio(ours_rate, rates.get("dramatiq"))
    ours.update(
        target_tasks_per_s=TARGET_TASKS_PER_S,
        meets_target=ours_rate is not None and ours_rate >= TARGET_TASKS_PER_S,
        target_ratio_to_dramatiq=TARGET_RATIO_TO_DRAMATIQ,
        meets_target_ratio_to_dramatiq=None if ratio is None else ratio >= TARGET_RATIO_TO_DRAMATIQ,
    )
    return lines


def _start_lines(
    settings: Settings, results: Results, server: dict[str, Any]
) -> list[dict[str, Any]]:
    lines = []
    p50s: dict[str, float | None] = {}
    for system in ("taskbus", *settings.peers):
        line = _base("submit-to-start", system, settings, settings.samples, server)
        line.update(_how(system, settings))
        line.update(processes=settings.processes, warmup=settings.warmup)
        latencies = results.starts.get(system)
        if not latencies:
            p50s[system] = None
            line.update(p50_us=None, p99_us=None, meets_target=None)
            line["error"] = results.errors.get((line["case"], system), "not run")
            lines.append(line)
            continue
        p50s[system] = percentile(latencies, 50)
        line.update(
            p50_us=rounded(p50s[system], 0),
            p99_us=rounded(percentile(latencies, 99), 0),
            max_us=rounded(max(latencies), 0),
            meets_target=None,
        )
        lines.append(line)
    ours = lines[0]
    for peer in settings.peers:
        ours[f"{peer}_p50_us"] = rounded(p50s[peer], 0)
        ours[f"ratio_p50_to_{peer}"] = _ratio(p50s["taskbus"], p50s[peer])
    p50 = p50s["taskbus"]
    ours.update(target_p50_us=TARGET_P50_US, meets_target=p50 is not None and p50 <= TARGET_P50_US)
    return lines


def _memory_lines(
    settings: Settings, results: Results, server: dict[str, Any]
) -> list[dict[str, Any]]:
    tasks = settings.memory_tasks
    lines = []
    per_task: dict[str, float | None] = {}
    for system in ("taskbus", *settings.peers):
        line = _base("memory-per-queued-task", system, settings, tasks, server)
        line["input"] = "url: str, depth: int (a distinct url each)"
        measured = results.memory.get(system)
        if measured is None:
            per_task[system] = None
            line.update(bytes_per_task=None, meets_target=None)
            line["error"] = results.errors.get((line["case"], system), "not run")
            lines.append(line)
            continue
        before, after = measured.before, measured.after
        per_task[system] = (after.used - before.used) / tasks
        line.update(
            used_memory_before=before.used,
            used_memory_after=after.used,
            bytes_per_task=rounded(per_task[system], 1),
            keys_bytes_per_task=rounded((after.keys - before.keys) / tasks, 1),
            queued=measured.queued,
            attempts=measured.attempts,
            other_dbs_changed=measured.others_changed,
            meets_target=None,
        )
        if measured.event_log is not None:
            line["event_log_bytes_per_task"] = rounded(measured.event_log / tasks, 1)
        lines.append(line)
    ours = lines[0]
    for peer in settings.peers:
        ours[f"{peer}_bytes_per_task"] = rounded(per_task[peer], 1)
        ours[f"ratio_to_{peer}"] = _ratio(per_task["taskbus"], per_task[peer])
    mine = per_task["taskbus"]
    ours.update(
        target_bytes_per_task=TARGET_BYTES_PER_TASK,
        meets_target=mine is not None and mine <= TARGET_BYTES_PER_TASK,
    )
    return lines


def _latency_line(settings: Settings, runs: list[Run], server: dict[str, Any]) -> dict[str, Any]:
    line = _base("event-latency", "taskbus", settings, settings.tasks, server)
    line.update(
        processes=settings.processes,
        workers_per_process=settings.workers,
        event="task-completed: worker's timestamp -> submitter's listener (wall clock)",
        heard=median([len(run.latencies_us) for run in runs]),
        p50_us=rounded(median([percentile(run.latencies_us, 50) for run in runs]), 0),
        p99_us=rounded(median([percentile(run.latencies_us, 99) for run in runs]), 0),
        max_us=rounded(median([max(run.latencies_us) for run in runs]), 0),
        meets_target=None,
    )
    return line


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _attempt(case: str, system: str, results: Results, measure: Callable[[], Any]) -> Any:
    """`measure()`, or None and the peer's error noted (taskbus's errors propagate)."""
    if system == "taskbus":
        return measure()
    try:
        return measure()
    except Exception as exc:  # noqa: BLE001 - a peer that fails is reported, not fatal
        results.errors[case, system] = _error(exc)
        return None


def _workers_case(
    case: str, system: str, settings: Settings, results: Results, *, runs: bool, starts: bool
) -> None:
    measured = _attempt(
        case, system, results, lambda: with_workers(system, settings, runs=runs, starts=starts)
    )
    if measured is None:
        if starts:  # the same error, shared by the two cases of a --quick run
            results.errors["submit-to-start", system] = results.errors[case, system]
        return
    run, latencies = measured
    if run is not None:
        results.runs.setdefault(system, []).append(run)
    if latencies is not None:
        results.starts[system] = latencies


def run_all(settings: Settings) -> None:
    server = server_info(settings.url)
    results = Results()
    systems = ("taskbus", *settings.peers)
    # A full run starts worker processes afresh, on a flushed database, for each
    # measure; --quick shares one set per system between end-to-end and
    # submit-to-start (starting and stopping them is most of a quick run).
    shared = settings.quick
    for round_ in range(settings.rounds):
        for system in systems:
            if ("end-to-end", system) not in results.errors:
                both = shared and round_ == 0
                _workers_case("end-to-end", system, settings, results, runs=True, starts=both)
    for system in systems if not shared else ():
        _workers_case("submit-to-start", system, settings, results, runs=False, starts=True)
    for system in systems:
        measured = _attempt(
            "memory-per-queued-task",
            system,
            results,
            lambda system=system: memory(system, settings),
        )
        if measured is not None:
            results.memory[system] = measured
    flushdb(settings.url)
    for line in _end_to_end_lines(settings, results, server):
        emit(line)
    for line in _start_lines(settings, results, server):
        emit(line)
    for line in _memory_lines(settings, results, server):
        emit(line)
    emit(_latency_line(settings, results.runs["taskbus"], server))


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker_main(json.loads(sys.argv[2]))
        return
    args = parser(__doc__)
    args.add_argument("--url", default=DEFAULT_URL, help=f"the Redis database ({DEFAULT_URL})")
    args.add_argument("--tasks", type=int, default=None, help="end-to-end tasks (20,000)")
    args.add_argument("--processes", type=int, default=2, help="worker processes (2)")
    args.add_argument(
        "--workers",
        type=int,
        default=50,
        help="taskbus workers, arq max_jobs, SAQ concurrency, per process (50)",
    )
    args.add_argument(
        "--dramatiq-threads", type=int, default=8, help="dramatiq worker threads per process (8)"
    )
    args.add_argument(
        "--arq-poll-delay", type=float, default=0.005, help="arq's poll_delay, seconds (0.005)"
    )
    args.add_argument("--samples", type=int, default=None, help="submit-to-start samples (1,000)")
    args.add_argument("--memory-tasks", type=int, default=None, help="queued tasks (20,000)")
    args.add_argument("--rounds", type=int, default=1, help="end-to-end rounds, best counts (1)")
    args.add_argument(
        "--peers",
        default=",".join(PEERS),
        help="peers to run beside taskbus, comma-separated, or 'none' (dramatiq,arq,saq)",
    )
    opts = args.parse_args()
    peers = tuple(p for p in opts.peers.split(",") if p and p != "none")
    unknown = set(peers) - set(PEERS)
    if unknown:
        args.error(f"unknown peers: {sorted(unknown)}")
    settings = Settings(
        url=opts.url,
        tasks=opts.tasks or (300 if opts.quick else 20_000),
        processes=opts.processes,
        workers=opts.workers,
        dramatiq_threads=opts.dramatiq_threads,
        arq_poll_delay=opts.arq_poll_delay,
        samples=opts.samples or (30 if opts.quick else 1_000),
        warmup=5 if opts.quick else 50,
        memory_tasks=opts.memory_tasks or (300 if opts.quick else 20_000),
        rounds=opts.rounds,
        peers=peers,
        quick=opts.quick,
    )
    run_all(settings)


if __name__ == "__main__":
    main()
