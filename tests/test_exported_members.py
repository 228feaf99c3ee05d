import taskbus


def test_all_matches_public_names() -> None:
    public = {name for name in dir(taskbus) if not name.startswith("_")}
    public -= {"stores", "testing", "integrations"}
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
