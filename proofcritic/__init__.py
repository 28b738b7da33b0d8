"""proofcritic: make language models grade, critique and repair natural-language math proofs.

Quick use::

    from proofcritic import Problem, grade_proof
    result = grade_proof(Problem(statement="..."), "proof text", model="transformers/smollm2", n=4)
    print(result.aggregate.mean, result.aggregate.points)

Async code builds the pieces itself: ``get_model`` -> ``Verifier`` -> ``await grade(...)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._constants import DEFAULT_SCORE_MODE
from ._lazy import lazy_names
from .errors import (
    AuthenticationError,
    BackendError,
    InputError,
    MissingDependencyError,
    ModelNotFoundError,
    PromptError,
    ProofcriticError,
    UnsupportedFeatureError,
)

if TYPE_CHECKING:
    from .generator import Candidate, Generator
    from .grading import grade, grade_jsonl
    from .llm import GenerateConfig, Model, get_model
    from .meta_verifier import MetaVerifier
    from .promptset import PromptSet
    from .steps import Step, split_steps
    from .types import (
        Aggregate,
        Generation,
        GradeResult,
        Issue,
        MetaVerification,
        Problem,
        Proof,
        StepVerification,
        Verification,
    )
    from .verifier import StepVerifier, Verifier

#: the public names imported on first use (PEP 562), so that ``import proofcritic`` and the
#: command line's parser load no model, pydantic or numpy code: name -> its module
_LAZY = {
    "Candidate": ".generator",
    "Generator": ".generator",
    "grade": ".grading",
    "grade_jsonl": ".grading",
    "GenerateConfig": ".llm",
    "Model": ".llm",
    "get_model": ".llm",
    "MetaVerifier": ".meta_verifier",
    "PromptSet": ".promptset",
    **dict.fromkeys(
        (
            "Aggregate",
            "Generation",
            "GradeResult",
            "Issue",
            "MetaVerification",
            "Problem",
            "Proof",
            "StepVerification",
            "Verification",
        ),
        ".types",
    ),
    "Verifier": ".verifier",
    "StepVerifier": ".verifier",
    **dict.fromkeys(("Step", "split_steps"), ".steps"),
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals(), submodules=True)


__version__ = "0.1.0"


def grade_proof(
    problem: Problem | str,
    proof: Proof | str,
    *,
    model: str | Model = "transformers/smollm2",
    n: int = 1,
    score_mode: str = DEFAULT_SCORE_MODE,
    config: GenerateConfig | None = None,
    prompts: PromptSet | str | None = None,
    cache: bool | str = True,
) -> GradeResult:
    """Grade one proof synchronously (for scripts and notebooks without an event loop)."""
    import asyncio

    from .grading import grade
    from .llm import Model, get_model
    from .promptset import PromptSet
    from .types import Problem
    from .verifier import Verifier

    problem = problem if isinstance(problem, Problem) else Problem(statement=problem)
    prompt_set = prompts if isinstance(prompts, PromptSet) else PromptSet.load(prompts)

    async def run() -> GradeResult:
        the_model = model if isinstance(model, Model) else get_model(model, cache=cache)
        verifier = Verifier(the_model, prompts=prompt_set, config=config, score_mode=score_mode)  # type: ignore[arg-type]
        try:
            return await grade(verifier, problem, proof, n=n)
        finally:
            if not isinstance(model, Model):
                await the_model.aclose()

    return asyncio.run(run())


__all__ = [
    "Aggregate",
    "AuthenticationError",
    "BackendError",
    "Candidate",
    "GenerateConfig",
    "Generation",
    "Generator",
    "GradeResult",
    "InputError",
    "Issue",
    "MetaVerification",
    "MetaVerifier",
    "MissingDependencyError",
    "Model",
    "ModelNotFoundError",
    "Problem",
    "PromptError",
    "PromptSet",
    "Proof",
    "ProofcriticError",
    "Step",
    "StepVerification",
    "StepVerifier",
    "UnsupportedFeatureError",
    "Verification",
    "Verifier",
    "get_model",
    "grade",
    "grade_jsonl",
    "grade_proof",
    "split_steps",
]
