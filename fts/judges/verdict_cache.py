"""Verdicts of paid judges in one sqlite file in the cache dir, so that no request is ever sent twice.

The key hashes the judge identity (model, endpoint host, decoding), the rubric version, the request and the reply.
Each verdict is committed as it arrives, so the progress of a crashed or stopped run is kept. sqlite (WAL mode, busy
timeout) lets the cells of a local sweep share the file; a run writes only from its main thread.
"""

import hashlib
import json
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

FILENAME = "verdicts.sqlite"
log = logging.getLogger(__name__)


def verdict_key(identity: dict[str, Any], prompt: str, response: str) -> str:
    blob = json.dumps([identity, prompt, response], sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


class VerdictCache:
    """`get_many` / `put` over a sqlite table; `root=None` disables caching (every lookup misses)."""

    def __init__(self, root: str | Path | None) -> None:
        self.path = Path(root).expanduser() / FILENAME if root else None

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._open()
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise  # busy, not broken
            return self._set_aside(e)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, verdict TEXT NOT NULL, at REAL)")
            conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _set_aside(self, error: sqlite3.DatabaseError) -> sqlite3.Connection:
        """A corrupt file (a crash of the disk, not of fts: sqlite commits are atomic) is moved aside, not used:
        its verdicts will be requested again (and paid again), which the warning says."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        log.warning("the verdict cache %s is unreadable (%s); moved it to %s and starting a new one: verdicts it "
                    "held will be requested again", self.path, error, aside)  # fmt: skip
        for suffix in ("", "-wal", "-shm"):
            source = self.path.with_name(self.path.name + suffix)
            if source.exists():
                os.replace(source, aside.with_name(aside.name + suffix))
        return self._open()

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        if self.path is None or not self.path.exists():
            return {}
        unique = list(dict.fromkeys(keys))
        found: dict[str, dict] = {}
        with self._connect() as conn:
            for start in range(0, len(unique), 500):  # sqlite caps the number of bound parameters
                chunk = unique[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(f"SELECT key, verdict FROM verdicts WHERE key IN ({marks})", chunk)
                found |= {key: json.loads(verdict) for key, verdict in rows}
        conn.close()
        return found

    def open(self) -> "VerdictWriter":
        return VerdictWriter(self._connect() if self.path else None)


class VerdictWriter:
    """One connection for a batch of writes; each `put` commits at once (crash-safe progress)."""

    def __init__(self, conn: sqlite3.Connection | None) -> None:
        self.conn = conn

    def put(self, key: str, verdict: dict) -> None:
        if self.conn is None:
            return
        # INSERT OR REPLACE: the same key twice (two sweep cells racing) still leaves one row.
        self.conn.execute(
            "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?)",
            (key, json.dumps(verdict, ensure_ascii=False), time.time()),
        )
        self.conn.commit()

    def __enter__(self) -> "VerdictWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()
