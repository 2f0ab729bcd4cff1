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

from tenacity import retry, retry_if_exception, stop_after_delay, wait_random

from autointerp.llm.types import LLMResponse

try:
    import fcntl
except ImportError:  # Windows: shards are told apart by their writer's pid only
    fcntl = None  # type: ignore[assignment]

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


_BUSY_S = 30.0  # how long a connection waits for another's lock before it gives up


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=_BUSY_S, check_same_thread=False, isolation_level=None)
    try:
        _wal(conn)
        # NORMAL in WAL mode is durable against process crashes (kill -9); only an OS crash
        # or power loss can drop the last commits, and never corrupts the file.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(_SCHEMA)
    except BaseException:
        conn.close()
        raise
    return conn


@retry(
    retry=retry_if_exception(
        lambda e: isinstance(e, sqlite3.OperationalError) and "locked" in str(e)
    ),
    wait=wait_random(0.005, 0.05),
    stop=stop_after_delay(_BUSY_S),
    reraise=True,
)
def _wal(conn: sqlite3.Connection) -> None:
    """Put the file in WAL mode. SQLite answers "database is locked" at once, without
    waiting out the busy timeout, when another process is switching the same new file at
    that moment (workers creating the run's cache together: 45 of 520 opens by 4 workers
    at once failed so), so the switch is retried here for as long as that timeout."""
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    if mode.lower() != "wal":
        conn.execute("PRAGMA journal_mode=WAL")


def shard_files(path: Path) -> list[Path]:
    """Every worker shard next to the main file (``<stem>.<shard>.sqlite``), ended or not."""
    return [p for p in sorted(path.parent.glob(f"{path.stem}.*{path.suffix}")) if p != path]


def _lock_path(shard: Path) -> Path:
    return shard.with_name(shard.name + ".lock")


def _try_lock(shard: Path, wait_s: float) -> int | None:
    """An fd holding the shard's lock file exclusively (its writer has ended), or None when
    a live writer still holds it after ``wait_s`` seconds (a shard without a lock file, from
    an older version, counts as ended when the pid ending its name no longer runs)."""
    lock = _lock_path(shard)
    if fcntl is None or not lock.exists():
        pid = shard.stem.rsplit("-", 1)[-1]
        alive = pid.isdigit() and _alive(int(pid))
        return None if alive else -1
    deadline = time.monotonic() + wait_s
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def merge_shards(path: str | Path, wait_s: float = 0.0) -> int:
    """Move the answers of every ended writer's shard into the main file (one transaction
    per shard), then delete the shard; returns how many answers were added. A shard whose
    writer still runs is left alone; ``wait_s``: how long to wait for a writer that is
    dying (an orphan killed with its parent). Safe to run from several processes at once:
    the shard's lock makes one of them the merger."""
    path = Path(path)
    added = 0
    shards = shard_files(path)
    if not shards:
        return 0
    conn: sqlite3.Connection | None = None
    try:
        for shard in shards:
            fd = _try_lock(shard, wait_s)
            if fd is None:
                continue
            try:
                if not shard.is_file():  # merged by another process meanwhile
                    continue
                conn = conn or _open(path)
                conn.execute("ATTACH DATABASE ? AS shard", (str(shard),))
                try:
                    before = conn.total_changes
                    # the newer answer wins (a --force run re-asked what the main file holds)
                    conn.execute(
                        "INSERT INTO responses SELECT * FROM shard.responses WHERE true "
                        "ON CONFLICT(key) DO UPDATE SET response = excluded.response, "
                        "created = excluded.created WHERE excluded.created > responses.created"
                    )
                    added += conn.total_changes - before
                except sqlite3.OperationalError as e:
                    if "no such table" not in str(e):  # busy or damaged: keep it for later
                        log.warning("cache shard %s not merged yet: %s", shard.name, e)
                        continue
                finally:
                    conn.execute("DETACH DATABASE shard")
                for extra in (shard, Path(f"{shard}-wal"), Path(f"{shard}-shm")):
                    extra.unlink(missing_ok=True)
            finally:
                if fd >= 0:
                    _lock_path(shard).unlink(missing_ok=True)
                    os.close(fd)
    finally:
        if conn is not None:
            conn.close()
    if added:
        log.info("merged %d cached answers of worker shards into %s", added, path.name)
    return added


class ResponseCache:
    """Thread-safe get/put of :class:`LLMResponse` by request key.

    With ``shard`` (a worker of a multi-process or Ray stage), answers are written to the
    worker's own file ``<stem>.<shard>.sqlite`` and looked up there and in the main file:
    processes never wait on each other's write locks (SQLite's busy-wait would stall the event
    loop). Each answer is committed as it arrives, so it is durable the moment it is received.
    The worker holds ``<shard file>.lock`` while it lives; whoever opens the cache next (the
    parent at the end of the stage, a rerun, a retried Ray task) merges the shards whose lock
    is free before any request is sent (:func:`merge_shards`)."""

    def __init__(self, path: str | Path, shard: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._lock_fd: int | None = None
        merge_shards(self.path)  # what ended writers left, before anything is asked
        self._conn = _open(self.path)
        self._write = self._conn
        if shard is not None:
            file = self.path.with_name(f"{self.path.stem}.{shard}{self.path.suffix}")
            if fcntl is not None:
                self._lock_fd = os.open(_lock_path(file), os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._write = _open(file)
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
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # the shard may now be merged by anyone
                self._lock_fd = None
