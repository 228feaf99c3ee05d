"""`ErrorType`: how a failure is classified (below everything that records one)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ErrorType"]


class ErrorType(StrEnum):
    """How a failure is classified; decides whether it is retried."""

    RETRYABLE = "retryable"
    FATAL = "fatal"
    USER_ACTIONABLE = "user-actionable"
