"""Content-addressed response cache: one SQLite file in the run directory.

WAL mode and one committed transaction per completed answer: a process killed with -9 loses
nothing that was already answered and leaves no corrupt file (SQLite's journal recovers it on
the next open). Only successful answers are stored, so failures are retried on the next run.
"""

from __future__ import annotations

import logging
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


class ResponseCache:
    """Thread-safe get/put of :class:`LLMResponse` by request key."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, timeout=30.0, check_same_thread=False, isolation_level=None
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode is durable against process crashes (kill -9); only an OS crash or
        # power loss can drop the last commits, and never corrupts the file.
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_SCHEMA)
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> LLMResponse | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT response FROM responses WHERE key = ?", (key,)
            ).fetchone()
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
            self._conn.execute(
                "INSERT OR REPLACE INTO responses (key, backend, model, created, response) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, response.backend, response.model, time.time(), blob),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
