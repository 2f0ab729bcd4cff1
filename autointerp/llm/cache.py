"""Content-addressed response cache: one SQLite file in the run directory.

WAL mode and one committed transaction per completed answer: a process killed with -9 loses
nothing that was already answered and leaves no corrupt file (SQLite's journal recovers it on
the next open). Only successful answers are stored, so failures are retried on the next run.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from autointerp.llm.types import LLMResponse

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    created REAL NOT NULL,
    response TEXT NOT NULL
)
"""


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL in WAL mode is durable against process crashes (kill -9); only an OS crash or
    # power loss can drop the last commits, and never corrupts the file.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(_SCHEMA)
    return conn


def shard_files(path: Path) -> list[Path]:
    """Write shards of ended worker processes next to the main file
    (``<stem>.w<i>-<pid>.sqlite``); a shard whose process still runs is left alone."""
    found = []
    for p in sorted(path.parent.glob(f"{path.stem}.*{path.suffix}")):
        if p == path:
            continue
        pid = p.stem.rsplit("-", 1)[-1]
        if pid.isdigit() and _alive(int(pid)):
            continue
        found.append(p)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def merge_shards(path: str | Path) -> int:
    """Move every worker shard's answers into the main file; returns how many were added.
    Run by the parent after its workers end, and on opening (a killed run's leftovers)."""
    path = Path(path)
    added = 0
    shards = shard_files(path)
    if not shards:
        return 0
    conn = _open(path)
    try:
        for shard in shards:
            conn.execute("ATTACH DATABASE ? AS shard", (str(shard),))
            before = conn.total_changes
            # the newer answer wins (a --force run re-asked what the main file holds)
            conn.execute(
                "INSERT INTO responses SELECT * FROM shard.responses WHERE true "
                "ON CONFLICT(key) DO UPDATE SET response = excluded.response, "
                "created = excluded.created WHERE excluded.created > responses.created"
            )
            added += conn.total_changes - before
            conn.execute("DETACH DATABASE shard")
            for extra in (shard, Path(f"{shard}-wal"), Path(f"{shard}-shm")):
                extra.unlink(missing_ok=True)
    finally:
        conn.close()
    if added:
        log.info("merged %d cached answers of worker shards into %s", added, path.name)
    return added


class ResponseCache:
    """Thread-safe get/put of :class:`LLMResponse` by request key.

    With ``shard`` (a worker process of a multi-process stage), answers are written to the
    worker's own file ``<stem>.<shard>.sqlite`` and looked up there and in the main file:
    processes never wait on each other's write locks (SQLite's busy-wait would stall the event
    loop). The parent merges the shards when its workers end (:func:`merge_shards`)."""

    def __init__(self, path: str | Path, shard: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        if shard is None:
            merge_shards(self.path)
        self._conn = _open(self.path)
        self._write = self._conn
        if shard is not None:
            self._write = _open(self.path.with_name(f"{self.path.stem}.{shard}{self.path.suffix}"))
        self.hits = 0
        self.misses = 0

    def get(self, key: str, newer_than: float | None = None) -> LLMResponse | None:
        """The answer stored for ``key`` (written after ``newer_than``, a UNIX time, when set:
        ``--force`` asks again what an earlier run cached)."""
        with self._lock:
            row = None
            for conn in dict.fromkeys((self._write, self._conn)):
                row = conn.execute(
                    "SELECT response FROM responses WHERE key = ? AND created >= ?",
                    (key, newer_than or 0.0),
                ).fetchone()
                if row is not None:
                    break
        if row is None:
            self.misses += 1
            return None
        try:
            response = LLMResponse.model_validate_json(row[0])
        except ValueError:
            log.warning("dropping unreadable cache entry %s", key[:12])
            self.misses += 1
            return None
        self.hits += 1
        return response

    def put(self, key: str, response: LLMResponse) -> None:
        if not response.ok:
            return
        blob = response.model_dump_json(exclude={"cached"})
        with self._lock:
            self._write.execute(
                "INSERT OR REPLACE INTO responses (key, backend, model, created, response) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, response.backend, response.model, time.time(), blob),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._write is not self._conn:
                self._write.close()
            self._conn.close()
