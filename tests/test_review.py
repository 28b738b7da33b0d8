"""The review page (``proofcritic review``, issue 21): runs read as review items (label runs and
queues, grade runs with their input, eval run folders), the filters and their counts, issues
marked in the proof without cutting a formula, decisions kept append-only, their export as labels
that training.datasets reads with the human decision winning, the page's key and origin rules,
and the whole flow in headless Chromium driven by Playwright (filter, three verdicts by keyboard,
restart, export, screenshot)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from scripted import ScriptedBackend, meta_text, verification_text
from typer.testing import CliRunner

from proofcritic.cli import app
from proofcritic.grading import grade_jsonl
from proofcritic.llm import Model
from proofcritic.meta_verifier import MetaVerifier
from proofcritic.pipelines.label import LabelConfig, label_jsonl
from proofcritic.pipelines.review import (
    Decision,
    ReviewStore,
    decisions_path,
    export_labels,
    facets,
    load_run,
    matches,
)
from proofcritic.training.datasets import (
    VerifierExample,
    deduplicate,
    examples_from_labels,
    meta_examples_from_labels,
)
from proofcritic.types import Problem
from proofcritic.verifier import Verifier

FLAW = r"so $n^2 \geq 2n$ for every $n$"

PROOFS = [
    # id, proof, what the scripted verifier and meta-verifier make of it
    ("good", r"GOOD. For $n \ge 2$ we have $n^2 = n \cdot n \geq 2n$."),
    ("weak1", r"WEAK. We have $$n^2 - 2n = n(n-2),$$ " + FLAW + "."),
    ("weak2", r"WEAK. Since $n(n-2) \ge 0$ when $n \ge 2$, " + FLAW + ", done."),
    ("weak3", "WEAK. By induction, " + FLAW + " (the base case is clear)."),
    ("bad", r"BAD. Take $n = 1$: then " + FLAW + "."),
]


def _script(call):
    if call.role == "verify":
        if "GOOD." in call.prompt:
            return verification_text(1, analysis="Every step holds: $n \\cdot n \\ge 2n$ for $n \\ge 2$.")
        score = 0 if call.index % 2 == 0 or "BAD." in call.prompt else 0.5
        return verification_text(score, [(FLAW, "Critical Error", "false for $n = 1$")], "The last step fails.")
    return meta_text(1 if "BAD." in call.prompt else 0.5, "The issue is real." if "BAD." in call.prompt else "Unclear.")


def make_label_run(folder: Path) -> tuple[Path, Path, Path]:
    """A real ``label`` run (n=2, m=2, k=1) of the five proofs on the scripted model: "good" is
    labeled 1 (all_correct), "bad" 0 (confirmed_lowest), the three "weak" ones go to review
    (not_enough_confirmed; their two verifications disagree, 0 and 0.5)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "proofs.jsonl"
    rows = []
    for item_id, proof in PROOFS:
        row = {"id": item_id, "problem": r"Prove that $n^2 \geq 2n$ for every integer $n \geq 2$.", "proof": proof}
        if item_id == "weak1":
            row |= {"reference_solution": r"$n^2 - 2n = n(n-2) \ge 0$.", "grading_guidelines": "7 for a full proof."}
        rows.append(json.dumps(row))
    source.write_text("\n".join(rows) + "\n")
    model = Model(ScriptedBackend(_script))
    verifier, meta = Verifier(model, score_mode="text"), MetaVerifier(model)
    out, review = folder / "labels.jsonl", folder / "review.jsonl"
    asyncio.run(label_jsonl(verifier, meta, source, out, review, config=LabelConfig(n=2, m=2, k=1)))
    return source, out, review


def test_label_run_items_filters_and_marks(tmp_path):
    _, labels, review = make_label_run(tmp_path)
    run = load_run(labels)
    assert run.kind == "label" and [i.id for i in run.items] == [p[0] for p in PROOFS]
    assert run.decisions_file == tmp_path / "labels.reviews.jsonl" == decisions_path(labels)
    by_id = {i.id: i for i in run.items}
    assert (by_id["good"].status, by_id["good"].rule, by_id["good"].auto_label) == ("labeled", "all_correct", 1.0)
    assert (by_id["bad"].status, by_id["bad"].rule, by_id["bad"].auto_label) == ("labeled", "confirmed_lowest", 0.0)
    assert by_id["weak1"].problem["reference_solution"] and by_id["weak1"].verifications[0].metas
    store = ReviewStore(run.decisions_file)
    counts = facets(run.items, store)
    assert counts["status"] == {"labeled": 2, "review": 3}
    assert counts["rule"] == {"all_correct": 1, "confirmed_lowest": 1, "not_enough_confirmed": 3}
    assert counts["disagree"] == {"no": 2, "yes": 3} and counts["human"] == {"no": 5}
    assert [i.id for i in run.items if matches(i, store, {"disagree": "yes", "status": "review"})] == [
        "weak1",
        "weak2",
        "weak3",
    ]
    # the review queue is the same kind of run, with the review items only
    assert [i.id for i in load_run(review).items] == ["weak1", "weak2", "weak3"]

    from proofcritic.server.review import proof_html

    item = by_id["weak1"]
    html = str(proof_html(item.proof, item))
    # one mark for the flaw both verifications quote, the formula inside it whole
    assert html.count("<mark") == 1 and 'data-issues="v0-i0 v1-i0"' in html
    assert r">so $n^2 \geq 2n$ for every $n$</mark>" in html
    # a span cut inside a formula is widened to the whole formula (MathJax reads one text node)
    item.verifications[0].issues[0].span = (item.proof.index("2n$") + 1, item.proof.index("every") + 5)
    item.verifications[1].issues = []
    html = str(proof_html(item.proof, item))
    assert r"<mark class=" in html and r">$n^2 \geq 2n$ for every</mark>" in html


def test_decisions_are_appended_and_exported_as_labels_humans_win(tmp_path):
    _, labels, _ = make_label_run(tmp_path)
    run = load_run(labels)
    store = ReviewStore(run.decisions_file)
    store.record(Decision(id="weak1", label=0.5, comment="gap at the end", reviewer="ana"))
    store.record(Decision(id="weak2", label=1, reviewer="ana"))
    store.record(Decision(id="weak2", label=0, comment="changed my mind", reviewer="bo"))
    store.record(Decision(id="bad", label=0.5, reviewer="bo"))  # overrides an automatic label
    lines = run.decisions_file.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[1])["label"] == 1  # append-only: nothing rewritten

    again = ReviewStore(run.decisions_file)  # a restart reads the latest decision of each item
    assert again.get("weak2").label == 0 and again.get("weak2").reviewer == "bo" and again.get("weak2").time
    out = tmp_path / "reviewed.jsonl"
    counts = export_labels(run, again, out)
    assert counts == {"records": 5, "human": 3, "auto": 2, "left_out": 0}
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert records["weak1"]["rule"] == "human" and records["weak1"]["auto"]["status"] == "review"
    assert records["weak1"]["review"]["comment"] == "gap at the end" and "by ana" in records["weak1"]["reason"]
    assert records["weak3"]["status"] == "review"  # not reviewed: the auto record as it was

    before = {e.proof: e.score for e in examples_from_labels(labels)}
    d_v = {e.proof: e for e in examples_from_labels(out)}
    proof = dict(PROOFS)
    assert proof["weak1"] not in before and d_v[proof["weak1"]].score == 0.5  # a review item now has a label
    assert d_v[proof["weak2"]].score == 0 and d_v[proof["weak2"]].source == "human"
    assert before[proof["bad"]] == 0 and d_v[proof["bad"]].score == 0.5  # the human label wins over the auto one
    assert d_v[proof["good"]].source == "label" and proof["weak3"] not in d_v
    assert len(meta_examples_from_labels(out)) == len(meta_examples_from_labels(labels)) > 0  # D_mv as before

    # given auto-labels and the export together, the human example replaces the automatic one
    merged = deduplicate([*examples_from_labels(labels), *examples_from_labels(out)])
    assert {e.proof: e.score for e in merged}[proof["bad"]] == 0.5
    problem = Problem(statement="P")
    auto, human = (
        VerifierExample(problem=problem, proof="x", score=s, source=w) for s, w in ((1, "label"), (0, "human"))
    )
    assert deduplicate([auto, human]) == [human] and deduplicate([human, auto]) == [human]


def test_decision_needs_a_verdict():
    with pytest.raises(ValueError, match="needs a label"):
        Decision(id="a", reviewer="r")
    with pytest.raises(ValueError, match=r"not 0, 0\.5 or 1"):
        Decision(id="a", label=0.7, reviewer="r")


def test_grade_run_needs_its_input_and_eval_run_folder(tmp_path):
    source, _, _ = make_label_run(tmp_path)
    graded = tmp_path / "graded.jsonl"
    model = Model(ScriptedBackend(_script))
    asyncio.run(grade_jsonl(Verifier(model, score_mode="text"), source, graded, n=2))
    with pytest.raises(Exception, match="give the batch input it graded with --input"):
        load_run(graded)
    run = load_run(graded, inputs=source)
    assert run.kind == "grade" and {i.id: i.status for i in run.items}["good"] == "verdict"
    weak = run.item("weak2")
    assert weak.proof == dict(PROOFS)["weak2"] and weak.problem["statement"].startswith("Prove")
    assert weak.disagreement and weak.verifications[0].issues[0].span is not None
    store = ReviewStore(run.decisions_file)
    store.record(Decision(id="weak2", label=0, reviewer="ana"))
    out = tmp_path / "g.jsonl"
    assert export_labels(run, store, out)["human"] == 1  # unreviewed grade items have no label to export
    (example,) = examples_from_labels(out)
    assert example.score == 0 and example.source == "human"

    from test_report import STRICT, scripted_grade_run

    folder = asyncio.run(scripted_grade_run(tmp_path / "eval", STRICT)).path
    run = load_run(folder)
    assert run.kind == "eval" and run.decisions_file == folder / "reviews.jsonl"
    by_id = {i.id: i for i in run.items}
    assert by_id["g7"].status == "error" and by_id["g8"].status == "no_verdict" and by_id["g1"].human_points == 7


def _client(tmp_path, keys=()):
    from fastapi.testclient import TestClient

    from proofcritic.server.review import ReviewSettings, create_review_app

    _, labels, _ = make_label_run(tmp_path)
    run = load_run(labels)
    return TestClient(create_review_app(ReviewSettings(run=run, reviewer="tester", api_keys=list(keys)))), run


def test_page_keys_origin_and_form_errors(tmp_path):
    client, run = _client(tmp_path, keys=["sekrit"])
    answer = client.get("/review/", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/review/login"
    assert client.post("/review/item/weak1", data={"label": "1"}).status_code == 401
    assert client.get("/review/static/mathjax/tex-chtml.js").status_code == 200  # no key for static files
    assert client.post("/review/login", data={"key": "wrong"}).status_code == 401
    answer = client.post("/review/login", data={"key": "sekrit"}, follow_redirects=False)
    assert answer.status_code == 303 and "httponly" in answer.headers["set-cookie"].lower()
    page = client.get("/review/?status=review")
    assert page.status_code == 200 and "3 of 5 items shown" in page.text
    # another site's form is refused; a bad label is a 400 that says why; nothing recorded
    foreign = client.post("/review/item/weak1", data={"label": "1"}, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    bad = client.post("/review/item/weak1", data={"label": "0.7"})
    assert bad.status_code == 400 and "not 0, 0.5 or 1" in bad.text
    assert not run.decisions_file.exists()
    saved = client.post("/review/item/weak1", data={"label": "0.5", "next": "weak2", "status": "review"})
    assert saved.status_code == 200 and str(saved.url).endswith("/review/item/weak2?status=review&saved=weak1")
    assert json.loads(run.decisions_file.read_text())["reviewer"] == "tester"
    exported = client.get("/review/export")
    assert exported.headers["x-proofcritic-human"] == "1" and len(exported.text.splitlines()) == 5


def test_cli_refuses_a_wide_address_without_keys_and_exports(tmp_path):
    _, labels, _ = make_label_run(tmp_path)
    env = {"PROOFCRITIC_SERVICE_KEYS": "", "PROOFCRITIC_API_KEYS": ""}
    result = CliRunner().invoke(app, ["review", str(labels), "--host", "0.0.0.0"], env=env)
    assert result.exit_code != 0 and "give it keys" in str(result.exception)
    ReviewStore(decisions_path(labels)).record(Decision(id="weak3", label=0, reviewer="ana"))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["review", str(labels), "--export", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 5 label record(s)" in result.output and "1 from human review" in result.output
    assert {e.proof: e.score for e in examples_from_labels(out)}[dict(PROOFS)["weak3"]] == 0


# --------------------------------------------------------------------------- in a real browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(labels: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "proofcritic", "review", str(labels), "--port", str(port), "--reviewer", "ana"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return process
        except OSError:
            if process.poll() is not None:
                raise AssertionError(f"review exited: {process.stderr.read().decode()}") from None
            time.sleep(0.2)
    process.kill()
    raise AssertionError("the review page did not start in 60 s")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


CHROMIUM = shutil.which("chromium")


@pytest.mark.chromium
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_review_flow_in_headless_chromium(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
    _, labels, _ = make_label_run(tmp_path)
    port = _free_port()
    base = f"http://127.0.0.1:{port}/review/"
    server = _serve(labels, port)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(base)
            assert "5 of 5 items shown; 0 reviewed" in page.inner_text("#count")
            page.click('[data-facet="status"] a[data-value="review"]')  # filter: the review queue
            assert page.inner_text("#count").startswith("3 of 5 items shown")
            assert page.locator('[data-facet="disagree"] a[data-value="yes"]').inner_text() == "yes (3)"
            page.keyboard.press("j")  # the second row is current; Enter opens it
            assert page.locator("tr.current").get_attribute("data-id") == "weak2"
            page.keyboard.press("k")
            page.keyboard.press("Enter")
            page.wait_for_url("**/item/weak1?status=review")
            # MathJax, served from the installed package, typeset the proof; the flaw is marked
            page.wait_for_selector("#proof-text mjx-container", timeout=30_000)
            assert page.locator("#proof-text mark.issue mjx-container").count() == 2
            assert page.locator("#reference mjx-container").count() >= 1 and page.locator("#guidelines").count() == 1
            assert page.locator(".metas").count() == 2 and "not_enough_confirmed" in page.inner_text("#evidence")
            page.click(".issue-item >> nth=0")
            assert page.locator("mark.flash").count() == 1
            screenshot = tmp_path / "review-item.png"
            page.screenshot(path=str(screenshot), full_page=True)
            shutil.copy(screenshot, Path("/tmp") / "proofcritic-review-item-screenshot.png")
            # Enter in a field records nothing (it would submit with the first button, "correct")
            page.keyboard.press("p")
            page.keyboard.type("3")
            page.keyboard.press("Enter")
            page.wait_for_timeout(300)
            assert page.url.endswith("/item/weak1?status=review") and not decisions_path(labels).exists()
            page.keyboard.press("Escape")
            # three verdicts by keyboard: weak1 half (with a comment and 3 points), weak2 wrong, weak3 correct
            page.keyboard.press("c")
            page.keyboard.type("the last step is unjustified")
            page.keyboard.press("Escape")
            page.keyboard.press("h")
            page.wait_for_url("**/item/weak2?status=review&saved=weak1")
            assert "Saved the verdict on weak1" in page.inner_text("#saved")
            page.keyboard.press("0")
            page.wait_for_url("**/item/weak3?*saved=weak2")
            page.keyboard.press("1")
            page.wait_for_url("**saved=weak3")
            page.keyboard.press("u")
            page.wait_for_url(base + "?status=review")
            assert "3 reviewed" in page.inner_text("#count")
            browser.close()

        _stop(server)  # a restart: the decisions are read back from the file beside the run
        decisions = [json.loads(line) for line in decisions_path(labels).read_text().splitlines()]
        assert decisions[0]["points"] == 3 and decisions[0]["comment"] == "the last step is unjustified"
        assert [(d["id"], d["label"], d["reviewer"]) for d in decisions] == [
            ("weak1", 0.5, "ana"),
            ("weak2", 0, "ana"),
            ("weak3", 1, "ana"),
        ]
        server = _serve(labels, port)
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(base + "?human=yes")
            assert page.inner_text("#count").startswith("3 of 5 items shown; 3 reviewed")
            page.goto(base + "item/weak1")
            recorded = page.inner_text("#current-decision")
            assert "0.5" in recorded and "ana" in recorded and "the last step is unjustified" in recorded
            assert page.locator("#label-h.chosen").count() == 1
            page.screenshot(path=str(tmp_path / "review-list.png"))
            page.goto(base + "?human=yes")
            page.screenshot(path=str(Path("/tmp") / "proofcritic-review-list-screenshot.png"))
            with page.expect_download() as download:
                page.click("#export")
            exported = tmp_path / "exported.jsonl"
            download.value.save_as(exported)
            browser.close()
    finally:
        _stop(server)
    scores = {e.proof: (e.score, e.source) for e in examples_from_labels(exported)}
    proof = dict(PROOFS)
    assert scores[proof["weak1"]] == (0.5, "human") and scores[proof["weak2"]] == (0, "human")
    assert scores[proof["weak3"]] == (1, "human") and scores[proof["good"]] == (1, "label")


def test_the_service_serves_the_page_behind_its_keys(tmp_path):
    """``serve --review RUN``: the page on the service's own app, behind the service's keys."""
    from fastapi.testclient import TestClient

    from proofcritic.server import ServerSettings, create_app
    from proofcritic.server.review import ReviewSettings

    _, labels, _ = make_label_run(tmp_path / "run")
    review = ReviewSettings(run=load_run(labels), reviewer="svc", api_keys=["k1"])
    settings = ServerSettings(
        model=Model(ScriptedBackend(_script)), db_path=tmp_path / "jobs.sqlite", api_keys=["k1"], review=review
    )
    with TestClient(create_app(settings)) as client:
        assert client.get("/v1/stats").status_code == 401
        assert client.get("/review/", follow_redirects=False).headers["location"] == "/review/login"
        bearer = {"Authorization": "Bearer k1"}
        assert client.get("/v1/stats", headers=bearer).status_code == 200
        page = client.get("/review/item/bad", headers=bearer)
        assert page.status_code == 200 and "confirmed_lowest" in page.text and "<mark" in page.text
        client.post("/review/item/bad", data={"label": "0.5"}, headers=bearer)
    assert ReviewStore(decisions_path(labels)).get("bad").reviewer == "svc"


def test_an_item_id_with_a_slash_and_a_space(tmp_path):
    from fastapi.testclient import TestClient

    from proofcritic.server.review import ReviewSettings, create_review_app

    _, labels, _ = make_label_run(tmp_path)
    records = [json.loads(line) for line in labels.read_text().splitlines()]
    records[1]["id"] = "imo 2024/p1"
    odd = tmp_path / "odd.jsonl"
    odd.write_text("".join(json.dumps(r) + "\n" for r in records))
    run = load_run(odd)
    client = TestClient(create_review_app(ReviewSettings(run=run)))
    listing = client.get("/review/")
    assert 'href="/review/item/imo%202024/p1"' in listing.text
    assert client.get("/review/item/imo%202024/p1").status_code == 200
    saved = client.post("/review/item/imo%202024/p1", data={"label": "0", "next": "imo 2024/p1"})
    assert saved.status_code == 200 and "Saved the verdict on imo 2024/p1" in saved.text
    assert ReviewStore(run.decisions_file).get("imo 2024/p1").label == 0


DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (DATA / "dsmv2" / "outputs").exists(), reason="shared data not present")
def test_eval_run_gets_its_problems_from_the_suite_and_exports(tmp_path):
    run = tmp_path / "run"
    args = ["eval", "grade", "--suite", "dsmv2-human", "--from-recorded", "average_automatic_rating"]
    result = CliRunner().invoke(app, [*args, "--limit", "4", "--run", str(run), "--data-dir", str(DATA)])
    assert result.exit_code == 0, result.output
    first = load_run(run).items[0]
    assert not first.problem["statement"]  # the run keeps the problem's id only
    ReviewStore(decisions_path(run)).record(Decision(id=first.id, label=0.5, reviewer="ana"))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["review", str(run), "--data-dir", str(DATA), "--export", str(out)])
    assert result.exit_code == 0, result.output
    assert "problem statements: 4 of 4 item(s) from suite dsmv2-human" in result.output
    assert "1 from human review" in result.output
    (example,) = examples_from_labels(out)
    assert example.score == 0.5 and example.proof == first.proof and len(example.problem.statement) > 20
    # without the data the statements are missing: the reviewed item is left out, and said to be
    result = CliRunner().invoke(app, ["review", str(run), "--data-dir", str(tmp_path), "--export", str(out)])
    assert "could not be read" in result.output and "1 reviewed item(s) left out" in result.output
