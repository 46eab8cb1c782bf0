"""An on-disk cache of generated rationales, keyed by (model, adapter, settings, text).

Evaluations re-use rationales across tasks and re-runs: the same text in another task, or a
task re-run after an interruption, is not generated again. Stored in SQLite (one commit per
generated batch, safe with concurrent writers); values are the rationale token ids exactly as
generated. The cache holds at most ``max_rows`` rationales: a put that goes past it drops the
least recently used ones (read or written longest ago).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Sequence

from ..model.backbone import cache_dir

DEFAULT_MAX_ROWS = 200_000
MAX_ROWS_ENV = "GRACE_RATIONALE_CACHE_ROWS"


def _max_rows(value: int | None) -> int:
    """The row limit: the argument, else the environment variable, else the default."""
    if value is None:
        raw = os.environ.get(MAX_ROWS_ENV, "").strip()
        try:
            value = int(raw) if raw else DEFAULT_MAX_ROWS
        except ValueError:
            raise ValueError(f"{MAX_ROWS_ENV} must be a whole number of rows, not {raw!r}.") from None
    if value < 1:
        raise ValueError(f"The rationale cache needs max_rows of at least 1, not {value}.")
    return value


class RationaleCache:
    def __init__(self, path: str | Path | None = None, max_rows: int | None = None):
        self.path = Path(path) if path else cache_dir() / "rationales.sqlite"
        self.max_rows = _max_rows(max_rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._write() as c:
            c.execute("CREATE TABLE IF NOT EXISTS rationales (settings TEXT NOT NULL, text_hash TEXT NOT NULL, "
                      "ids TEXT NOT NULL, finished INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0, "
                      "PRIMARY KEY (settings, text_hash))")
            columns = {row[1] for row in c.execute("PRAGMA table_info(rationales)")}
            if "used" not in columns:  # a file from before the row limit: its rows go first
                c.execute("ALTER TABLE rationales ADD COLUMN used INTEGER NOT NULL DEFAULT 0")
            c.execute("CREATE INDEX IF NOT EXISTS rationales_used ON rationales (used)")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    def _write(self) -> sqlite3.Connection:
        """The connection inside a write transaction (committed by ``with``), taken at once so that
        reading the use counter and writing it are one step for concurrent writers."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        return conn

    @staticmethod
    def _next_use(conn: sqlite3.Connection) -> int:
        """The next value of the use counter (higher = used more recently)."""
        return conn.execute("SELECT COALESCE(MAX(used), 0) + 1 FROM rationales").fetchone()[0]

    @staticmethod
    def _h(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get_many(self, settings: str, texts: Sequence[str]) -> dict[int, list[int]]:
        """Cached rationale ids by position in ``texts`` (missing ones are absent); hits count as used."""
        out: dict[int, list[int]] = {}
        hashes = [self._h(t) for t in texts]
        conn = self._conn()
        for i, h in enumerate(hashes):
            row = conn.execute("SELECT ids FROM rationales WHERE settings=? AND text_hash=?",
                               (settings, h)).fetchone()
            if row is not None:
                out[i] = json.loads(row[0])
        if out:
            with self._write() as c:
                use = self._next_use(c)
                c.executemany("UPDATE rationales SET used=? WHERE settings=? AND text_hash=?",
                              [(use + n, settings, hashes[i]) for n, i in enumerate(out)])
        return out

    def put_many(self, settings: str, texts: Sequence[str], ids: Sequence[Sequence[int]],
                 finished: Sequence[bool] | None = None) -> None:
        finished = finished or [True] * len(texts)
        with self._write() as c:  # one transaction, the eviction included
            use = self._next_use(c)
            c.executemany("INSERT OR REPLACE INTO rationales (settings, text_hash, ids, finished, used) "
                          "VALUES (?, ?, ?, ?, ?)",
                          [(settings, self._h(t), json.dumps(list(r)), int(f), use + n)
                           for n, (t, r, f) in enumerate(zip(texts, ids, finished))])
            excess = c.execute("SELECT COUNT(*) FROM rationales").fetchone()[0] - self.max_rows
            if excess > 0:
                c.execute("DELETE FROM rationales WHERE rowid IN "
                          "(SELECT rowid FROM rationales ORDER BY used LIMIT ?)", (excess,))

    def count(self, settings: str | None = None) -> int:
        q = "SELECT COUNT(*) FROM rationales" + (" WHERE settings=?" if settings else "")
        return self._conn().execute(q, (settings,) if settings else ()).fetchone()[0]
