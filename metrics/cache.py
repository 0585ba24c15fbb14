"""The extraction cache: one SQLite database (WAL mode) per cache directory.

Extraction is where the benchmark spends its GPU time, so every finished LLM
answer is stored as soon as it arrives and a rerun (after a crash, a
``kill -9`` or a new answer file that repeats old answers) only generates
what is missing.

The key is content-addressed: sha256 of (schema version, backend kind, model
identity, canonical decoding parameters, the exact prompt). A changed prompt,
model or decoding therefore never reuses a stale answer.

Concurrency: WAL lets readers and one writer work at once; two runs sharing a
directory wait for each other's short write transactions (busy timeout, then
a few retries). Each arriving batch of answers is its own transaction, so a
killed run loses at most the answers still being generated.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from unibench.errors import UserError

SCHEMA_VERSION = 1
DB_NAME = "extraction.sqlite"
BUSY_TIMEOUT_S = 30.0
LOCK_RETRIES = 5
_QUERY_CHUNK = 500  # keys per SELECT (SQLite's host-parameter limit is 999 on old builds)


def default_extraction_cache_dir() -> Path:
    from unibench.metrics.lexicon import default_cache_dir

    return default_cache_dir() / "extraction"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def cache_key(backend: str, model: str, decoding: Mapping[str, Any], prompt: str) -> str:
    """sha256 of everything that decides an answer; decoding is canonicalised (sorted keys)."""
    blob = canonical_json([SCHEMA_VERSION, backend, model, dict(decoding), prompt])
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ExtractionCache:
    """Key -> LLM answer. Safe across threads of one process and across processes."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / DB_NAME
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the extraction cache folder {self.folder} ({exc.strerror}); "
                            "pass --cache-dir DIR or --no-cache") from None
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._open()

    # ------------------------------------------------------------ plumbing
    def _corrupt(self, exc: Exception) -> UserError:
        return UserError(f"extraction cache {self.path} is unreadable or corrupt ({exc}); "
                         "delete that file or run with --no-cache")

    def _open(self) -> None:
        try:
            conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._corrupt(exc) from None
        self._conn = conn

        def setup() -> None:
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            # WAL + synchronous=NORMAL: a commit is in the OS's hands at once, so a killed
            # process loses nothing it committed (only a power cut could lose the last few).
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            if mode is None or str(mode[0]).lower() != "wal":
                raise sqlite3.DatabaseError(f"could not switch to WAL mode (got {mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            conn.execute("CREATE TABLE IF NOT EXISTS extraction ("
                         "key TEXT PRIMARY KEY, response TEXT NOT NULL, backend TEXT NOT NULL, "
                         "model TEXT NOT NULL, created REAL NOT NULL)")
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if row is None or row[0] != str(SCHEMA_VERSION):
                raise sqlite3.DatabaseError(f"schema version {row[0] if row else None}, "
                                            f"this harness writes {SCHEMA_VERSION}")

        self._retry(setup)

    def _retry(self, fn: Any) -> Any:
        """Run ``fn`` under the lock; retry on 'database is locked', turn corruption into one line."""
        delay = 0.05
        for attempt in range(LOCK_RETRIES + 1):
            try:
                with self._lock:
                    return fn()
            except sqlite3.OperationalError as exc:
                text = str(exc).lower()
                if ("locked" in text or "busy" in text) and attempt < LOCK_RETRIES:
                    time.sleep(delay)
                    delay *= 2
                    continue
                if "locked" in text or "busy" in text:
                    raise UserError(f"extraction cache {self.path} stayed locked by another process for "
                                    f"over {BUSY_TIMEOUT_S:.0f} s; retry later, or pass --cache-dir DIR") from None
                raise self._corrupt(exc) from None
            except sqlite3.DatabaseError as exc:  # 'file is not a database', 'malformed', ...
                raise self._corrupt(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------ API
    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        conn = self._require()
        found: dict[str, str] = {}
        for start in range(0, len(keys), _QUERY_CHUNK):
            chunk = list(keys[start:start + _QUERY_CHUNK])
            marks = ",".join("?" * len(chunk))

            def query(chunk: list[str] = chunk, marks: str = marks) -> list[tuple[str, str]]:
                return conn.execute(f"SELECT key, response FROM extraction WHERE key IN ({marks})", chunk).fetchall()

            found.update(self._retry(query))
        bad = [k for k, v in found.items() if not isinstance(v, str)]
        if bad:  # the harness stores only text: another writer (or an editor) put something else there
            raise self._corrupt(sqlite3.DatabaseError(f"{len(bad)} stored answer(s) are not text "
                                                      f"({type(found[bad[0]]).__name__})"))
        return found

    def put_many(self, rows: Iterable[tuple[str, str]], backend: str, model: str) -> int:
        """Store (key, response) pairs in one transaction. Empty responses are never stored."""
        now = time.time()
        data = [(k, r, backend, model, now) for k, r in rows if isinstance(r, str) and r.strip()]
        if not data:
            return 0
        conn = self._require()

        def write() -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO extraction(key, response, backend, model, created) "
                                 "VALUES (?, ?, ?, ?, ?)", data)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        self._retry(write)
        return len(data)

    def count(self) -> int:
        conn = self._require()
        return int(self._retry(lambda: conn.execute("SELECT COUNT(*) FROM extraction").fetchone()[0]))

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise UserError(f"extraction cache {self.path} is closed")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def __enter__(self) -> "ExtractionCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
