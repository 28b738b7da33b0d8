"""The meta-verifier role: is a verification faithful (SPEC section 1)."""

from ._meta_verifier import MetaVerifier
from ._parse import parse_meta_verification

__all__ = ["MetaVerifier", "parse_meta_verification"]
