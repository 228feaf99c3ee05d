import pytest

from taskbus import (
    ErrorType,
    FatalError,
    RetryableError,
    RetryPolicy,
    TaskTimeoutError,
    UserActionableError,
)
from taskbus._retry import classify, next_delay


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (RetryableError("x"), ErrorType.RETRYABLE),
        (FatalError("x"), ErrorType.FATAL),
        (UserActionableError("x", suggested_action="log in"), ErrorType.USER_ACTIONABLE),
        (TaskTimeoutError("x"), ErrorType.RETRYABLE),
        (ConnectionResetError(), ErrorType.RETRYABLE),
        (TimeoutError(), ErrorType.RETRYABLE),
        (ValueError(), ErrorType.FATAL),
        (KeyError(), ErrorType.FATAL),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_default_classification(exc: BaseException, expected: ErrorType) -> None:
    assert classify(exc) is expected


def test_definition_tables_come_first() -> None:
    assert classify(ValueError(), retry_on=(ValueError,)) is ErrorType.RETRYABLE
    assert classify(ConnectionError(), fatal_on=(ConnectionError,)) is ErrorType.FATAL
    assert classify(TaskTimeoutError("t"), fatal_on=(TaskTimeoutError,)) is ErrorType.FATAL


def test_exponential_backoff_and_stop() -> None:
    retrying = RetryPolicy(max_attempts=4, base_delay=0.5, multiplier=3, jitter=0).build()
    delays = [next_delay(retrying, attempt, RetryableError()) for attempt in (1, 2, 3, 4)]
    assert delays == [0.5, 1.5, 4.5, None]


def test_max_delay_caps_and_jitter_adds_at_most_jitter() -> None:
    retrying = RetryPolicy(max_attempts=10, base_delay=1, max_delay=2, jitter=0.5).build()
    for attempt in range(1, 9):
        delay = next_delay(retrying, attempt, RetryableError())
        assert delay is not None
        assert min(2 ** (attempt - 1), 2) <= delay <= min(2 ** (attempt - 1), 2) + 0.5


def test_fatal_errors_are_never_retried() -> None:
    retrying = RetryPolicy(max_attempts=5).build()
    assert next_delay(retrying, 1, ValueError("bad")) is None
    assert next_delay(retrying, 1, UserActionableError("bad")) is None


def test_retry_after_overrides_the_wait() -> None:
    retrying = RetryPolicy(max_attempts=3, base_delay=10).build()
    assert next_delay(retrying, 1, RetryableError("later", retry_after=0.25)) == 0.25


def test_never_policy() -> None:
    assert next_delay(RetryPolicy.never().build(), 1, RetryableError()) is None


def test_bad_policy_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
