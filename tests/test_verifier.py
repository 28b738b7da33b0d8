"""The verifier role: text scores, the likelihood read-out and its fallbacks, aggregation."""

from __future__ import annotations

import pytest
from scripted import ScriptedBackend, verification_text

from proofcritic import Problem, Verifier
from proofcritic.errors import UnsupportedFeatureError
from proofcritic.llm import CompletionCache, Model
from proofcritic.parsing import SCORE_MARKER
from proofcritic.types import Verification
from proofcritic.verifier import aggregate, score_prefix

PROBLEM = Problem(id="p", statement="Show that 1 + 1 = 2.", max_points=7)


async def test_text_scores_and_issues_are_read():
    backend = ScriptedBackend(
        lambda call: verification_text(
            [1, 0.5, 0][call.index], [("Step 2", "Critical Error", "wrong")] if call.index else []
        )
    )
    verifications = await Verifier(Model(backend)).verify(PROBLEM, "1 + 1 = 2 by definition.", n=3)
    assert [v.score for v in verifications] == [1, 0.5, 0]
    assert all(v.format_ok and v.score_source == "text" for v in verifications)
    assert verifications[2].issues[0].severity == "critical_error" and verifications[2].issues[0].location == "Step 2"
    assert backend.count("verify") == 3 and len({id(c.request) for c in backend.calls}) == 1  # one request, n=3


async def test_a_role_renders_its_template_and_asks_once_for_n_parsed_answers():
    """``Role.ask``, the one render -> sample -> parse -> usage sequence of every role: one
    request of n samples, each parsed, the prompt's tokens counted on the first answer only."""
    from proofcritic._roles import Role
    from proofcritic.verifier import parse_verification

    class Grader(Role):
        template = "verify"

    backend = ScriptedBackend(lambda call: verification_text([1, 0][call.index]))
    grader = Grader(Model(backend))
    answers = await grader.ask(grader.render(problem=PROBLEM, proof="1 + 1 = 2."), parse_verification, 2, seed=7)
    assert [a.score for a in answers] == [1, 0] and backend.count("verify") == 2
    assert len({id(c.request) for c in backend.calls}) == 1 and backend.calls[0].request.config.seed == 7
    assert answers[0].usage.prompt_tokens > 0 and answers[1].usage.prompt_tokens == 0
    assert all(a.usage.completion_tokens > 0 for a in answers)


async def test_auto_mode_without_likelihood_support_keeps_the_format_failure():
    backend = ScriptedBackend(lambda call: "I think it is fine.")
    [v] = await Verifier(Model(backend), score_mode="auto").verify(PROBLEM, "proof")
    assert v.score is None and not v.format_ok and v.score_distribution is None
    with pytest.raises(UnsupportedFeatureError):
        await Verifier(Model(backend), score_mode="logprob").verify(PROBLEM, "proof")


async def test_logprob_mode_on_a_real_model_keeps_the_written_score(tiny_backend, tmp_path):
    backend = ScriptedBackend(lambda call: verification_text(1))
    # the written score comes from the scripted text; the read-out runs on the real tiny model
    model = Model(tiny_backend, cache=CompletionCache(tmp_path / "c.sqlite"))
    written = (await Verifier(Model(backend)).verify(PROBLEM, "proof"))[0]
    verifier = Verifier(model, score_mode="logprob")
    await verifier._read_out(verifier.messages(PROBLEM, "proof"), written)
    assert written.text_score == 1 and written.score_source == "likelihood"
    assert set(written.score_distribution) == {"0", "0.5", "1"}
    assert sum(written.score_distribution.values()) == pytest.approx(1)
    assert written.expected_score == pytest.approx(
        0.5 * written.score_distribution["0.5"] + written.score_distribution["1"]
    )
    assert f"{written.score:g}" == max(written.score_distribution, key=written.score_distribution.get)


def test_score_prefix_cuts_at_the_last_marker():
    raw = f"analysis\n{SCORE_MARKER}\n\\boxed{{7}}"
    assert score_prefix(raw) == f"analysis\n\n{SCORE_MARKER}\n\\boxed{{"
    assert score_prefix("just text  ").endswith("just text\n\n" + SCORE_MARKER + "\n\\boxed{")


def test_aggregate_majority_ties_go_low_and_failures_are_left_out():
    vs = [Verification(score=s) for s in (1, 1, 0.5, 0.5, None)]
    agg = aggregate(vs, max_points=10)
    assert (agg.n, agg.valid, agg.mean, agg.min, agg.max, agg.majority) == (5, 4, 0.75, 0.5, 1, 0.5)
    assert agg.points == 7.5
    assert aggregate([Verification()], 7).mean is None


async def test_guided_mode_keeps_a_written_score_and_asks_nothing_more():
    backend = ScriptedBackend(lambda call: verification_text(0.5))
    [v] = await Verifier(Model(backend), score_mode="guided").verify(PROBLEM, "proof")
    assert v.score == 0.5 and v.score_source == "text" and v.format_ok
    assert len(backend.calls) == 1


async def test_guided_mode_on_a_backend_that_ignores_choices_falls_back_to_the_format_failure():
    # the scripted model answers the guided request with a whole verification, not a choice:
    # that answer is not trusted, and the backend cannot score text, so the failure stands
    backend = ScriptedBackend(lambda call: "I think it is fine.")
    verifier = Verifier(Model(backend), score_mode="guided")
    results = await verifier.verify(PROBLEM, "proof", n=3)
    assert all(v.score is None and v.score_source is None and not v.format_ok for v in results)
    guided = [c for c in backend.calls if c.request.config.choices]
    assert len(guided) == 1 and guided[0].request.messages[-1].role == "assistant"
    assert guided[0].request.messages[-1].content.endswith("\\boxed{")


def test_unknown_score_mode_is_refused():
    with pytest.raises(ValueError, match="guided"):
        Verifier(Model(ScriptedBackend(lambda call: "")), score_mode="sometimes")


async def test_issues_carry_the_span_of_their_quote_in_the_proof():
    proof = "Let $n$ be odd. Then $n^2 - 1 = (n-1)(n+1)$ is a product of two even numbers.\nHence 8 divides it."
    issues = [
        ("Then \\(n^2 - 1 = (n-1)(n+1)\\) is a product", "Minor Error", "notation"),  # other math delimiters
        ("Step 3", "Critical Error", "no quote"),  # a step reference, not a quote: no span
        ("Hence 8 divides it", "Critical Error", "why 8?"),
    ]
    backend = ScriptedBackend(lambda call: verification_text(0, issues))
    [v] = await Verifier(Model(backend)).verify(PROBLEM, proof)
    spans = [issue.span for issue in v.issues]
    assert spans[1] is None
    assert proof[spans[0][0] : spans[0][1]] == "Then $n^2 - 1 = (n-1)(n+1)$ is a product"
    assert proof[spans[2][0] : spans[2][1]] == "Hence 8 divides it"
