"""Formal suites: problems given as Lean 4 statements, for ``eval formal`` and ``train prover``.

``lean-proofbench``: the 60 Lean statements of IMO-ProofBench (``imobench/lean_proof_bench.csv``,
column ``Lean Statement``, each a Mathlib file whose theorem ends in ``:= by sorry``).
``minif2f``: a miniF2F-style file, read by path. Every formal file is read by
:func:`formal_records` into records and each record by :func:`formal_item` into a
:class:`~proofcritic.pipelines.formal.FormalProblem`. The shapes accepted:

- **JSONL / JSON, miniF2F rows**: ``name``, ``header`` (imports, ``set_option``, ``open``...),
  ``formal_statement`` (the theorem; it may end in ``:= by`` or ``:=`` with no proof, as
  DeepSeek-Prover's ``minif2f.jsonl`` does); optional ``informal_prefix`` (a ``/-- ... -/``
  docstring, kept in the Lean file and used as the problem's text), ``informal_statement``,
  ``split``. The Lean statement is ``header`` + ``informal_prefix`` + ``formal_statement``.
- **JSONL / JSON / CSV, proofcritic rows**: ``lean_statement`` (a whole Lean file) with ``id``
  and ``problem`` / ``statement``; CSV in IMO-ProofBench's layout (``Problem ID``, ``Problem``,
  ``Lean Statement``).
- **A ``.lean`` file of many theorems**: the header is everything before the first
  ``theorem`` / ``lemma`` / ``example`` (and before the docstring right above it); each
  declaration that ends in ``sorry`` (or in ``:=`` / ``:= by``), with the ``/-- ... -/``
  docstring right above it (the problem's text), up to the next declaration, is a problem named
  after the theorem (``example``: ``example-N``); its Lean statement is the header, the
  declarations with a proof before it (helper lemmas: context, not problems) and itself. Lines
  between declarations (``open``, ``namespace``...) belong to the declaration above them.

Every statement is made to end in ``sorry`` (``:= by`` -> ``:= by sorry``, ``:=`` -> ``:=
sorry``), the shape ``lean-prove`` and its searches expect. A problem without an informal text
is given ``Prove the Lean theorem NAME as stated.``
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ._data import normalized, pick, read_records
from ._suite import Suite

if TYPE_CHECKING:
    from ..pipelines.formal import FormalProblem

__all__ = [
    "LEAN_PROOFBENCH",
    "MINIF2F",
    "SUITES",
    "formal_item",
    "formal_records",
    "load_formal_file",
    "minif2f_items",
    "with_sorry",
]

_DECL = re.compile(
    r"^[ \t]*(?:@\[[^\]]*\]\s*)*(?:(?:private|protected|noncomputable)\s+)*(theorem|lemma|example)\b",
    re.MULTILINE,
)
_NAME = re.compile(r"(?:theorem|lemma)\s+([^\s(:{\[⦃]+)")
_DOC_BEFORE = re.compile(r"/--((?:(?!/--).)*?)-/\s*\Z", re.DOTALL)
_ENDS_SORRY = re.compile(r"(?<![\w.'])sorry\s*\Z")
_ENDS_OPEN = re.compile(r":=\s*(by)?\s*\Z")


def with_sorry(statement: str) -> str:
    """``statement`` ending in ``sorry``: kept when it does, ``:= by`` / ``:=`` completed with
    ``sorry``; anything else is an InputError."""
    text = statement.rstrip()
    if _ENDS_SORRY.search(text):
        return text + "\n"
    match = _ENDS_OPEN.search(text)
    if match is None:
        raise InputError("the Lean statement does not end in `sorry`, `:= by` or `:=`")
    return text + " sorry\n"


def _docstring_text(text: str) -> str | None:
    """The text of a ``/-- ... -/`` docstring (or of any comment-free text), stripped."""
    inner = text.strip()
    if inner.startswith("/--") and inner.endswith("-/"):
        inner = inner[3:-2]
    inner = inner.strip()
    return inner or None


def _lean_file_records(path: Path) -> list[dict[str, Any]]:
    """One record per theorem / lemma / example of a ``.lean`` file (see the module docstring)."""
    from ..lean_checker import blank_comments_and_strings

    if not path.is_file():
        raise InputError(f"data file not found: {path}")
    text = path.read_text(encoding="utf-8")
    code = blank_comments_and_strings(text)
    starts: list[tuple[int, int]] = []  # (the chunk's start: its docstring's, the keyword's)
    for match in _DECL.finditer(code):
        doc = _DOC_BEFORE.search(text[: match.start()])
        starts.append((doc.start() if doc is not None else match.start(), match.start()))
    if not starts:
        raise InputError(f"{path}: no theorem, lemma or example in the file")
    context = text[: starts[0][0]]  # the header, then every declaration with a proof so far
    records = []
    examples = 0
    for index, (chunk_start, decl_start) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else len(text)
        chunk = text[chunk_start:end]
        decl_code = code[decl_start:end].rstrip()
        if not _ENDS_SORRY.search(decl_code) and not _ENDS_OPEN.search(decl_code):
            context += chunk  # a lemma with its proof: context of the problems after it
            continue
        docstring = _docstring_text(text[chunk_start:decl_start]) if chunk_start < decl_start else None
        name_match = _NAME.search(decl_code)
        if name_match is not None:
            name = name_match.group(1)
        else:
            examples += 1
            name = f"example-{examples}"
        header = context.rstrip()
        record: dict[str, Any] = {
            "name": name,
            "header": header + "\n\n" if header else "",
            "formal_statement": chunk.rstrip(),
            "_line": text.count("\n", 0, decl_start) + 1,
        }
        if docstring:
            record["informal_statement"] = docstring
        records.append(record)
    if not records:
        raise InputError(f"{path}: no declaration ends in `sorry` (or in `:=` / `:= by`): nothing to prove")
    return records


def formal_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a formal file: a ``.lean`` file's theorems, else JSON / JSONL / CSV rows."""
    file = Path(path)
    if file.suffix.lower() == ".lean":
        return _lean_file_records(file)
    return read_records(file)


def formal_item(record: dict[str, Any]) -> FormalProblem:
    """A record (any accepted shape, see the module docstring) as a FormalProblem."""
    from ..pipelines.formal import FormalProblem
    from ._suite import make_problem, text_or_none

    r = normalized(record)
    name = pick(r, "problem_id", "id", "name")
    lean = pick(r, "lean_statement")
    prefix = str(pick(r, "informal_prefix") or "")
    if lean is None:
        formal = pick(r, "formal_statement")
        if formal is None:
            raise InputError("no Lean statement: give lean_statement, or header and formal_statement (miniF2F)")
        header = str(pick(r, "header") or "")
        if header and not header.endswith("\n"):
            header += "\n"
        if prefix and not prefix.endswith("\n"):
            prefix += "\n"
        lean = header + prefix + str(formal)
    if name is None:
        found = _NAME.search(str(lean))
        if found is None:
            raise InputError("no problem id: give id, name or Problem ID")
        name = found.group(1)
    statement = (
        text_or_none(pick(r, "problem", "statement", "informal_statement", "informal_stmt"))
        or _docstring_text(prefix)
        or f"Prove the Lean theorem `{name}` as stated."
    )
    problem = make_problem(
        id=str(name).strip(),
        statement=statement,
        reference_solution=text_or_none(pick(r, "solution", "reference_solution")),
        grading_guidelines=text_or_none(pick(r, "grading_guidelines")),
    )
    try:
        lean_statement = with_sorry(str(lean))
    except InputError as error:
        raise InputError(f"problem {problem.id}: {error}") from None
    return FormalProblem(problem=problem, lean_statement=lean_statement)


def minif2f_items(
    path: str | Path, *, ids: list[str] | None = None, limit: int | None = None
) -> list[tuple[str, int, dict | InputError]] | None:
    """Batch items (``lean-prove --input``) from a miniF2F-style file: a ``.lean`` file, or
    JSON / JSONL rows with ``formal_statement``; None for any other file (``lean-prove``'s own
    reader takes those). A record that does not read is an item of its own holding the error."""
    file = Path(path)
    if file.suffix.lower() not in (".lean", ".jsonl", ".json"):
        return None
    records = formal_records(file)
    if file.suffix.lower() != ".lean" and not any("formal_statement" in r for r in records):
        return None
    items: list[tuple[str, int, dict | InputError]] = []
    for number, record in enumerate(records, start=1):
        try:
            fp = formal_item(record)
        except InputError as error:
            items.append((str(record.get("name") or record.get("id") or f"row-{number}"), number, error))
            continue
        items.append((fp.problem.id, number, {"problem": fp.problem.model_dump(), "lean_statement": fp.lean_statement}))
    if ids:
        unknown = set(ids) - {item_id for item_id, _, _ in items}
        if unknown:
            raise InputError(f"no problem with id {', '.join(sorted(unknown))} in {file}")
        items = [item for item in items if item[0] in set(ids)]
    return items[:limit] if limit is not None else items


def load_formal_file(path: str | Path, *, limit: int | None = None) -> list[FormalProblem]:
    """The formal problems of any accepted file (the ``minif2f`` suite's loader)."""
    return MINIF2F.load(source=Path(path), limit=limit)  # type: ignore[return-value]


LEAN_PROOFBENCH = Suite(
    name="lean-proofbench",
    kind="formal",
    description="IMO-ProofBench's 60 problems as Lean 4 statements (import Mathlib: check in a Lake project)",
    max_points=7.0,
    path="imobench/lean_proof_bench.csv",
    item=formal_item,
    read=formal_records,
)

MINIF2F = Suite(
    name="minif2f",
    kind="formal",
    description="miniF2F-style Lean statements (load by path: JSONL name/header/formal_statement, or a .lean file)",
    max_points=7.0,
    path=None,
    item=formal_item,
    read=formal_records,
)

SUITES = [LEAN_PROOFBENCH, MINIF2F]
