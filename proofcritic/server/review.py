"""The review page (``proofcritic review RUN``): people in the loop look at a run's items and
record their verdicts.

Server-rendered jinja2 templates (``server/templates/review_*.html``) on a FastAPI app; the math
is typeset by MathJax served from the installed ``django-static-mathjax`` package (no CDN: the
page works offline); a little inline JavaScript gives the keyboard keys. Routes, all under
``/review``:

- ``GET /review/`` the items with filters (``status``, ``rule``, ``disagree``, ``human``) and
  their counts;
- ``GET /review/item/{id}`` one item: problem, reference solution and guidelines, the proof with
  each located issue marked at its place, every verification with its score, issues and
  meta-verifications, the labeling rule's evidence, and the verdict form;
- ``POST /review/item/{id}`` records a verdict (form fields ``label`` or ``points``, ``comment``,
  ``reviewer``) in the decisions file at once, then goes on to the next item of the queue;
- ``GET /review/export`` the labels (JSONL; :func:`proofcritic.pipelines.review.export_labels`);
- ``GET /review/login`` / ``POST /review/login`` when the page has keys: a browser cannot send
  ``Authorization: Bearer``, so the key is sent once and kept in an HttpOnly, SameSite=Strict cookie.

With keys every route but the login and the static files needs the key (the header or the
cookie); a POST whose ``Origin`` is another site is refused (403) in every case.
"""

from __future__ import annotations

import hmac
import importlib.util
import itertools
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from pydantic import ValidationError

from ..errors import missing, validation_line
from ..pipelines.review import (
    Decision,
    ReviewItem,
    ReviewRun,
    ReviewStore,
    export_labels,
    facets,
    matches,
)

__all__ = [
    "COOKIE",
    "ReviewSettings",
    "create_review_app",
    "mathjax_dir",
    "mount_review",
    "proof_html",
    "review_router",
]

#: the cookie that holds a reviewer's key once they logged in
COOKIE = "proofcritic_review_key"
FILTERS = ("status", "rule", "disagree", "human")
TEMPLATES = Path(__file__).parent / "templates"

# math the page typesets: an issue mark never cuts through one (MathJax reads one text node)
_MATH = re.compile(r"\$\$.+?\$\$|\\\[.+?\\\]|\\\(.+?\\\)|(?<!\\)\$(?:\\.|[^$\\])+?\$", re.DOTALL)


def mathjax_dir() -> Path:
    """The folder of MathJax's browser build (``es5``) in the installed ``django-static-mathjax``."""
    spec = importlib.util.find_spec("mathjax")  # found, not imported: it is a Django app
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        folder = Path(root) / "static" / "mathjax" / "es5"
        if (folder / "tex-chtml.js").exists():
            return folder
    raise missing("django-static-mathjax", "server")


@dataclass
class ReviewSettings:
    """What the review page serves: the run, its decisions, who reviews by default, the keys."""

    run: ReviewRun
    reviewer: str = "reviewer"
    api_keys: list[str] = field(default_factory=list)


def _widen(span: tuple[int, int], text: str, math: list[tuple[int, int]]) -> tuple[int, int]:
    start, end = max(0, min(span[0], len(text))), max(0, min(span[1], len(text)))
    for a, b in math:
        if a < start < b:
            start = a
        if a < end < b:
            end = b
    return start, end


def proof_html(text: str, item: ReviewItem) -> Markup:
    """The proof, escaped, with each located issue inside ``<mark>`` (widened to whole formulas);
    overlapping issues share the marks of the text they both cover."""
    math = [m.span() for m in _MATH.finditer(text)]
    spans: list[tuple[int, int, str, str]] = []
    for view in item.verifications:
        for issue in view.issues:
            if issue.span is not None and issue.span[1] > issue.span[0]:
                start, end = _widen(issue.span, text, math)
                spans.append((start, end, issue.key, issue.severity))
    cuts = sorted({0, len(text), *(s for s, _, _, _ in spans), *(e for _, e, _, _ in spans)})
    out: list[str] = []
    for a, b in itertools.pairwise(cuts):
        piece = str(escape(text[a:b]))
        covering = [(key, severity) for s, e, key, severity in spans if s <= a and b <= e]
        if covering:
            keys = " ".join(k for k, _ in covering)
            severe = "critical" if any(sev == "critical_error" for _, sev in covering) else "gap"
            first = covering[0][0]
            out.append(
                f'<mark class="issue {severe}" data-issues="{keys}" id="at-{first}-{a}" '
                f'title="{len(covering)} issue(s): {keys}">{piece}</mark>'
            )
        else:
            out.append(piece)
    return Markup("".join(out))


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True
    )
    env.filters["num"] = lambda v: "—" if v is None else f"{v:g}"
    return env


def _filters(request: Request) -> dict[str, str]:
    return {name: request.query_params.get(name, "") for name in FILTERS}


def _query(filters: dict[str, str], **more: str) -> str:
    given = {k: v for k, v in {**filters, **more}.items() if v}
    return ("?" + urlencode(given)) if given else ""


def _origin_ok(request: Request) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host", "")


def review_router(settings: ReviewSettings) -> APIRouter:
    """The routes of the review page (see the module docstring) for one run."""
    run = settings.run
    store = ReviewStore(run.decisions_file)
    env = _environment()
    keys = [k.encode() for k in settings.api_keys]
    router = APIRouter(prefix="/review", include_in_schema=False)

    def authorized(request: Request) -> bool:
        if not keys:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else request.cookies.get(COOKIE, "")
        return bool(given) and any(hmac.compare_digest(given.encode(), key) for key in keys)

    def guard(request: Request) -> RedirectResponse | None:
        if authorized(request):
            return None
        return RedirectResponse("/review/login", status_code=303)

    def page(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(run=run, store=store, keys=bool(keys), **context)
        return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})

    def queue(filters: dict[str, str]) -> list[ReviewItem]:
        return [item for item in run.items if matches(item, store, filters)]

    @router.get("/login")
    async def login_form(request: Request) -> Response:
        if not keys:
            return RedirectResponse("/review/", status_code=303)
        return page("review_login.html", error="")

    @router.post("/login")
    async def login(request: Request) -> Response:
        if not _origin_ok(request):
            raise HTTPException(403, "a form from another site")
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (form.get("key") or [""])[0].strip()
        if not keys or not any(hmac.compare_digest(given.encode(), key) for key in keys):
            return page("review_login.html", status_code=401, error="That key is not one of this page's keys.")
        answer = RedirectResponse("/review/", status_code=303)
        answer.set_cookie(COOKIE, given, httponly=True, samesite="strict")
        return answer

    @router.get("/")
    async def item_list(request: Request) -> Response:
        if (redirect := guard(request)) is not None:
            return redirect
        filters = _filters(request)
        shown = queue(filters)
        return page(
            "review_list.html",
            items=shown,
            filters=filters,
            facets=facets(run.items, store),
            query=_query(filters),
            reviewed=sum(1 for i in run.items if store.get(i.id) is not None),
            qs=_query,
        )

    def item_page(request: Request, item_id: str, filters: dict[str, str], error: str = "", status: int = 200):
        item = run.item(item_id)
        if item is None:
            raise HTTPException(404, f"no item {item_id!r} in this run")
        shown = queue(filters)
        ids = [i.id for i in shown]
        at = ids.index(item_id) if item_id in ids else -1
        previous = ids[at - 1] if at > 0 else None
        following = ids[at + 1] if 0 <= at < len(ids) - 1 else None
        if at < 0 and ids:  # the item left the filter (e.g. just reviewed): the queue's first
            following = ids[0]
        return page(
            "review_item.html",
            status_code=status,
            item=item,
            decision=store.get(item_id),
            proof=proof_html(item.proof, item),
            position=(at + 1, len(ids)),
            previous=previous,
            following=following,
            filters=filters,
            query=_query(filters),
            reviewer=request.cookies.get("proofcritic_reviewer") or settings.reviewer,
            error=error,
            saved=request.query_params.get("saved", ""),
        )

    @router.get("/item/{item_id:path}")
    async def show_item(item_id: str, request: Request) -> Response:
        if (redirect := guard(request)) is not None:
            return redirect
        return item_page(request, item_id, _filters(request))

    @router.post("/item/{item_id:path}")
    async def record(item_id: str, request: Request) -> Response:
        if not authorized(request):
            raise HTTPException(401, "log in first (/review/login)")
        if not _origin_ok(request):
            raise HTTPException(403, "a form from another site")
        item = run.item(item_id)
        if item is None:
            raise HTTPException(404, f"no item {item_id!r} in this run")
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        filters = {name: form.get(name, "") for name in FILTERS}
        try:
            decision = Decision(
                id=item_id,
                label=float(form["label"]) if form.get("label", "").strip() else None,
                points=float(form["points"]) if form.get("points", "").strip() else None,
                comment=form.get("comment", "").strip(),
                reviewer=form.get("reviewer", "").strip() or settings.reviewer,
            )
        except ValidationError as error:
            return item_page(request, item_id, filters, error=validation_line(error), status=400)
        except ValueError:
            return item_page(request, item_id, filters, error="label and points must be numbers", status=400)
        if item.scale == "points" and decision.label is None and decision.points is None:
            return item_page(request, item_id, filters, error="give points", status=400)
        if item.scale == "ternary" and decision.label is None:
            return item_page(request, item_id, filters, error="give a label (0, 0.5 or 1)", status=400)
        max_points = float(item.problem.get("max_points") or 7.0)
        if decision.points is not None and decision.points > max_points:
            return item_page(request, item_id, filters, error=f"points above {max_points:g}", status=400)
        store.record(decision)
        target = form.get("next") or item_id
        if run.item(target) is None:
            target = item_id
        answer = RedirectResponse(
            f"/review/item/{quote(target, safe='')}{_query(filters, saved=item_id)}", status_code=303
        )
        answer.set_cookie("proofcritic_reviewer", decision.reviewer, httponly=True, samesite="strict")
        return answer

    @router.get("/export")
    async def export(request: Request) -> Response:
        if not authorized(request):
            raise HTTPException(401, "log in first (/review/login)")
        out = Path(tempfile.mkdtemp(prefix="proofcritic-review-")) / "labels.jsonl"
        counts = export_labels(run, store, out)
        name = f"{run.path.name.removesuffix('.jsonl')}.reviewed-labels.jsonl"
        return FileResponse(
            out,
            media_type="application/x-ndjson",
            filename=name,
            headers={f"X-Proofcritic-{k.replace('_', '-')}": str(v) for k, v in counts.items()},
        )

    return router


def mount_review(app: FastAPI, settings: ReviewSettings) -> None:
    """Add the review page (its routes and MathJax's files) to ``app``: the service's own app
    (``serve --review RUN``) or the page's (:func:`create_review_app`)."""
    app.mount("/review/static/mathjax", StaticFiles(directory=mathjax_dir()), name="mathjax")
    app.include_router(review_router(settings))


def create_review_app(settings: ReviewSettings) -> FastAPI:
    """The review page as a FastAPI application (``proofcritic review`` runs it under uvicorn)."""
    app = FastAPI(title="proofcritic review", docs_url=None, redoc_url=None, openapi_url=None)
    mount_review(app, settings)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/review/", status_code=307)

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
