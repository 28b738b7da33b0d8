"""A run folder: what one evaluation run leaves behind, and what reports are rebuilt from.

    RUN/config.json     what was run (command, suite, model, strategy, parameters, created), and
                        under ``settings`` those that change results: a rerun with others stops
    RUN/items.jsonl     one record per item, appended as items finish (resumable)
    RUN/summary.json    the metrics of the run
    RUN/report.html     self-contained report (plots embedded)
    RUN/report.md       the same in Markdown

Every item record has ``id`` and ``kind`` ("grade" or "solve"); an item that failed is an
error record (``error``, ``error_kind``) as written by :mod:`proofcritic.runner`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import read_done, write_json
from ..runner import settings_change


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
        write_json(self.config_path, config)

    def prepare(self, config: dict[str, Any], settings: dict[str, Any], *, overwrite: bool = False) -> str | None:
        """:meth:`create` with ``settings`` (those that change results) recorded in the config,
        after checking them against the earlier run's when the folder holds items.

        ``overwrite`` first clears the folder's items, summary, reports and config. Raises
        :class:`InputError` naming the differences when the items were made with other settings;
        returns a warning when the config records none (an older version made it), else None.
        """
        warning = None
        if overwrite:
            for path in (self.items_path, self.summary_path, self.report_html, self.report_md, self.config_path):
                path.unlink(missing_ok=True)
        elif self.items_path.exists():
            old = self.config().get("settings") if self.config_path.exists() else None
            if old is None:
                warning = (
                    f"run folder {self.path} records no settings (an older version made it): this run's are recorded"
                )
            elif (change := settings_change(old, settings)) is not None:
                raise InputError(
                    f"run folder {self.path} was made with {change[0]}; this run has {change[1]} "
                    "(use --overwrite to clear the run folder's items, or another --run)"
                )
        self.create({**config, "settings": settings})
        return warning

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
        write_json(self.summary_path, summary)

    def summary(self) -> dict[str, Any]:
        if not self.summary_path.exists():
            raise InputError(f"run folder has no summary.json: {self.path}")
        return json.loads(self.summary_path.read_text())
