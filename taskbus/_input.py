"""Input required: the question a handler asks its caller, and the answers given.

A handler calls ``await ctx.ask(prompt, model=...)``. With no answer recorded
for that question yet, the call ends the handler's run (`AwaitingInput`, a
`BaseException`) and the task waits, holding no worker, its question stored.
`TaskBus.respond` records the answer and queues the task again; the handler
runs from the top, and this time `ask` returns the recorded answer at once (the
replay of durable-execution systems). All of it is one JSON value per task,
`InputExchange`, that every store keeps.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AwaitingInput", "InputAnswer", "InputExchange", "InputQuestion"]


class InputQuestion(BaseModel):
    """What a waiting task asks: shown in its snapshot and its task-input-required event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(description="Names the question within the task ('ask-1' for its first).")
    prompt: str = Field(description="The question, for a person.")
    json_schema: dict[str, Any] = Field(description="JSON schema an answer must match.")
    asked_at: float = Field(description="Epoch seconds.")
    deadline: float | None = Field(
        default=None, description="Epoch seconds after which the handler gets InputTimeout."
    )


class InputAnswer(BaseModel):
    """A recorded answer (or the note that none came in time)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: Any = Field(default=None, description="The answer, as JSON.")
    answered_at: float = Field(description="Epoch seconds.")
    timed_out: bool = Field(default=False, description="No answer came before the deadline.")


class InputExchange(BaseModel):
    """A task's pending question and the answers it was given, by question key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pending: InputQuestion | None = None
    answers: dict[str, InputAnswer] = Field(default_factory=dict)

    def asking(self, question: InputQuestion) -> InputExchange:
        return InputExchange(pending=question, answers=self.answers)

    def answered(self, key: str, answer: InputAnswer) -> InputExchange:
        return InputExchange(pending=None, answers={**self.answers, key: answer})

    def without(self, key: str) -> InputExchange:
        answers = {name: value for name, value in self.answers.items() if name != key}
        return InputExchange(pending=self.pending, answers=answers)


class AwaitingInput(BaseException):
    """Raised by ``ctx.ask`` to end the handler's run while its question waits for
    an answer. A `BaseException`, so a handler's ``except Exception`` does not catch
    it; never raise or catch it in a handler."""

    def __init__(self, question: InputQuestion) -> None:
        self.question = question
        super().__init__(question.prompt)
