"""A run folder: what one evaluation run leaves behind, and what reports are rebuilt from.

    RUN/config.json     what was run (command, suite, model, strategy, parameters, created)
    RUN/items.jsonl     one record per item, appended as items finish (resumable)
    RUN/summary.json    the metrics of the run
    RUN/report.html     self-contained report (plots embedded)
    RUN/report.md       the same in Markdown

Every item record has ``id`` and ``kind`` ("grade" or "solve"); an item that failed is an
error record (``error``, ``error_kind``) as written by :mod:`proofcritic.runner`.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import read_done


class RunFolder:
    """Paths and files of one run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def items_path(self) -> Path:
        return self.path / "items.jsonl"

    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def report_html(self) -> Path:
        return self.path / "report.html"

    @property
    def report_md(self) -> Path:
        return self.path / "report.md"

    def create(self, config: dict[str, Any]) -> None:
        """Make the folder and write ``config.json``; a rerun keeps the first run's ``created``."""
        self.path.mkdir(parents=True, exist_ok=True)
        old = self.config() if self.config_path.exists() else {}
        config = {**config, "created": old.get("created") or datetime.now(timezone.utc).isoformat()}
        _write_json(self.config_path, config)

    def config(self) -> dict[str, Any]:
        if not self.config_path.exists():
            raise InputError(f"not a run folder (no config.json): {self.path}")
        return json.loads(self.config_path.read_text())

    def records(self) -> list[dict[str, Any]]:
        """The item records, one per id (a retried item's last record wins), in file order."""
        if not self.items_path.exists():
            raise InputError(f"run folder has no items.jsonl: {self.path}")
        return list(read_done(self.items_path).values())

    def write_summary(self, summary: dict[str, Any]) -> None:
        _write_json(self.summary_path, summary)

    def summary(self) -> dict[str, Any]:
        if not self.summary_path.exists():
            raise InputError(f"run folder has no summary.json: {self.path}")
        return json.loads(self.summary_path.read_text())


def _write_json(path: Path, data: Any) -> None:
    """Write through a temporary file and rename, so a kill never leaves half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
