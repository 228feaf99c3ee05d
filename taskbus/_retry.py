"""Retry decisions: the policy (on tenacity) and the error classification table."""

from __future__ import annotations

import tenacity
from pydantic import BaseModel, ConfigDict, Field

from ._errors import ErrorType, RetryableError, TaskError

__all__ = ["DEFAULT_RETRYABLE", "RetryPolicy", "classify", "next_delay"]

#: Exceptions that are retried when neither the handler nor the definition says
#: otherwise. Everything else is fatal.
DEFAULT_RETRYABLE: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)


def classify(
    exc: BaseException,
    *,
    retry_on: tuple[type[BaseException], ...] = (),
    fatal_on: tuple[type[BaseException], ...] = (),
) -> ErrorType:
    """Classify a handler's exception.

    Order: the definition's `fatal_on`, then its `retry_on`; then a `TaskError`
    says for itself; then `DEFAULT_RETRYABLE`; anything else is fatal.
    """
    if fatal_on and isinstance(exc, fatal_on):
        return ErrorType.FATAL
    if retry_on and isinstance(exc, retry_on):
        return ErrorType.RETRYABLE
    if isinstance(exc, TaskError):
        return exc.error_type
    if isinstance(exc, DEFAULT_RETRYABLE):
        return ErrorType.RETRYABLE
    return ErrorType.FATAL
    if retry_on and isinstance(exc, retry_on):
        return ErrorType.RETRYABLE
    if isinstance(exc, DEFAULT_RETRYABLE):
        return ErrorType.RETRYABLE
    return ErrorType.FATAL


class RetryPolicy(BaseModel):
    """How often and how soon a retryable failure runs again.

    The wait before attempt ``n + 1`` is
    ``min(base_delay * multiplier ** (n - 1), max_delay) + uniform(0, jitter)``
    seconds (tenacity's `wait_exponential` plus `wait_random`); `max_attempts`
    counts the first attempt, so ``max_attempts=1`` never retries.
    The default: 3 attempts, 1 s then 2 s apart, up to 0.1 s of jitter.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=3, ge=1, description="Attempts in all, the first included.")
    base_delay: float = Field(default=1.0, ge=0, description="Seconds before the first retry.")
    multiplier: float = Field(default=2.0, ge=1, description="Growth of the delay per attempt.")
    max_delay: float = Field(default=60.0, ge=0, description="Upper bound of the delay.")
    jitter: float = Field(default=0.1, ge=0, description="Random seconds added to each delay.")

    @classmethod
    def never(cls) -> RetryPolicy:
        """A policy that never retries."""
        return cls(max_attempts=1)

    def build(
        self,
        *,
        retry_on: tuple[type[BaseException], ...] = (),
        fatal_on: tuple[type[BaseException], ...] = (),
    ) -> tenacity.Retrying:
        """The tenacity controller for this policy and a definition's error table."""

        def is_retryable(exc: BaseException) -> bool:
            return classify(exc, retry_on=retry_on, fatal_on=fatal_on) is ErrorType.RETRYABLE

        wait = tenacity.wait_exponential(
            multiplier=self.base_delay, exp_base=self.multiplier, max=self.max_delay
        ) + tenacity.wait_random(0, self.jitter)
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=wait,
            retry=tenacity.retry_if_exception(is_retryable),
        )


def next_delay(retrying: tenacity.Retrying, attempt: int, exc: BaseException) -> float | None:
    """Seconds before the next attempt, or None when the failure must not be retried.

    `attempt` is the number of the attempt that just failed (1-based). A
    `RetryableError(retry_after=...)` overrides the policy's wait.
    """
    state = tenacity.RetryCallState(retrying, None, (), {})
    state.attempt_number = attempt
    state.outcome = tenacity.Future.construct(attempt, exc, True)
    if not retrying.retry(state) or retrying.stop(state):
        return None
    if isinstance(exc, RetryableError) and exc.retry_after is not None:
        return max(exc.retry_after, 0.0)
    return float(retrying.wait(state))
