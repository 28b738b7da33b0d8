"""The typed result every Lean checker returns, whatever ran the check."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

MessageSeverity = Literal["error", "warning", "information"]
#: passed: the file elaborated without errors, sorry, admit or disallowed axioms;
#: failed: it did not; timeout: the check ran past its time limit;
#: error: the checker itself could not run the check (a crash, an unreachable server)
CheckStatus = Literal["passed", "failed", "timeout", "error"]


class LeanMessage(BaseModel):
    """One message Lean reported, located in the checked file.

    ``line`` is 1-based and ``column`` 0-based, counted in Unicode code points, as in Lean's
    own ``FILE:LINE:COLUMN`` output (the language server's 0-based lines and UTF-16 columns
    are converted).
    """

    severity: MessageSeverity
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None
    text: str

    def __str__(self) -> str:
        return f"{self.line}:{self.column}: {self.severity}: {self.text}"


class SorryGoal(BaseModel):
    """A ``sorry`` whose goal the checker reported (a Kimina server's REPL does; ``lean --json``
    does not): where it is in the checked file and the goal it stands for."""

    line: int
    column: int
    goal: str = ""


class LeanResult(BaseModel):
    """The outcome of checking one Lean file.

    ``ok`` is true only when ``status`` is ``passed``: no error message, no ``sorry`` or
    ``admit``, no ``axiom`` declared in the file, and no declaration that depends on an axiom
    outside ``allowed_axioms`` (by default Lean's standard three). ``reasons`` says, one line
    each, why a check did not pass.
    """

    ok: bool
    status: CheckStatus
    messages: list[LeanMessage] = Field(default_factory=list)
    uses_sorry: bool = Field(False, description="sorry or admit appears in the file or in a declaration's axioms.")
    declared_axioms: list[str] = Field(default_factory=list, description="Names declared with `axiom` in the file.")
    axioms: dict[str, list[str]] = Field(
        default_factory=dict, description="For each declaration probed with #print axioms, the axioms it depends on."
    )
    disallowed_axioms: list[str] = Field(default_factory=list, description="Axioms used outside the allowed set.")
    reasons: list[str] = Field(default_factory=list)
    sorries: list[SorryGoal] = Field(
        default_factory=list, description="The sorries whose goal the checker reported (Kimina), in the file's lines."
    )
    seconds: float = 0.0
    backend: str = ""
    error: str | None = Field(None, description="What went wrong when status is error or timeout.")

    @property
    def errors(self) -> list[LeanMessage]:
        return [m for m in self.messages if m.severity == "error"]

    def summary(self) -> str:
        """A few lines for a person: the verdict, the reasons, the messages."""
        head = f"{self.status.upper()} ({self.backend}, {self.seconds:.2f} s)"
        lines = [head, *(f"  - {r}" for r in self.reasons)]
        lines += [f"  {m}" for m in self.messages]
        return "\n".join(lines)
