"""An on-disk cache of generated rationales, keyed by (model, adapter, settings, text).

Evaluations re-use rationales across tasks and re-runs: the same text in another task, or a
task re-run after an interruption, is not generated again. Stored in SQLite (one commit per
generated batch, safe with concurrent writers); values are the rationale token ids exactly as
generated.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Sequence

from ..model.backbone import cache_dir


class RationaleCache:
    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else cache_dir() / "rationales.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as c:
            c.execute("CREATE TABLE IF NOT EXISTS rationales (settings TEXT NOT NULL, text_hash TEXT NOT NULL, "
                      "ids TEXT NOT NULL, finished INTEGER NOT NULL, PRIMARY KEY (settings, text_hash))")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    @staticmethod
    def _h(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def get_many(self, settings: str, texts: Sequence[str]) -> dict[int, list[int]]:
        """Cached rationale ids by position in ``texts`` (missing ones are absent)."""
        out: dict[int, list[int]] = {}
        conn = self._conn()
        for i, t in enumerate(texts):
            row = conn.execute("SELECT ids FROM rationales WHERE settings=? AND text_hash=?",
                               (settings, self._h(t))).fetchone()
            if row is not None:
                out[i] = json.loads(row[0])
        return out

    def put_many(self, settings: str, texts: Sequence[str], ids: Sequence[Sequence[int]],
                 finished: Sequence[bool] | None = None) -> None:
        finished = finished or [True] * len(texts)
        with self._conn() as c:  # one transaction
            c.executemany("INSERT OR REPLACE INTO rationales VALUES (?, ?, ?, ?)",
                          [(settings, self._h(t), json.dumps(list(r)), int(f))
                           for t, r, f in zip(texts, ids, finished)])

    def count(self, settings: str | None = None) -> int:
        q = "SELECT COUNT(*) FROM rationales" + (" WHERE settings=?" if settings else "")
        return self._conn().execute(q, (settings,) if settings else ()).fetchone()[0]
