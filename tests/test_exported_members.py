import taskbus


def test_all_matches_public_names() -> None:
    public = {name for name in dir(taskbus) if not name.startswith("_")}
    public -= {"abc", "stores", "testing", "integrations", "metrics", "otel"}  # once imported
    assert set(taskbus.__all__) == public


def test_all_is_sorted() -> None:
    """Constants, then classes, then functions, each alphabetical (ruff's RUF022)."""

    def kind(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert taskbus.__all__ == sorted(taskbus.__all__, key=kind)


def test_contract_names_are_exported() -> None:
    contract = [
        "TaskBus",
        "TaskContext",
        "TaskRegistry",
        "TaskDefinition",
        "RetryPolicy",
        "EventBus",
        "TaskExecutor",
        "TaskQueue",
        "TaskState",
        "TaskSnapshot",
        "TaskHandle",
        "TaskQueued",
        "TaskStarted",
        "TaskProgress",
        "TaskCompleted",
        "TaskFailed",
        "TaskCancelled",
        "RetryableError",
        "FatalError",
        "UserActionableError",
        "TaskNotFound",
        "UnknownTaskType",
        "TaskFailedError",
        "TaskCancelledError",
    ]
    missing = [name for name in contract if not hasattr(taskbus, name)]
    assert missing == []


def test_lookup_errors_are_lookup_errors() -> None:
    assert issubclass(taskbus.TaskNotFound, LookupError)
    assert issubclass(taskbus.UnknownTaskType, LookupError)
    assert "abc" in str(taskbus.TaskNotFound("abc"))


def test_every_error_shares_the_root() -> None:
    for name in taskbus.__all__:
        obj = getattr(taskbus, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, taskbus.TaskbusError), name


def test_the_integrations_use_only_public_names() -> None:
    """CLI, HTTP, MCP and Qt import what a third-party adapter could: `taskbus`'s
    public names (and their own private helpers), never the core's private modules."""
    import ast
    from pathlib import Path

    import taskbus

    folder = Path(taskbus.__file__).parent / "integrations"
    private: list[str] = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            module = node.module or ""
            if node.level == 1 or (node.level == 0 and not module.startswith("taskbus")):
                continue  # the integrations' own helpers, or another library
            if node.level == 0:
                module = module.removeprefix("taskbus").lstrip(".")
            if module.startswith("integrations"):
                continue
            names = [*module.split("."), *(alias.name for alias in node.names)]
            if any(name.startswith("_") and not name.endswith("__") for name in names if name):
                private.append(f"{path.name}: from {node.module} import ...")
    assert private == []


def test_public_classes_and_functions_present_themselves_as_taskbus() -> None:
    import pickle

    import taskbus

    for name in taskbus.__all__:
        value = getattr(taskbus, name)
        if isinstance(value, type) or callable(value):
            # AnyTaskEvent is a typing alias (an Annotated union), not a class.
            assert value.__module__ in ("taskbus", "types", "typing"), name
            if isinstance(value, type):
                assert value.__module__ == "taskbus", name
    error = taskbus.TaskCancelledError("t1", "stop")
    again = pickle.loads(pickle.dumps(error))
    assert isinstance(again, taskbus.TaskCancelledError) and str(again) == str(error)
    assert (again.task_id, again.reason) == ("t1", "stop")


def test_every_public_error_survives_pickling_with_its_attributes() -> None:
    import pickle

    import taskbus

    samples: list[BaseException] = [
        taskbus.TaskNotFound("t1"),
        taskbus.UnknownTaskType("x:y", ["a:b"]),
        taskbus.TaskCancelledError("t1", "stop"),
        taskbus.TaskCancellation("t1", "timed out"),
        taskbus.UserActionableError("log in", suggested_action="run `app login`"),
        taskbus.RetryableError("again", retry_after=2.0),
        taskbus.UnstorableValue("bad", task_id="t1", field="result"),
        taskbus.InvalidSubmission("delay must be finite"),
    ]
    for error in samples:
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
        assert vars(again) == vars(error)


def test_the_store_seam_is_public_in_taskbus_abc() -> None:
    import taskbus.abc
    from taskbus.stores.memory import MemoryStore
    from taskbus.stores.sqlite import SqliteStore

    assert taskbus.abc.TaskStore.__module__ == "taskbus.abc"
    assert isinstance(SqliteStore("unused.db"), taskbus.abc.TaskStore)
    assert isinstance(SqliteStore("unused.db"), taskbus.abc.EventBroker)
    assert not isinstance(MemoryStore(), taskbus.abc.TaskStore)
    assert isinstance(MemoryStore(), taskbus.abc.LiveRecordStore)
