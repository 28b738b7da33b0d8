"""Lean 4 checking of formal proofs (local ``lean``, Lake projects, warm servers). Not built yet."""
