"""The job store: every job, its state, result and progress events, in one sqlite file (WAL).

A job is ``queued`` when accepted, ``running`` while a worker has it, then ``done`` (with its
result), ``failed`` (with the error) or ``cancelled`` (by a client). A final state never
changes again, and no progress event follows the final event. Each change is committed before the service answers or
moves on, so a killed service loses nothing: on startup :meth:`JobStore.requeue_unfinished`
puts every job left ``queued`` or ``running`` back in the queue (a cancelled job is final and
stays so), and the completion cache answers the model calls it had already made.

Progress events are numbered per job (1, 2, ...), so a client streaming them can resume from
the last number it saw.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Literal

Status = Literal["queued", "running", "done", "failed", "cancelled"]
STATUSES: tuple[str, ...] = ("queued", "running", "done", "failed", "cancelled")
FINAL: tuple[str, ...] = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    request TEXT NOT NULL,
    result TEXT,
    error TEXT,
    error_kind TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    time REAL NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
"""


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _private_file(path: Path) -> None:
    """Create ``path`` (and make an existing one) readable and writable by its owner only: it
    holds every submitted problem and proof. SQLite gives its ``-wal`` and ``-shm`` files the
    database's mode; older ones are narrowed too."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            os.chmod(name, 0o600)
        except FileNotFoundError:
            pass


class JobStore:
    """Jobs and their events in sqlite. Safe to call from several threads (one lock)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _private_file(self.path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable across a killed process
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writing ----------------------------------------------------------------------------------
    def _event(self, job_id: str, type_: str, data: dict[str, Any], now: float) -> int:
        (seq,) = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?", (job_id,)).fetchone()
        self._db.execute(
            "INSERT INTO events (job_id, seq, time, type, data) VALUES (?, ?, ?, ?, ?)",
            (job_id, seq, now, type_, _json(data)),
        )
        return seq

    def create(self, kind: str, request: dict[str, Any]) -> dict[str, Any]:
        """A new queued job for ``request`` (stored as given); returns the job."""
        job_id = f"job-{uuid.uuid4().hex[:24]}"
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO jobs (id, kind, status, request, created) VALUES (?, ?, 'queued', ?, ?)",
                    (job_id, kind, _json(request), now),
                )
                self._event(job_id, "queued", {"kind": kind}, now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        job = self.get(job_id)
        assert job is not None
        return job

    def add_event(self, job_id: str, type_: str, data: dict[str, Any] | None = None) -> int | None:
        """Record a progress event; returns its number (None, recording nothing, once the job is final)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
                seq = (
                    None
                    if row is None or row["status"] in FINAL
                    else self._event(job_id, type_, data or {}, time.time())
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return seq

    def _transition(self, job_id: str, sql: str, args: tuple, event: str, data: dict[str, Any]) -> int | None:
        """Run ``sql`` (an UPDATE whose last parameter is the id) and record ``event`` with it, in one
        transaction; nothing happens (None) when the UPDATE changed no row (its condition failed)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                changed = self._db.execute(sql, (*args, job_id)).rowcount
                seq = self._event(job_id, event, data, now) if changed else None
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return seq

    def start(self, job_id: str) -> int | None:
        """The queued job is running (one more attempt): the attempt number; None when the job
        is not queued (cancelled meanwhile), and then it does not start."""
        with self._lock:
            row = self._db.execute("SELECT attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
        attempt = (row["attempts"] if row else 0) + 1
        seq = self._transition(
            job_id,
            "UPDATE jobs SET status = 'running', attempts = ?, started = ? WHERE status = 'queued' AND id = ?",
            (attempt, time.time()),
            "started",
            {"attempt": attempt},
        )
        return attempt if seq is not None else None

    def finish(self, job_id: str, result: dict[str, Any], summary: dict[str, Any] | None = None) -> bool:
        """The running job is done with ``result``; ``summary`` goes into the final event.
        False (nothing recorded) when the job is no longer running (it was cancelled)."""
        return (
            self._transition(
                job_id,
                "UPDATE jobs SET status = 'done', result = ?, error = NULL, error_kind = NULL, finished = ? "
                "WHERE status = 'running' AND id = ?",
                (_json(result), time.time()),
                "done",
                summary or {},
            )
            is not None
        )

    def fail(self, job_id: str, message: str, kind: str) -> bool:
        """The running job failed: ``kind`` is ``input`` (the request is wrong), ``context`` (too
        long for the model's context), ``backend`` or ``internal``. False (nothing recorded) when the job is no longer running."""
        return (
            self._transition(
                job_id,
                "UPDATE jobs SET status = 'failed', error = ?, error_kind = ?, finished = ? "
                "WHERE status = 'running' AND id = ?",
                (message, kind, time.time()),
                "failed",
                {"error": message, "error_kind": kind},
            )
            is not None
        )

    def cancel(self, job_id: str, data: dict[str, Any] | None = None) -> str | None:
        """Cancel a queued or running job (its final event ``cancelled`` carries ``data`` and the
        state it left). Returns the state the job was in (a final one: nothing changed), or None
        when there is no such job."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if row is not None and row["status"] not in FINAL:
                    self._db.execute("UPDATE jobs SET status = 'cancelled', finished = ? WHERE id = ?", (now, job_id))
                    self._event(job_id, "cancelled", {"previous_status": row["status"], **(data or {})}, now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return row["status"] if row is not None else None

    def requeue_unfinished(self) -> list[str]:
        """Put every job left queued or running back in the queue (oldest first); their ids."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT id, status FROM jobs WHERE status IN ('queued', 'running') ORDER BY created, id"
                ).fetchall()
                for row in rows:
                    if row["status"] == "running":
                        self._db.execute("UPDATE jobs SET status = 'queued' WHERE id = ?", (row["id"],))
                        self._event(row["id"], "requeued", {"reason": "the service restarted while the job ran"}, now)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return [row["id"] for row in rows]

    # -- reading ----------------------------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job as the API shows it, or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            last = self._db.execute(
                "SELECT seq, type, data FROM events WHERE job_id = ? ORDER BY seq DESC LIMIT 1", (job_id,)
            ).fetchone()
        if row is None:
            return None
        return {
            "id": row["id"],
            "object": "job",
            "kind": row["kind"],
            "status": row["status"],
            "request": json.loads(row["request"]),
            "result": json.loads(row["result"]) if row["result"] is not None else None,
            "error": {"message": row["error"], "kind": row["error_kind"]} if row["error"] is not None else None,
            "attempts": row["attempts"],
            "created": row["created"],
            "started": row["started"],
            "finished": row["finished"],
            "last_event": (
                {"seq": last["seq"], "type": last["type"], "data": json.loads(last["data"])} if last else None
            ),
        }

    def status(self, job_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row["status"] if row else None

    def events_after(self, job_id: str, seq: int = 0) -> list[dict[str, Any]]:
        """The job's events numbered above ``seq``, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, time, type, data FROM events WHERE job_id = ? AND seq > ? ORDER BY seq", (job_id, seq)
            ).fetchall()
        return [{"seq": r["seq"], "time": r["time"], "type": r["type"], "data": json.loads(r["data"])} for r in rows]

    def list(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest jobs (without request and result), optionally of one status."""
        query = "SELECT id, kind, status, attempts, created, finished FROM jobs"
        args: tuple = ()
        if status is not None:
            query += " WHERE status = ?"
            args = (status,)
        query += " ORDER BY created DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*args, limit)).fetchall()
        return [{"object": "job", **dict(r)} for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status").fetchall()
        return {r["status"]: r["n"] for r in rows}
