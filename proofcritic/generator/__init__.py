"""The generator role: proofs with self-evaluation (SPEC section 1)."""

from ._generator import Candidate, Generator
from ._parse import parse_generation

__all__ = ["Candidate", "Generator", "parse_generation"]
