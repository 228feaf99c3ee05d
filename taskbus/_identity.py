"""Who a request to a surface (HTTP, MCP) comes from: an owner, maybe an administrator."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Identity"]


class Identity(BaseModel):
    """Who a request comes from: an owner, and whether they are an administrator.

    An auth hook (HTTP) or owner hook (MCP) may answer one instead of a plain owner.
    An administrator lists, reads, cancels and streams every owner's tasks (and
    still submits as `owner`); everyone else sees only their own.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    owner: str = Field(description="The owner the caller submits as.")
    admin: bool = Field(default=False, description="Sees every owner's tasks.")

    @classmethod
    def of(cls, answer: object) -> Identity:
        """An `Identity` from what a hook answered: an `Identity`, or an owner as text."""
        if isinstance(answer, Identity):
            return answer
        if isinstance(answer, str):
            return cls(owner=answer)
        raise TypeError(f"an owner is a str or an Identity, not {answer!r}")
