"""Prompt sets: a folder of templates, one per task a role asks of its model (``generate``,
``verify`` ...), checked when the set is loaded.

A prompt set is a folder that holds, for each template name, a user-message template and
optionally a system-message template:

=================  =========================================  ================================
template           files                                      variables (jinja2)
=================  =========================================  ================================
``generate``       ``generate.j2`` / ``generate.txt``         ``problem``
``verify``         ``verify.j2`` / ``verify.txt``             ``problem``, ``proof``
``meta_verify``    ``meta_verify.j2`` / ``meta_verify.txt``   ``problem``, ``proof``,
                                                              ``analysis``, ``score``
``refine``         ``refine.j2`` / ``refine.txt``             ``problem``, ``candidates``
=================  =========================================  ================================

A system message comes from ``<name>.system.j2`` or ``<name>.system.txt`` (same variables).
Files whose name starts with ``_`` are partials for ``{% include %}`` / ``{% import %}``.

**Optional templates** (:data:`OPTIONAL_TEMPLATE_VARIABLES`) are those of the agent loop
(SPEC section 5): ``agent_improve`` (``problem``, ``proof``), ``agent_judge`` (``problem``,
``proof``, ``log``), ``agent_repair`` (``problem``, ``proof``, ``report``) and
``agent_reverify`` (``problem``, ``proof``, ``report``, ``rebuttal``); all their variables are
strings except ``problem``. A plain :meth:`PromptSet.load` neither loads nor requires them;
:meth:`PromptSet.with_templates` loads a set again with them added, and the agent falls back to
the built-in template for each one a user's set lacks.

**jinja2 templates** (``.j2``) get ``problem`` as a :class:`~proofcritic.types.Problem`
(``.statement``, ``.reference_solution``, ``.grading_guidelines``, ``.max_points``, ``.id``),
``proof`` and ``analysis`` as strings, ``score`` as a float or ``None``, and ``candidates``
as a list of objects or dicts with ``.proof`` (str) and ``.evaluations`` (list of str). The
filter ``as_score`` writes a score as ``1`` / ``0.5`` / ``0`` (``none`` for ``None``).
Undefined variables are errors (StrictUndefined); nothing is autoescaped.

**Embedded texts cannot carry a verdict.** Every value a template prints (``{{ ... }}`` in a
jinja2 template, every field of a plain-text one) goes through
:func:`~proofcritic.parsing.neutralize_markers`: a ``\\boxed{...}`` directly after a score
marker, or one holding a yes/no verdict, is shown as ``[boxed: ...]``. So a proof that ends
with its own "... the final overall score should be: \\boxed{1}", or an analysis quoted in a
later prompt, cannot hand the model a valid score statement to copy. Only the prompt changes;
the texts kept in results are the originals.

**Plain-text templates** (``.txt``) are Python ``str.format`` strings, so that prompt files
written as format strings (for example a copy of the released DeepSeekMath-V2 prompts) can
be dropped in. Literal braces must be doubled (``\\boxed{{}}``). Their fields:

- every template: ``{statement}`` (aliases ``{question}``, ``{problem}``), ``{problem_id}``,
  ``{max_points}``, ``{reference_solution}``, ``{grading_guidelines}`` (empty when absent);
- ``verify``, ``meta_verify``: ``{proof}``;
- ``meta_verify``: ``{analysis}``, ``{score}`` (``1`` / ``0.5`` / ``0`` / ``none``);
- ``refine``: ``{candidates}``, the candidates written out as ``--- Solution i ---`` blocks,
  each followed by its ``=== Evaluation j of Solution i ===`` blocks.

**Checks.** :meth:`PromptSet.load` parses every template and rejects, with a
:class:`~proofcritic.errors.PromptError` naming the file, a syntax error or a variable (or
field) the template does not take. It also requires the user templates named in
``require`` (all four by default); a template that is not required and has no file raises
:class:`PromptError` when it is first rendered. Rendering errors become ``PromptError`` too.
"""

from __future__ import annotations

import functools
import hashlib
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta

from .errors import PromptError
from .llm import ChatMessage
from .parsing import format_score, neutralize_markers

__all__ = ["OPTIONAL_TEMPLATE_VARIABLES", "TEMPLATE_VARIABLES", "TEXT_FIELDS", "PromptSet", "format_candidates"]

#: the variables each template's jinja2 version may use, by template name
TEMPLATE_VARIABLES: dict[str, frozenset[str]] = {
    "generate": frozenset({"problem"}),
    "verify": frozenset({"problem", "proof"}),
    "meta_verify": frozenset({"problem", "proof", "analysis", "score"}),
    "refine": frozenset({"problem", "candidates"}),
}
#: templates a set may have but never has to: loaded only when asked for (``variables=`` of
#: :meth:`PromptSet.load`, or :meth:`PromptSet.with_templates`); the built-in set has them all
OPTIONAL_TEMPLATE_VARIABLES: dict[str, frozenset[str]] = {
    "agent_improve": frozenset({"problem", "proof"}),
    "agent_judge": frozenset({"problem", "proof", "log"}),
    "agent_repair": frozenset({"problem", "proof", "report"}),
    "agent_reverify": frozenset({"problem", "proof", "report", "rebuttal"}),
}
_PROBLEM_FIELDS = frozenset(
    {"statement", "question", "problem", "problem_id", "max_points", "reference_solution", "grading_guidelines"}
)
#: the fields each template's plain-text (``str.format``) version may use
TEXT_FIELDS: dict[str, frozenset[str]] = {
    name: _PROBLEM_FIELDS | names for name, names in {**TEMPLATE_VARIABLES, **OPTIONAL_TEMPLATE_VARIABLES}.items()
}
_DEFAULT_DIRECTORY = Path(__file__).resolve().parent / "prompts" / "default"


@dataclass(frozen=True)
class _Template:
    """One checked template file."""

    path: Path
    kind: Literal["jinja", "text"]
    jinja: jinja2.Template | None = None
    text: str | None = None
    globals: dict[str, Any] | None = None
    """The jinja template's globals, merged once (rendering then skips jinja's per-call merge)."""

    def render_jinja(self, variables: Mapping[str, Any]) -> str:
        """What ``self.jinja.render(**variables)`` gives, at half the cost per call."""
        template = self.jinja
        assert template is not None and self.globals is not None
        context = template.new_context({**self.globals, **variables}, shared=True)
        return template.environment.concat(template.root_render_func(context))


def format_candidates(candidates: Iterable[Any]) -> str:
    """Write refinement candidates as ``--- Solution i ---`` blocks with their evaluations."""
    blocks: list[str] = []
    for i, candidate in enumerate(candidates, start=1):
        blocks.append(f"--- Solution {i} ---\n\n{_field(candidate, 'proof').strip()}\n")
        for j, evaluation in enumerate(_field(candidate, "evaluations"), start=1):
            blocks.append(f"=== Evaluation {j} of Solution {i} ===\n\n{str(evaluation).strip()}\n")
    return "\n".join(blocks)


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        if name not in obj:
            raise PromptError(f"a refinement candidate has no {name!r}")
        return obj[name]
    if not hasattr(obj, name):
        raise PromptError(f"a refinement candidate has no {name!r}")
    return getattr(obj, name)


def _text_fields(source: str, path: Path) -> set[str]:
    """The field names of a format string; positional fields are an error."""
    try:
        parsed = list(string.Formatter().parse(source))
    except ValueError as error:
        raise PromptError(
            f"{path}: not a valid format string ({error}); write literal braces as '{{{{' and '}}}}'"
        ) from None
    names: set[str] = set()
    for _, field_name, _, _ in parsed:
        if field_name is None:
            continue
        root = field_name.split(".", 1)[0].split("[", 1)[0]
        if not root or root.isdigit():
            raise PromptError(
                f"{path}: positional field '{{{field_name}}}' is not allowed; "
                "name the field, or write literal braces as '{{' and '}}'"
            )
        names.add(root)
    return names


def _text_values(name: str, variables: Mapping[str, Any]) -> dict[str, Any]:
    """The ``str.format`` fields of template ``name`` computed from the jinja2 variables."""
    values: dict[str, Any] = {}
    problem = variables.get("problem")
    if problem is not None:
        statement = problem.statement
        values.update(
            statement=statement,
            question=statement,
            problem=statement,
            problem_id=problem.id,
            max_points=f"{problem.max_points:g}",
            reference_solution=problem.reference_solution or "",
            grading_guidelines=problem.grading_guidelines or "",
        )
    # proof, analysis, and any variable a caller added
    values.update({name: value for name, value in variables.items() if name not in ("problem", "score", "candidates")})
    if "score" in variables:
        values["score"] = format_score(variables["score"])
    if "candidates" in variables:
        values["candidates"] = format_candidates(variables["candidates"])
    return {name: _embedded(value) for name, value in values.items()}


def _embedded(value: Any) -> Any:
    """A value as a template embeds it: a string with its verdict boxes neutralised
    (:func:`~proofcritic.parsing.neutralize_markers`), anything else unchanged."""
    return neutralize_markers(value) if isinstance(value, str) else value


class PromptSet:
    """A checked folder of prompt templates; :meth:`render` turns one into chat messages."""

    def __init__(self, directory: Path, templates: dict[str, _Template], variables: dict[str, frozenset[str]]):
        self.directory = directory
        self._templates = templates
        self._variables = variables

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        directory: str | Path | None = None,
        *,
        require: Iterable[str] | None = None,
        variables: Mapping[str, Iterable[str]] | None = None,
    ) -> PromptSet:
        """Load and check the prompt set in ``directory`` (``None``: the built-in default set).

        ``require`` names the templates whose user file must be present (default: all four);
        ``variables`` adds templates or extra allowed variables for custom ones (jinja2
        variable names; the plain-text version of an added template may use the same names).
        Raises :class:`PromptError` for a missing folder, a missing required template, two
        files for one template, a syntax error, or a variable the template does not take.
        """
        path = _DEFAULT_DIRECTORY if directory is None else Path(directory).expanduser()
        if not path.is_dir():
            raise PromptError(f"prompt set folder not found: {path}")
        allowed = dict(TEMPLATE_VARIABLES)
        for name, names in (variables or {}).items():
            allowed[name] = allowed.get(name, frozenset()) | frozenset(names)
        required = tuple(TEMPLATE_VARIABLES) if require is None else tuple(require)
        unknown = [r for r in required if r not in allowed]
        if unknown:
            raise PromptError(f"unknown prompt role(s) in require: {', '.join(unknown)}; known: {', '.join(allowed)}")

        env = cls._environment(path)
        templates: dict[str, _Template] = {}
        for name in allowed:
            for key in (name, f"{name}.system"):
                template = cls._load_one(env, path, key, name, allowed[name])
                if template is not None:
                    templates[key] = template
        missing = [r for r in required if r not in templates]
        if missing:
            raise PromptError(
                f"prompt set {path} lacks the template(s) " + ", ".join(f"{r}.j2 (or {r}.txt)" for r in missing)
            )
        return cls(path, templates, allowed)

    @staticmethod
    def _environment(path: Path) -> jinja2.Environment:
        env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(path)),
            undefined=jinja2.StrictUndefined,
            keep_trailing_newline=True,
            autoescape=False,
            finalize=_embedded,
        )
        env.filters["as_score"] = format_score
        return env

    @classmethod
    def _load_one(
        cls, env: jinja2.Environment, path: Path, key: str, name: str, allowed: frozenset[str]
    ) -> _Template | None:
        jinja_path, text_path = path / f"{key}.j2", path / f"{key}.txt"
        if jinja_path.is_file() and text_path.is_file():
            raise PromptError(f"prompt set {path} has both {jinja_path.name} and {text_path.name}; keep one")
        if text_path.is_file():
            source = _read(text_path)
            fields = _PROBLEM_FIELDS | allowed
            unknown = _text_fields(source, text_path) - fields
            if unknown:
                raise PromptError(
                    f"{text_path}: unknown field(s) {', '.join(sorted(unknown))}; "
                    f"allowed for {name!r}: {', '.join(sorted(fields))}"
                )
            return _Template(text_path, "text", text=source)
        if not jinja_path.is_file():
            return None
        used = cls._jinja_variables(env, jinja_path.name, path, set())
        unknown = used - allowed
        if unknown:
            raise PromptError(
                f"{jinja_path}: unknown variable(s) {', '.join(sorted(unknown))}; "
                f"allowed for {name!r}: {', '.join(sorted(allowed))}"
            )
        try:
            compiled = env.get_template(jinja_path.name)
        except jinja2.TemplateError as error:  # e.g. an unknown filter
            raise PromptError(f"{jinja_path}: {error}") from None
        return _Template(jinja_path, "jinja", jinja=compiled, globals=dict(compiled.globals))

    @classmethod
    def _jinja_variables(cls, env: jinja2.Environment, name: str, path: Path, seen: set[str]) -> set[str]:
        """Undeclared variables of a template and of the templates it includes or imports."""
        seen.add(name)
        file = path / name
        if not file.is_file():
            raise PromptError(f"{path}: a template includes {name!r}, which is not in the set")
        source = _read(file)
        try:
            ast = env.parse(source, name=name, filename=str(file))
            used = set(jinja2.meta.find_undeclared_variables(ast))
        except jinja2.TemplateError as error:  # a syntax error, an unknown filter or test
            line = getattr(error, "lineno", None)
            where = f"{file}:{line}" if line else str(file)
            raise PromptError(f"{where}: template error: {error.message}") from None
        for child in jinja2.meta.find_referenced_templates(ast):
            if child is not None and child not in seen:
                used |= cls._jinja_variables(env, child, path, seen)
        return used

    # ------------------------------------------------------------------ use

    @property
    def names(self) -> tuple[str, ...]:
        """The templates this set has a user file for, in the order of ``TEMPLATE_VARIABLES``."""
        return tuple(name for name in self._variables if name in self._templates)

    def has(self, name: str) -> bool:
        """Whether this set can render ``name``."""
        return name in self._templates

    def with_templates(self, variables: Mapping[str, Iterable[str]]) -> PromptSet:
        """This set's folder loaded again with the templates in ``variables`` added, none required.

        The templates (and extra variables) this set was loaded with are kept. The added
        templates are checked like any other; check :meth:`has` for the ones the folder lacks.
        """
        merged: dict[str, set[str]] = {name: set(names) for name, names in self._variables.items()}
        for name, names in variables.items():
            merged.setdefault(name, set()).update(names)
        return PromptSet.load(self.directory, require=(), variables=merged)

    def template_set(self, name: str, variables: Iterable[str]) -> PromptSet:
        """The set to render the optional template ``name`` (with ``variables``) from: this
        set's folder when it has the template (checked when loaded), else the built-in set. The
        answer is kept, so a role may ask on every construction."""
        return _template_set(self, name, frozenset(variables))

    def source(self, name: str) -> Path:
        """The file of the user template of ``name``."""
        return self._template(name).path

    def fingerprint(self) -> str:
        """A short hash of the templates' contents: the set's ``.j2`` / ``.txt`` files and, for a
        user's set, the built-in ones it falls back on; equal for equal prompts."""
        digest = hashlib.sha256()
        folders = (
            [self.directory] if self.directory.resolve() == _DEFAULT_DIRECTORY else [self.directory, _DEFAULT_DIRECTORY]
        )
        for folder in folders:
            for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".j2", ".txt")):
                digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
            digest.update(b"\1")
        return digest.hexdigest()[:16]

    def render(self, name: str, **variables: Any) -> list[ChatMessage]:
        """Render template ``name``: a system message (when the set has one) then the user message.

        Surrounding whitespace of each message is stripped; an empty system message is left out.

        Raises :class:`PromptError` for an unknown template name, a template the set lacks, a
        variable the template does not take, or any error while rendering.
        """
        allowed = self._variables.get(name)
        if allowed is None:
            raise PromptError(f"unknown prompt {name!r}; known: {', '.join(self._variables)}")
        extra = set(variables) - allowed
        if extra:
            raise PromptError(f"prompt {name!r} takes {', '.join(sorted(allowed))}, not {', '.join(sorted(extra))}")
        user = self._template(name)
        messages: list[ChatMessage] = []
        system = self._templates.get(f"{name}.system")
        if system is not None:
            content = self._render_one(system, name, variables)
            if content:
                messages.append(ChatMessage(role="system", content=content))
        messages.append(ChatMessage(role="user", content=self._render_one(user, name, variables)))
        return messages

    def _template(self, name: str) -> _Template:
        template = self._templates.get(name)
        if template is None:
            raise PromptError(f"prompt set {self.directory} has no template for {name!r} ({name}.j2 or {name}.txt)")
        return template

    @staticmethod
    def _render_one(template: _Template, name: str, variables: Mapping[str, Any]) -> str:
        try:
            if template.kind == "jinja":
                text = template.render_jinja(variables)
            else:
                assert template.text is not None
                text = template.text.format_map(_text_values(name, variables))
        except PromptError:
            raise
        except Exception as error:  # noqa: BLE001 - jinja2 errors, a missing field, a bad attribute
            raise PromptError(f"rendering {template.path.name} failed: {type(error).__name__}: {error}") from None
        return text.strip()

    def __repr__(self) -> str:
        return f"PromptSet({str(self.directory)!r}, names={list(self.names)})"


@functools.lru_cache(maxsize=64)
def _template_set(prompts: PromptSet, name: str, variables: frozenset[str]) -> PromptSet:
    extended = prompts.with_templates({name: variables})
    if extended.has(name):
        return extended
    return _builtin_set(name, variables)


@functools.lru_cache(maxsize=64)
def _builtin_set(name: str, variables: frozenset[str]) -> PromptSet:
    return PromptSet.load(None, require=(name,), variables={name: variables})


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PromptError(f"cannot read prompt template {path}: {error}") from None
