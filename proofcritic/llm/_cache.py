"""A sqlite cache of completions, safe for many tasks, threads and processes at once.

One row per sample: the key hashes the backend identity, the messages, the sampling settings
(without ``n``) and the sample index, so a run asking for 8 samples reuses the 4 an earlier run
got. Likelihood scores are cached the same way under their own key kind.

Writes are batched (write-behind): a put goes to an in-memory buffer that this process reads
at once, and a writer thread commits the buffer to sqlite in one transaction when it holds
``flush_size`` entries or its oldest entry is ``flush_interval`` seconds old, and at
:meth:`CompletionCache.flush`, :meth:`~CompletionCache.close` and interpreter exit. So a run
pays one commit per batch, not one per request. A process killed outright (``kill -9``) loses
only the entries not yet committed: those completions are asked again by the rerun, and
nothing else is lost (an output record is written from the completions themselves, not from
the cache). Other processes see an entry once it is committed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import threading
import time
import weakref
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


_KEY_ENCODER = json.JSONEncoder(sort_keys=True, ensure_ascii=False, separators=(",", ":"))
_string = json.encoder.encode_basestring  # a JSON string as ``json.dumps(..., ensure_ascii=False)`` writes it


def _digest(payload: Any) -> str:
    return hashlib.sha256(_KEY_ENCODER.encode(payload).encode("utf-8")).hexdigest()


class _Store:
    """The database and its write-behind buffer. Held by the cache, its writer thread and its
    finalizer, so that a cache dropped without ``close`` still commits what it buffered."""

    def __init__(self, path: Path, flush_size: int, flush_interval: float):
        self.flush_size = flush_size
        self.flush_interval = flush_interval
        self.lock = threading.Lock()  # the connection
        self.conn = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA busy_timeout=60000")
        self.conn.execute(_SCHEMA)
        # lookups have a connection of their own: in WAL mode a read does not wait for the
        # writer thread's commit, so the event loop never stalls behind one
        self.read_lock = threading.Lock()
        self.reader = sqlite3.connect(path, timeout=60, check_same_thread=False, isolation_level=None)
        self.reader.execute("PRAGMA busy_timeout=60000")
        self.commits = 0
        self.buffer_lock = threading.Lock()  # pending, writing, oldest, closed
        self.wake = threading.Condition(self.buffer_lock)
        self.pending: dict[str, tuple[str, float]] = {}
        """Entries put, not yet taken by a commit: key -> (value, time put)."""
        self.writing: dict[str, tuple[str, float]] = {}
        """The batch being committed now (still read from here until it is)."""
        self.oldest: float | None = None
        self.writer: threading.Thread | None = None
        self.closed = False

    def lookup(self, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with self.buffer_lock:
            if self.pending or self.writing:
                for key in keys:
                    entry = self.pending.get(key) or self.writing.get(key)
                    if entry is not None:
                        found[key] = entry[0]
        rest = [k for k in keys if k not in found] if found else keys
        if rest:
            marks = ",".join("?" * len(rest))
            with self.read_lock:
                rows = self.reader.execute(f"SELECT key, value FROM entries WHERE key IN ({marks})", rest).fetchall()
            found.update(rows)
        return found

    def put(self, items: dict[str, str]) -> None:
        now = time.time()
        if self.flush_size == 1:
            self.commit({k: (v, now) for k, v in items.items()})
            return
        with self.buffer_lock:
            if self.closed:
                raise RuntimeError("the completion cache is closed")
            for key, value in items.items():
                self.pending[key] = (value, now)
            if self.oldest is None:
                self.oldest = now
            if self.writer is None:
                self.writer = threading.Thread(target=self.run, daemon=True, name="proofcritic-cache-writer")
                self.writer.start()
            if len(self.pending) >= self.flush_size:
                self.wake.notify_all()

    def take(self) -> dict[str, tuple[str, float]]:
        """(Under the buffer lock, with no batch being written) move the pending entries to
        ``writing`` and return them."""
        batch = self.pending
        if batch:
            self.pending, self.writing, self.oldest = {}, batch, None
        return batch

    def commit_taken(self, batch: dict[str, tuple[str, float]]) -> None:
        try:
            self.commit(batch)
        except BaseException:
            with self.buffer_lock:  # kept for the next try (newer puts win)
                self.pending = {**batch, **self.pending}
                self.oldest = min(t for _, t in self.pending.values())
                self.writing = {}
                self.wake.notify_all()
            raise
        with self.buffer_lock:
            self.writing = {}
            self.wake.notify_all()

    def commit(self, batch: dict[str, tuple[str, float]]) -> None:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.executemany(
                    "INSERT OR REPLACE INTO entries (key, value, created) VALUES (?, ?, ?)",
                    [(k, v, t) for k, (v, t) in batch.items()],
                )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.commits += 1

    def flush(self) -> None:
        while True:
            with self.buffer_lock:
                while self.writing:  # the batch under way first, so entries commit in order
                    self.wake.wait()
                batch = self.take()
            if not batch:
                return
            self.commit_taken(batch)

    def run(self) -> None:
        """The writer thread: commit the buffer when it is full or its oldest entry is due."""
        while True:
            with self.buffer_lock:
                if self.closed:
                    return
                due = None if self.oldest is None else self.oldest + self.flush_interval
                now = time.time()
                if self.writing or (len(self.pending) < self.flush_size and (due is None or due > now)):
                    self.wake.wait(self.flush_interval if due is None or self.writing else due - now)
                    continue
                batch = self.take()
            try:
                self.commit_taken(batch)
            except Exception:  # noqa: BLE001 - a locked or full disk: the entries stay buffered
                time.sleep(self.flush_interval)

    def close(self) -> None:
        """Commit what is buffered, stop the writer and close the database (once)."""
        with self.buffer_lock:
            if self.closed:
                return
        try:
            self.flush()
        finally:
            with self.buffer_lock:
                self.closed = True
                self.wake.notify_all()
            with self.read_lock:
                self.reader.close()
            with self.lock:
                self.conn.close()


class CompletionCache:
    """Completions keyed by (backend identity, messages, settings, sample index).

    ``flush_size`` / ``flush_interval``: the write-behind buffer is committed once it holds
    this many entries or its oldest entry is this many seconds old (see the module);
    ``flush_size=1`` commits every put before it returns (no buffer).
    """

    def __init__(self, path: str | Path | None = None, *, flush_size: int = 512, flush_interval: float = 1.0):
        if flush_size < 1 or not flush_interval > 0:
            raise ValueError("flush_size must be at least 1 and flush_interval more than 0 seconds")
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.flush_interval = float(flush_interval)
        self._store = _Store(self.path, int(flush_size), self.flush_interval)
        # commits what is buffered when the cache is dropped, and at interpreter exit
        self._finalizer = weakref.finalize(self, _close_quietly, self._store)
        self.hits = 0
        self.misses = 0

    # -- keys -------------------------------------------------------------------------------
    @staticmethod
    def request_key(identity: str, messages: list[ChatMessage], config: GenerateConfig) -> str:
        """Key of a request without its sample index; ``sample_key`` adds the index."""
        # the bytes of _digest(["chat", identity, [m.model_dump() for m in messages], settings]),
        # written directly: the messages' (long) texts are encoded once, without a dict per message
        messages_json = ",".join(m.wire for m in messages)
        settings = _KEY_ENCODER.encode(config.model_dump(exclude={"n"}))
        blob = f'["chat",{_string(identity)},[{messages_json}],{settings}]'
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

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
        found = self._store.lookup(keys)
        self.hits += len(found)
        self.misses += len(keys) - len(found)
        return found

    def put_many(self, items: dict[str, str]) -> None:
        """Store ``items``: read back by this cache at once, committed with the next batch."""
        if items:
            self._store.put(items)

    def flush(self) -> None:
        """Commit every entry put so far; returns once they are in the database."""
        self._store.flush()

    @property
    def pending(self) -> int:
        """Entries put and not yet committed."""
        store = self._store
        with store.buffer_lock:
            return len(store.pending) + len(store.writing)

    @property
    def flush_size(self) -> int:
        """Entries buffered before a commit; 1: every put is committed before it returns (a
        service that must lose nothing at ``kill -9`` sets it)."""
        return self._store.flush_size

    @flush_size.setter
    def flush_size(self, value: int) -> None:
        if int(value) < 1:
            raise ValueError("flush_size must be at least 1")
        self._store.flush_size = int(value)
        if value == 1:
            self.flush()

    @property
    def commits(self) -> int:
        """Write transactions committed so far (each holds one batch of entries)."""
        return self._store.commits

    def get_samples(self, request_key: str, n: int, first: int = 0) -> list[Completion | None]:
        """Samples ``first`` .. ``first + n - 1`` of a request (``None`` where not cached)."""
        keys = [self.sample_key(request_key, i) for i in range(first, first + n)]
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
        self.flush()
        with self._store.lock:
            return self._store.conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]

    def close(self) -> None:
        """Commit what is buffered and close the database (a second close does nothing)."""
        self._finalizer.detach()
        self._store.close()


def _close_quietly(store: _Store) -> None:
    with contextlib.suppress(Exception):  # at exit or in garbage collection no one is left to tell
        store.close()
