"""The SQLite store's schema: connections, version checks and migrations."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path

from .._errors import StoreError
from .._record import AWAITING_PARENTS
from ._codec import COLUMNS
from ._sqlite_events import EVENTS_SCHEMA

__all__ = [
    "APPLICATION_ID",
    "CONCURRENCY_KEY_SQL",
    "SCHEMA_VERSION",
    "UPSERT",
    "apply_pragmas",
    "connect",
    "migrate",
    "store_error",
]

#: Marks a file as a taskbus database (``PRAGMA application_id``): "tbus".
APPLICATION_ID = 0x74627573

_PLACEHOLDERS = ", ".join("?" for _ in COLUMNS)
_UPDATES = ", ".join(f"{name} = excluded.{name}" for name in COLUMNS[1:])
#: Insert a row, or overwrite every column of the row with that id.
UPSERT = (
    f"INSERT INTO tasks ({', '.join(COLUMNS)}) VALUES ({_PLACEHOLDERS}) "
    f"ON CONFLICT(id) DO UPDATE SET {_UPDATES}"
)


def _v1(conn: sqlite3.Connection) -> None:
    _run_script(
        conn,
        """
        CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            type TEXT NOT NULL,
            state TEXT NOT NULL,
            priority INTEGER NOT NULL,
            owner TEXT,
            key TEXT,
            input TEXT,
            metadata TEXT,
            attempt INTEGER NOT NULL,
            max_attempts INTEGER NOT NULL,
            created_at REAL NOT NULL,
            queued_at REAL NOT NULL,
            not_before REAL,
            started_at REAL,
            finished_at REAL,
            progress REAL,
            current INTEGER,
            total INTEGER,
            message TEXT,
            eta REAL,
            result TEXT,
            error TEXT,
            cancel_reason TEXT
        );
        CREATE INDEX tasks_state_created ON tasks (state, created_at);
        CREATE INDEX tasks_owner_created ON tasks (owner, created_at);
        CREATE INDEX tasks_type_created ON tasks (type, created_at);
        CREATE INDEX tasks_created ON tasks (created_at);
        CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
        CREATE INDEX tasks_key ON tasks (key) WHERE key IS NOT NULL;
        """,
    )


def _v2(conn: sqlite3.Connection) -> None:
    # Idempotency keys are scoped by (owner, type, key): the index serves the lookup
    # of the latest completed task of one scope.
    _run_script(
        conn,
        """
        DROP INDEX IF EXISTS tasks_key;
        CREATE INDEX tasks_key_scope ON tasks (key, type, owner, finished_at)
            WHERE key IS NOT NULL;
        """,
    )


def _v3(conn: sqlite3.Connection) -> None:
    # Leases: the worker holding a running task and until when. The partial indexes
    # serve picking queued tasks in priority order, counting the running tasks of a
    # type (per-type limits), and finding expired leases.
    _run_script(
        conn,
        """
        ALTER TABLE tasks ADD COLUMN worker TEXT;
        ALTER TABLE tasks ADD COLUMN lease_until REAL;
        CREATE INDEX tasks_queue ON tasks (priority DESC, queued_at) WHERE state = 'queued';
        CREATE INDEX tasks_running_type ON tasks (type) WHERE state = 'running';
        CREATE INDEX tasks_leases ON tasks (lease_until)
            WHERE state = 'running' AND lease_until IS NOT NULL;
        CREATE INDEX tasks_due ON tasks (not_before)
            WHERE state = 'queued' AND not_before IS NOT NULL;
        UPDATE tasks SET lease_until = 0 WHERE state = 'running';
        """,
    )


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, and a migration must be one transaction.
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v4(conn: sqlite3.Connection) -> None:
    # The event log: events numbered as they commit (see `_sqlite_events`).
    _run_script(conn, EVENTS_SCHEMA)


def _v5(conn: sqlite3.Connection) -> None:
    # Fewer pages written per commit (a lone submit's commit costs a quarter less):
    # no query reads events by task, and most tasks have no owner, so the owner
    # index holds only the tasks that have one (``owner = ?`` still uses it).
    _run_script(
        conn,
        """
        DROP INDEX IF EXISTS events_task;
        DROP INDEX IF EXISTS tasks_owner_created;
        CREATE INDEX tasks_owner_created ON tasks (owner, created_at) WHERE owner IS NOT NULL;
        """,
    )


def _v6(conn: sqlite3.Connection) -> None:
    # A batch's tasks, found from any process (``TaskQuery.batch_id``): the batch id
    # copied out of the metadata, indexed only where there is one.
    _run_script(
        conn,
        """
        ALTER TABLE tasks ADD COLUMN batch_id TEXT;
        UPDATE tasks SET batch_id = json_extract(metadata, '$.batch_id')
            WHERE json_valid(metadata) AND json_type(metadata, '$.batch_id') = 'text';
        CREATE INDEX tasks_batch ON tasks (batch_id, created_at) WHERE batch_id IS NOT NULL;
        """,
    )


def _v7(conn: sqlite3.Connection) -> None:
    # Why a queued task is not running yet (``TaskRecord.waiting_for``).
    _run_script(conn, "ALTER TABLE tasks ADD COLUMN waiting_for TEXT")


#: A task's concurrency key as SQL (``metadata["concurrency_key"]`` when it is text),
#: one expression everywhere, so the index on it serves the claims' counts.
CONCURRENCY_KEY_SQL = (
    "CASE WHEN json_valid(metadata) THEN CASE WHEN json_type(metadata, '$.concurrency_key') "
    "= 'text' THEN json_extract(metadata, '$.concurrency_key') END END"
)


def _rate_limits(conn: sqlite3.Connection) -> None:
    # Per-key concurrency: a claim counts the running tasks of each key of a type;
    # rate limits: the starts of each rate key in its moving window (`_sqlite_rates`).
    _run_script(
        conn,
        f"""
        CREATE INDEX tasks_running_keys ON tasks (type, {CONCURRENCY_KEY_SQL})
            WHERE state = 'running';
        CREATE TABLE rate_hits (key TEXT NOT NULL, at REAL NOT NULL, until REAL NOT NULL);
        CREATE INDEX rate_hits_key ON rate_hits (key, at);
        CREATE INDEX rate_hits_until ON rate_hits (until);
        """,
    )


def _schedules(conn: sqlite3.Connection) -> None:
    # Schedules (`taskbus.Schedule`): the definition as JSON, the state as columns; the
    # partial index serves finding the due ones.
    _run_script(
        conn,
        """
        CREATE TABLE schedules (
            id TEXT PRIMARY KEY,
            spec TEXT NOT NULL,
            owner TEXT,
            paused INTEGER NOT NULL DEFAULT 0,
            next_fire_at REAL,
            last_fire_at REAL,
            last_task_id TEXT,
            created_at REAL NOT NULL
        );
        CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE paused = 0;
        CREATE INDEX schedules_owner ON schedules (owner) WHERE owner IS NOT NULL
        """,
    )


def _dependencies(conn: sqlite3.Connection) -> None:
    # Task dependencies (`_dependencies`): a child submitted after parents carries
    # their ids in its metadata ("after") and, while one is unfinished, the
    # not-before time AWAITING_PARENTS, so no claim picks it. The edges go into
    # task_parents as the child is inserted; the step that makes a parent final
    # clears the waiting children's time once none of their parents is unfinished
    # (a parent purged counts as finished), in the same transaction. A child whose
    # parents all ended before its insert is released by that insert. (One
    # statement at a time: a trigger's body holds semicolons.)
    waiting = f"not_before = {AWAITING_PARENTS!r}"
    none_unfinished = (
        "NOT EXISTS (SELECT 1 FROM task_parents AS e JOIN tasks AS p ON p.id = e.parent "
        "WHERE e.child = tasks.id AND p.state NOT IN ('completed', 'failed', 'cancelled'))"
    )
    for statement in (
        """CREATE TABLE task_parents (
            parent TEXT NOT NULL,
            child TEXT NOT NULL,
            PRIMARY KEY (parent, child)
        ) WITHOUT ROWID""",
        "CREATE INDEX task_parents_child ON task_parents (child)",
        f"""CREATE TRIGGER tasks_link_parents AFTER INSERT ON tasks
        WHEN NEW.state = 'queued' AND NEW.{waiting}
        BEGIN
            INSERT OR IGNORE INTO task_parents (parent, child)
                SELECT value, NEW.id FROM json_each(NEW.metadata, '$.after');
            UPDATE tasks SET not_before = NULL, waiting_for = NULL WHERE id = NEW.id AND {none_unfinished};
        END""",
        f"""CREATE TRIGGER tasks_release_children AFTER UPDATE OF state ON tasks
        WHEN NEW.state IN ('completed', 'failed', 'cancelled')
            AND OLD.state NOT IN ('completed', 'failed', 'cancelled')
        BEGIN
            UPDATE tasks SET not_before = NULL, waiting_for = NULL
            WHERE id IN (SELECT child FROM task_parents WHERE parent = NEW.id)
                AND state = 'queued' AND {waiting} AND {none_unfinished};
        END""",
        """CREATE TRIGGER tasks_unlink_parents AFTER DELETE ON tasks
        BEGIN
            DELETE FROM task_parents WHERE child = OLD.id;
        END""",
    ):
        conn.execute(statement)


def _input_asks(conn: sqlite3.Connection) -> None:
    # A task's pending question and recorded answers (``TaskRecord.asks``, JSON).
    _run_script(conn, "ALTER TABLE tasks ADD COLUMN asks TEXT")


#: MIGRATIONS[n] takes a database from version n to n + 1.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [
    _v1,
    _v2,
    _v3,
    _v4,
    _v5,
    _v6,
    _v7,
    _rate_limits,
    _dependencies,
    _schedules,
    _input_asks,
]
SCHEMA_VERSION = len(MIGRATIONS)


def store_error(
    path: Path, exc: sqlite3.Error, doing: str, *, task_id: str | None = None
) -> StoreError:
    """A `StoreError` that says what failed, where, and what it likely means."""
    text = str(exc)
    hint = ""
    lowered = text.lower()
    if "not a database" in lowered or "malformed" in lowered:
        hint = " (the file is corrupt, or not a SQLite database)"
    elif "locked" in lowered or "busy" in lowered:
        hint = " (another connection holds a lock on it)"
    elif "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        hint = " (the file or its directory is not writable)"
    elif "full" in lowered:
        hint = " (the disk, or the database's size limit, is full)"
    task = "" if task_id is None else f" (task {task_id})"
    error = StoreError(f"SQLite store {str(path)!r}: cannot {doing}: {text}{hint}{task}")
    error.__cause__ = exc
    return error


def connect(path: Path, *, busy_timeout: float) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), no pragmas yet."""
    return sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )


def apply_pragmas(conn: sqlite3.Connection, pragmas: Mapping[str, str | int]) -> None:
    """WAL mode and the store's pragmas (``synchronous`` and any the user gave)."""
    conn.execute("PRAGMA journal_mode = WAL").fetchone()
    for name, value in pragmas.items():
        if not name.replace("_", "").isalnum():
            raise ValueError(f"not a pragma name: {name!r}")
        conn.execute(f"PRAGMA {name} = {int(value) if isinstance(value, int) else value}")


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Check that the file is ours (or new) and bring its schema up to date."""
    conn.execute("BEGIN")  # one snapshot: another process may be migrating the file
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[
            0
        ]
    finally:
        conn.execute("COMMIT")
    if app_id != APPLICATION_ID and (app_id != 0 or tables):
        raise StoreError(
            f"SQLite store {str(path)!r}: this database belongs to another application "
            f"(application_id={app_id}, {tables} tables); refusing to touch it"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"SQLite store {str(path)!r}: schema version {version} was written by a newer "
            f"taskbus (this one knows up to {SCHEMA_VERSION}); upgrade taskbus"
        )
    while version < SCHEMA_VERSION:
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Read again under the write lock: processes that open a new file at once
            # all read version 0 above, and only the first may run each step.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                MIGRATIONS[version](conn)
                version += 1
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
