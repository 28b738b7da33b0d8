"""A scripted model for testing pipeline logic: a test double of the MODEL, never of the
component under test. It recognises which role a request is for from the built-in prompts and
answers with text chosen by the test, written in the real output protocol, so the real roles,
parsers and pipelines run on it unchanged."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from proofcritic.llm import Backend, ChatMessage, ChatRequest, Completion
from proofcritic.parsing import (
    EVALUATION_MARKER,
    FIRST_ERROR_MARKER,
    META_SCORE_MARKER,
    POINTS_MARKER,
    SCORE_MARKER,
)

ROLE_SIGNATURES = (
    # the agent loop's prompts (proofcritic/pipelines/agent.py) include verify.j2 or generate.j2,
    # so their signatures come before those of the core roles
    ("agent_judge", "You are reading a verification log"),
    ("teacher_correct", "You are a teacher correcting a student's solution"),  # shape (issue #19)
    ("thought_templates", "You are a teacher writing study notes"),  # shape --templates
    ("agent_reverify", "## The author's response to an earlier review"),
    ("agent_repair", "## Bug report"),
    ("agent_improve", "## Your solution so far"),
    ("meta_verify", "You are reviewing the work of a grader"),
    ("refine", "## Earlier attempts"),
    ("normalize", "Rewrite the proof below in a plain, neutral style"),
    ("rubric", "You write marking schemes for olympiad mathematics"),
    ("reconcile", "Other graders on the panel graded the same solution"),
    ("compare", "Decide which one is the more complete and rigorous proof"),
    ("rollout", "Continue the solution below"),
    ("verify_steps", "You check a solution to a competition mathematics problem one step at a time"),
    ("verify", "You are an expert grader"),
    ("tora", "## Computing while you solve"),  # tora_generate.j2 includes generate.j2
    ("critique_answer", "Decide whether the final answer of the solution below is correct"),  # eval critic
    ("correct_answer", "## A solution that was judged wrong"),  # eval critic; includes generate.j2
    ("generate", "Your task is to solve the problem"),
)


def role_of(prompt: str) -> str:
    for role, signature in ROLE_SIGNATURES:
        if signature in prompt:
            return role
    raise AssertionError(f"the scripted model does not recognise this prompt: {prompt[:200]!r}")


@dataclass
class Call:
    """One sample the scripted model was asked for."""

    role: str
    prompt: str
    index: int
    request: ChatRequest


def verification_text(
    score: float, issues: list[tuple[str, str, str]] = (), analysis: str = "Checked each step."
) -> str:
    """A verifier output; ``issues`` are (location, severity, description)."""
    lines = [EVALUATION_MARKER, "", analysis, "", "### Issues", ""]
    if issues:
        lines += [f'- **Location:** "{loc}" | **Severity:** {sev} | **Issue:** {desc}' for loc, sev, desc in issues]
    else:
        lines.append("- None")
    lines += ["", SCORE_MARKER, f"\\boxed{{{score:g}}}"]
    return "\n".join(lines)


def step_verification_text(verdicts: Sequence[str], first_error: int | str | None = "auto") -> str:
    """A step verifier output: one verdict per step (``correct`` / ``incorrect`` /
    ``unjustified``) and the first wrong step (1-based; ``"auto"``: the first incorrect one)."""
    if first_error == "auto":
        first_error = next((i + 1 for i, v in enumerate(verdicts) if v == "incorrect"), None)
    lines = ["I read every step.", "", "### Step verdicts", ""]
    lines += [f"Step {i}: {verdict} - reason {i}" for i, verdict in enumerate(verdicts, start=1)]
    lines += ["", FIRST_ERROR_MARKER, f"\\boxed{{{'none' if first_error is None else first_error}}}"]
    return "\n".join(lines)


def points_output(points: int, analysis: str = "Checked.") -> str:
    """A points verifier output (``--scale points``) with one reported issue."""
    issue = '- **Location:** "step 2" | **Severity:** Critical Error | **Issue:** gap'
    return f"{EVALUATION_MARKER}\n{analysis}\n\n### Issues\n\n{issue}\n\n{POINTS_MARKER}\n\\boxed{{{points}}}"


def generation_text(proof: str, self_score: float, analysis: str = "I checked my proof.") -> str:
    """A generator output with its self-evaluation."""
    return "\n".join(
        [
            "## Solution",
            "",
            proof,
            "",
            "## Self Evaluation",
            "",
            EVALUATION_MARKER,
            analysis,
            "",
            SCORE_MARKER,
            f"\\boxed{{{self_score:g}}}",
        ]
    )


def meta_text(score: float, analysis: str = "The issues are examined.") -> str:
    """A meta-verifier output."""
    return f"{analysis}\n\n{META_SCORE_MARKER}\n\\boxed{{{score:g}}}"


def judge_text(passed: bool, reason: str = "The log reports no defect.") -> str:
    """An agent judge output: ``\\boxed{yes}`` (pass) or ``\\boxed{no}`` (fail)."""
    return f"{reason}\n\n\\boxed{{{'yes' if passed else 'no'}}}"


def repair_text(proof: str, self_score: float = 1, disputes: list[tuple[str, str]] = ()) -> str:
    """An agent repair output: a ``## Disputes`` section with the (item, reason) pairs (``- None``
    without any), then a generator output."""
    items = [f'- **Item:** "{item}" | **Reason:** {reason}' for item, reason in disputes] or ["- None"]
    return "\n".join(["## Disputes", "", *items, "", generation_text(proof, self_score)])


class ScriptedBackend(Backend):
    """Answers every sample with ``script(call)``; records every call in ``calls``.

    ``likelihood(text)``, when given, is the model's log-likelihood of a conversation (its
    messages' contents joined by newlines, the continuation appended to the last one): the
    backend then scores text as a real one does (the verifier's read-outs), and records each
    scored text in ``scored``. Without it the backend cannot score text, like most servers.
    """

    name = "scripted"
    model = "roles"

    def __init__(
        self,
        script: Callable[[Call], str | tuple[str, str]],
        delay: float = 0.0,
        likelihood: Callable[[str], float] | None = None,
    ):
        self.script = script
        self.delay = delay
        self.likelihood = likelihood
        self.calls: list[Call] = []
        self.scored: list[str] = []

    async def sequence_logprobs(self, messages: Sequence[ChatMessage], continuations: Sequence[str]) -> list[float]:
        if self.likelihood is None:
            return await super().sequence_logprobs(messages, continuations)
        prompt = "\n".join(m.content for m in messages)
        texts = [prompt + continuation for continuation in continuations]
        self.scored += texts
        return [self.likelihood(text) for text in texts]

    async def generate(self, request: ChatRequest) -> list[Completion]:
        if self.delay:
            await asyncio.sleep(self.delay)
        prompt = "\n".join(m.content for m in request.messages)
        role = role_of(prompt)
        out = []
        for index in range(request.config.n):
            call = Call(role=role, prompt=prompt, index=index, request=request)
            self.calls.append(call)
            answer = self.script(call)
            text, finish = answer if isinstance(answer, tuple) else (answer, "stop")
            out.append(
                Completion(
                    text=text, finish_reason=finish, prompt_tokens=len(prompt) // 4, completion_tokens=len(text) // 4
                )
            )
        return out

    def count(self, role: str) -> int:
        return sum(1 for c in self.calls if c.role == role)


def write_points_labels(folder, statement: str):
    """``label --scale points`` output, labelled by the real pipeline (n=3, m=2, k=2) on a
    scripted model, in ``folder/labels.jsonl``: proof "gap" gets 7, 3, 3 of 7 and the
    meta-verifier confirms the 3s (label 3/7); proof "full" gets 7 three times (label 1); proof
    "muddle" gets 2, 5, 5, each analysis refuted once and confirmed once (review)."""
    import json

    from proofcritic.llm import Model
    from proofcritic.meta_verifier import MetaVerifier
    from proofcritic.pipelines.label import LabelConfig, label_jsonl
    from proofcritic.verifier import PointsVerifier

    grades = {"gap": [7, 3, 3], "full": [7, 7, 7], "muddle": [2, 5, 5]}

    def script(call: Call) -> str:
        proof = next(name for name in grades if f"Proof {name}." in call.prompt)
        if call.role == "meta_verify":
            return meta_text(0 if proof == "muddle" and call.index == 0 else 1)
        return points_output(grades[proof][call.index], f"Analysis of {proof} #{call.index}.")

    source, output = folder / "label_input.jsonl", folder / "labels.jsonl"
    records = [
        {"id": name, "problem": {"statement": statement, "max_points": 7}, "proof": f"Proof {name}."} for name in grades
    ]
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    model = Model(ScriptedBackend(script))
    asyncio.run(
        label_jsonl(
            PointsVerifier(model),
            MetaVerifier(model),
            source,
            output,
            folder / "review.jsonl",
            config=LabelConfig(n=3, m=2, k=2),
            concurrency=1,  # the records in input order
        )
    )
    return output
