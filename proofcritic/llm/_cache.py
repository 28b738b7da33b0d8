"""A sqlite cache of completions, safe for many tasks, threads and processes at once.

One row per sample: the key hashes the backend identity, the messages, the sampling settings
(without ``n``) and the sample index, so a run asking for 8 samples reuses the 4 an earlier run
got. Likelihood scores are cached the same way under their own key kind.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ._types import ChatMessage, Completion, GenerateConfig

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def default_cache_path() -> Path:
    """``<user cache dir>/proofcritic/completions.sqlite``."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("proofcritic")) / "completions.sqlite"


def _digest(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CompletionCache:
    """Completions keyed by (backend identity, messages, settings, sample index)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=60000")
        self._conn.execute(_SCHEMA)
        self.hits = 0
        self.misses = 0

    # -- keys -------------------------------------------------------------------------------
    @staticmethod
    def request_key(identity: str, messages: list[ChatMessage], config: GenerateConfig) -> str:
        """Key of a request without its sample index; ``sample_key`` adds the index."""
        settings = config.model_dump(exclude={"n"})
        return _digest(["chat", identity, [m.model_dump() for m in messages], settings])

    @staticmethod
    def sample_key(request_key: str, index: int) -> str:
        return f"{request_key}:{index}"

    @staticmethod
    def logprob_key(identity: str, messages: list[ChatMessage], continuation: str) -> str:
        return _digest(["logprob", identity, [m.model_dump() for m in messages], continuation])

    # -- storage ----------------------------------------------------------------------------
    def get_many(self, keys: list[str]) -> dict[str, str]:
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        with self._lock:
            rows = self._conn.execute(f"SELECT key, value FROM entries WHERE key IN ({marks})", keys).fetchall()
        found = dict(rows)
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put_many(self, items: dict[str, str]) -> None:
        if not items:
            return
        now = time.time()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT OR REPLACE INTO entries (key, value, created) VALUES (?, ?, ?)",
                    [(k, v, now) for k, v in items.items()],
                )
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def get_samples(self, request_key: str, n: int) -> list[Completion | None]:
        keys = [self.sample_key(request_key, i) for i in range(n)]
        found = self.get_many(keys)
        out: list[Completion | None] = []
        for key in keys:
            raw = found.get(key)
            if raw is None:
                out.append(None)
            else:
                completion = Completion.model_validate_json(raw)
                completion.cached = True
                out.append(completion)
        return out

    def put_samples(self, request_key: str, samples: dict[int, Completion]) -> None:
        self.put_many(
            {self.sample_key(request_key, i): c.model_dump_json(exclude={"cached"}) for i, c in samples.items()}
        )

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
