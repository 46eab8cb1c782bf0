"""The rationale-quality annotation store: SQLite (WAL, foreign keys, schema migrations).

Items are (text, rationale, the settings that made it, optional paired text and similarity or
reward, where it came from), everyone's or one owner's (on a public app what a visitor sends or
imports stays in their own queue). An annotator is a key with a display name: locally the typed
name (a lab tool: no passwords), in the public app the visitor's full id. Each annotator
rates an item once on faithfulness, informativeness and fluency (1-5), with a hallucination flag
and a comment; a rating can be edited by its author, and every edit keeps the old values in
``rating_history``. Every write is one transaction.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

APP_ID = "grace-studio-annotations"
SCHEMA_VERSION = 4
DIMENSIONS = ("faithfulness", "informativeness", "fluency")
SOURCES = ("explore", "training", "import")  # the app's own; an imported item may carry any short label
MAX_NAME = 100
# The public app's caps on the store (``add_items``/``import_rows``' max_total and max_per_owner): an
# item holds up to 60,000 characters, so the store stays under about a gigabyte.
MAX_ITEMS_TOTAL = 20_000
MAX_ITEMS_PER_OWNER = 2_000
MAX_COMMENT = 2_000
MAX_SOURCE = 64
RATING_VALUES = (*DIMENSIONS, "hallucination", "comment")  # what an edit changes (and history keeps)
ITEM_FIELDS = ["text", "rationale", "settings", "source", "paired_text", "similarity", "reward", "run", "step",
               "rationale_shift", "created"]

# Each entry upgrades the schema from version i to i + 1; version 1 is the first release.
MIGRATIONS: list[str] = [
    # v0 -> v1
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE items (
        id INTEGER PRIMARY KEY, text TEXT NOT NULL, rationale TEXT NOT NULL, settings TEXT NOT NULL DEFAULT '{}',
        paired_text TEXT, similarity REAL, source TEXT NOT NULL, created REAL NOT NULL);
    CREATE TABLE annotators (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL);
    CREATE TABLE ratings (
        id INTEGER PRIMARY KEY,
        item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
        annotator_id INTEGER NOT NULL REFERENCES annotators(id),
        faithfulness INTEGER NOT NULL CHECK (faithfulness BETWEEN 1 AND 5),
        informativeness INTEGER NOT NULL CHECK (informativeness BETWEEN 1 AND 5),
        fluency INTEGER NOT NULL CHECK (fluency BETWEEN 1 AND 5),
        hallucination INTEGER NOT NULL DEFAULT 0, comment TEXT NOT NULL DEFAULT '',
        created REAL NOT NULL, updated REAL NOT NULL, UNIQUE (item_id, annotator_id));
    """,
    # v1 -> v2: de-duplication key, training provenance (run, step), reward, rating history
    """
    ALTER TABLE items ADD COLUMN content_hash TEXT;
    ALTER TABLE items ADD COLUMN run TEXT;
    ALTER TABLE items ADD COLUMN step INTEGER;
    ALTER TABLE items ADD COLUMN reward REAL;
    CREATE TABLE rating_history (
        id INTEGER PRIMARY KEY, rating_id INTEGER NOT NULL REFERENCES ratings(id) ON DELETE CASCADE,
        old TEXT NOT NULL, changed REAL NOT NULL);
    """,
    # v2 -> v3: the rationale's measured effect on its text (analysis.effect), when it was measured
    """
    ALTER TABLE items ADD COLUMN rationale_shift REAL;
    """,
    # v3 -> v4: annotators.name is the key that acts (the public app's full visitor id), display
    # what the page shows; an item may belong to one owner's queue (NULL: everyone's)
    """
    ALTER TABLE annotators ADD COLUMN display TEXT;
    ALTER TABLE items ADD COLUMN owner TEXT;
    """,
]


class AnnotationError(ValueError):
    """A refused operation; the message says why in one sentence."""


def content_hash(text: str, rationale: str, settings: dict, owner: str | None = None) -> str:
    """The de-duplication key; an owned item's includes its owner (another's copy is not "already there")."""
    blob = json.dumps([text, rationale, settings] + ([owner] if owner else []), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _brief(value) -> str:
    """A value as a message may quote it: its repr, cut short."""
    r = repr(value)
    return r if len(r) <= 40 else r[:37] + "..."


def check_name(name: str) -> str:
    if name is not None and not isinstance(name, str):
        raise AnnotationError(f"An annotator name is text, not {_brief(name)}.")
    name = (name or "").strip()
    if not name:
        raise AnnotationError("Type your annotator name first.")
    if len(name) > MAX_NAME:
        raise AnnotationError(f"An annotator name is at most {MAX_NAME} characters ({len(name)} given).")
    return name


def check_scores(scores: dict) -> dict:
    out = {}
    for d in DIMENSIONS:
        v = scores.get(d)
        if v is None or v == "":
            raise AnnotationError(f"Rate {d} (1-5) before saving.")
        try:
            if isinstance(v, bool) or not isinstance(v, (int, float, str)):
                raise TypeError
            fv = float(v)
        except (TypeError, ValueError, OverflowError):
            raise AnnotationError(f"{d} must be a whole number from 1 to 5, not {_brief(v)}.") from None
        if not fv.is_integer() or not 1 <= fv <= 5:
            raise AnnotationError(f"{d} must be from 1 to 5, not {_brief(v)}.")
        out[d] = int(fv)
    return out


def check_comment(comment: str | None) -> str:
    if comment is None:
        return ""
    if not isinstance(comment, str):
        raise AnnotationError(f"A comment is text, not {_brief(comment)}.")
    if len(comment) > MAX_COMMENT:
        raise AnnotationError(f"A comment is at most {MAX_COMMENT:,} characters ({len(comment):,} given).")
    return comment


def check_source(source: str | None) -> str:
    source = source or "import"
    if not isinstance(source, str) or not source.strip() or len(source) > MAX_SOURCE:
        raise AnnotationError(f"'source' is a short label: 1 to {MAX_SOURCE} characters "
                              "(e.g. explore, training, import).")
    return source


@dataclass
class Item:
    id: int
    text: str
    rationale: str
    settings: dict
    paired_text: str | None
    similarity: float | None
    reward: float | None
    source: str
    run: str | None
    step: int | None
    content_hash: str
    created: float
    rationale_shift: float | None = None  # 1 - cos(with, without the rationale); None: not measured
    owner: str | None = None  # whose queue it is in; None: everyone's


class AnnotationStore:
    """One SQLite file; safe for several threads (a connection each) and processes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AnnotationError(f"Cannot create the annotation folder {self.path.parent}: {exc.strerror}.") from None
        self._open_and_migrate()

    # -- connection and schema -------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 30000")
            self._local.conn = conn
        return conn

    def _tx(self):
        return _Transaction(self._conn())

    def _open_and_migrate(self) -> None:
        # Never open the file outside SQLite: closing any descriptor of it would drop this
        # process's POSIX locks and let another process write at the same time.
        try:
            conn = self._conn()
            self._check_owner(conn)  # refuse a foreign file before changing anything in it
            self._use_wal(conn)  # only a GRACE database (or a new file) gets here: changing its journal is fine
            # the version is read again and every migration applied inside ONE write transaction:
            # of two processes opening a new file at once, the second waits, then sees it migrated
            with self._tx() as c:
                for v in range(self._check_owner(c), SCHEMA_VERSION):
                    self._migrate(c, v + 1)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc).lower():
                raise AnnotationError(f"The annotation database {self.path} is read-only.") from None
            if "not a database" in str(exc):
                raise AnnotationError(f"{self.path} is not a GRACE annotation database (not SQLite); "
                                      "it was left untouched.") from None
            raise AnnotationError(f"{self.path} cannot be used as an annotation database ({exc}).") from None

    def _use_wal(self, conn: sqlite3.Connection, wait: float = 30.0) -> None:
        """Switch the file to write-ahead logging. SQLite answers "locked" at once, without its busy
        timeout, while another opener migrates a new file: retry until that is done (or ``wait``)."""
        deadline = time.monotonic() + wait
        while True:
            try:
                if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                    raise AnnotationError(f"Cannot write the annotation database {self.path}: {exc}.") from None
                time.sleep(0.05)

    def _check_owner(self, conn: sqlite3.Connection) -> int:
        """The file's schema version (0 for a new file), refusing another program's database."""
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and "meta" not in tables:
            raise AnnotationError(f"{self.path} is an SQLite file of another program; it was left untouched.")
        version = 0
        if "meta" in tables:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            if meta.get("app") != APP_ID:
                raise AnnotationError(f"{self.path} is not a GRACE annotation database; it was left untouched.")
            version = int(meta.get("schema_version", "0"))
        if version > SCHEMA_VERSION:
            raise AnnotationError(f"{self.path} uses annotation schema {version}, newer than this GRACE Studio "
                                  f"({SCHEMA_VERSION}); upgrade GRACE Studio to open it.")
        return version

    @staticmethod
    def _migrate(c: sqlite3.Connection, version: int) -> None:
        for stmt in MIGRATIONS[version - 1].split(";"):
            if stmt.strip():
                c.execute(stmt)
        if version == 2:
            for row in c.execute("SELECT id, text, rationale, settings FROM items").fetchall():
                h = content_hash(row["text"], row["rationale"], json.loads(row["settings"]))
                c.execute("UPDATE items SET content_hash=? WHERE id=?", (h, row["id"]))
            c.execute("CREATE UNIQUE INDEX items_hash ON items(content_hash)")
        if version == 4:
            # Existing annotators keep their names as keys, so typed local names go on working; the
            # public app now keys by full ids ("anon:"/"hf:"), which no old short "guest:" or username
            # key equals: those ratings stay in the statistics, nobody's to edit (legacy).
            c.execute("UPDATE annotators SET display = name")
        c.execute("INSERT OR REPLACE INTO meta VALUES ('app', ?)", (APP_ID,))
        c.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(version),))

    def schema_version(self) -> int:
        return int(self._conn().execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])

    # -- items -----------------------------------------------------------------------------------
    def add_item(self, text: str, rationale: str, *, settings: dict | None = None, source: str = "import",
                 paired_text: str | None = None, similarity: float | None = None, reward: float | None = None,
                 run: str | None = None, step: int | None = None,
                 rationale_shift: float | None = None) -> tuple[int, bool]:
        """Add an item (or find the identical one); returns (id, newly added)."""
        return self.add_items([dict(text=text, rationale=rationale, settings=settings or {}, source=source,
                                    paired_text=paired_text, similarity=similarity, reward=reward, run=run,
                                    step=step, rationale_shift=rationale_shift)])[0]

    def add_items(self, items: Iterable[dict], owner: str | None = None, *, max_total: int | None = None,
                  max_per_owner: int | None = None) -> list[tuple[int, bool]]:
        """Several items in one transaction (all or none); with ``owner`` (an annotator key), in
        that annotator's own queue only. New items that would take the store past ``max_total``
        items, or ``owner``'s queue past ``max_per_owner``, are refused whole with a sentence."""
        out = []
        with self._tx() as c:
            for it in items:
                out.append(self._insert_item(c, {**it, "owner": owner} if owner else it))
            _check_caps(c, sum(new for _, new in out), owner, max_total, max_per_owner)
        return out

    @staticmethod
    def _insert_item(c, it: dict) -> tuple[int, bool]:
        text, rationale = it.get("text"), it.get("rationale")
        if not isinstance(text, str) or not text.strip():
            raise AnnotationError("An item needs a non-empty text.")
        if not isinstance(rationale, str):
            raise AnnotationError("An item needs a rationale (a string).")
        settings = it.get("settings") or {}
        source = check_source(it.get("source"))
        owner = check_name(it["owner"]) if it.get("owner") else None
        h = content_hash(text, rationale, settings, owner)
        row = c.execute("SELECT id FROM items WHERE content_hash=?", (h,)).fetchone()
        if row:
            return row[0], False
        shift = it.get("rationale_shift")
        if shift is not None and (isinstance(shift, bool) or not isinstance(shift, (int, float))
                                  or not math.isfinite(shift)):
            raise AnnotationError(f"rationale_shift is a number, not {_brief(shift)}.")
        cur = c.execute(
            "INSERT INTO items (text, rationale, settings, paired_text, similarity, source, created, content_hash,"
            " run, step, reward, rationale_shift, owner) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (text, rationale, json.dumps(settings, sort_keys=True), it.get("paired_text"), it.get("similarity"),
             source, it.get("created") or time.time(), h, it.get("run"), it.get("step"), it.get("reward"),
             None if shift is None else float(shift), owner))
        return cur.lastrowid, True

    def item(self, item_id: int, annotator: str | None = None) -> Item:
        """An item; with ``annotator``, only one in their queue (another owner's is "No item")."""
        row = self._conn().execute("SELECT * FROM items WHERE id=?", (item_id,)).fetchone()
        if row is None or (annotator is not None and row["owner"] not in (None, annotator)):
            raise AnnotationError(f"No item {item_id}.")
        return _item(row)

    def items(self) -> list[Item]:
        return [_item(r) for r in self._conn().execute("SELECT * FROM items ORDER BY id")]

    def count_items(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM items").fetchone()[0]

    # -- annotators and ratings ------------------------------------------------------------------
    def annotator_id(self, name: str, display: str | None = None) -> int:
        """The annotator with key ``name`` (made on first use); ``display`` is what the page shows
        (default: the key), updated when it changed (a renamed account)."""
        name = check_name(name)
        display = check_name(display) if display else None
        with self._tx() as c:
            return self._annotator_id(c, name, display)

    @staticmethod
    def _annotator_id(c, name: str, display: str | None) -> int:
        c.execute("INSERT OR IGNORE INTO annotators (name, display, created) VALUES (?, ?, ?)",
                  (name, display or name, time.time()))
        if display:
            c.execute("UPDATE annotators SET display=? WHERE name=? AND display IS NOT ?", (display, name, display))
        return c.execute("SELECT id FROM annotators WHERE name=?", (name,)).fetchone()[0]

    def display_names(self) -> dict[str, str]:
        """Each annotator's key -> the name the page shows."""
        return {r[0]: r[1] or r[0] for r in self._conn().execute("SELECT name, display FROM annotators")}

    def rate(self, item_id: int, annotator: str, *, hallucination: bool = False, comment: str = "",
             display: str | None = None, **scores) -> int:
        """Save (or edit) this annotator's rating of an item in their queue; an edit keeps the old
        values in history."""
        s = check_scores(scores)
        comment = check_comment(comment)
        aid = self.annotator_id(annotator, display)
        now = time.time()
        with self._tx() as c:
            if c.execute("SELECT 1 FROM items WHERE id=? AND (owner IS NULL OR owner=?)",
                         (item_id, annotator)).fetchone() is None:
                raise AnnotationError(f"No item {item_id}.")
            old = c.execute("SELECT * FROM ratings WHERE item_id=? AND annotator_id=?", (item_id, aid)).fetchone()
            if old is None:
                cur = c.execute(
                    "INSERT INTO ratings (item_id, annotator_id, faithfulness, informativeness, fluency, hallucination,"
                    " comment, created, updated) VALUES (?,?,?,?,?,?,?,?,?)",
                    (item_id, aid, s["faithfulness"], s["informativeness"], s["fluency"], int(bool(hallucination)),
                     comment or "", now, now))
                return cur.lastrowid
            _edit_rating(c, old, {**s, "hallucination": int(bool(hallucination)), "comment": comment}, now)
            return old["id"]

    def import_rows(self, rows: Iterable[dict], owner: str | None = None, *, max_total: int | None = None,
                    max_per_owner: int | None = None) -> tuple[int, int]:
        """Items, and ratings (``kind: rating``) with their own timestamps, in one transaction;
        returns (new items, ratings). With ``owner``, the items go to that annotator's own queue;
        the caps are ``add_items``'."""
        added = ratings = 0
        with self._tx() as c:  # all or nothing
            for row in rows:
                item = {k: row.get(k) for k in ITEM_FIELDS}
                item["source"] = item.get("source") or "import"
                item["owner"] = owner
                item_id, new = self._insert_item(c, item)
                added += int(new)
                if row.get("kind") == "rating":
                    self._import_rating(c, item_id, row)
                    ratings += 1
            _check_caps(c, added, owner, max_total, max_per_owner)
        return added, ratings

    @staticmethod
    def _import_rating(c, item_id: int, row: dict) -> None:
        """A rating from an export, with its own timestamps (inside the caller's transaction). A
        different rating by the same annotator is edited as ``rate`` edits it (the old values go to
        history); an identical one is left alone."""
        new = {**check_scores(row), "hallucination": int(bool(row.get("hallucination"))),
               "comment": check_comment(row.get("comment"))}
        aid = AnnotationStore._annotator_id(c, check_name(row.get("annotator")), None)
        created = row.get("rated") or time.time()
        updated = row.get("updated") or created
        old = c.execute("SELECT * FROM ratings WHERE item_id=? AND annotator_id=?", (item_id, aid)).fetchone()
        if old is None:
            c.execute("INSERT INTO ratings (item_id, annotator_id, faithfulness, informativeness, fluency,"
                      " hallucination, comment, created, updated) VALUES (?,?,?,?,?,?,?,?,?)",
                      (item_id, aid, *(new[k] for k in RATING_VALUES), created, updated))
        elif any(old[k] != new[k] for k in RATING_VALUES):
            _edit_rating(c, old, new, updated)

    def rating(self, item_id: int, annotator: str) -> dict | None:
        row = self._conn().execute(
            "SELECT r.* FROM ratings r JOIN annotators a ON a.id=r.annotator_id WHERE r.item_id=? AND a.name=?",
            (item_id, check_name(annotator))).fetchone()
        return dict(row) if row else None

    def history(self, item_id: int, annotator: str) -> list[dict]:
        r = self.rating(item_id, annotator)
        if r is None:
            return []
        return [json.loads(x[0]) for x in self._conn().execute(
            "SELECT old FROM rating_history WHERE rating_id=? ORDER BY id", (r["id"],))]

    def next_item(self, annotator: str, *, random_order: bool = False, seed: int = 0,
                  after: int | None = None) -> Item | None:
        """The next item in this annotator's queue (everyone's items and their own) they have not
        rated (in id order, or a fixed shuffle per annotator)."""
        name = check_name(annotator)
        rows = self._conn().execute(
            "SELECT i.id FROM items i WHERE (i.owner IS NULL OR i.owner=?) AND NOT EXISTS (SELECT 1 FROM ratings r "
            "JOIN annotators a ON a.id=r.annotator_id WHERE r.item_id=i.id AND a.name=?) ORDER BY i.id",
            (name, name)).fetchall()
        ids = [r[0] for r in rows]
        if random_order:
            random.Random(f"{seed}:{name}").shuffle(ids)
        if after is not None and after in ids:
            ids = ids[ids.index(after) + 1:] + ids[:ids.index(after)]
        return self.item(ids[0]) if ids else None

    def progress(self, annotator: str) -> tuple[int, int]:
        """(items this annotator rated, items in their queue)."""
        name = check_name(annotator)
        rated = self._conn().execute(
            "SELECT COUNT(*) FROM ratings r JOIN annotators a ON a.id=r.annotator_id WHERE a.name=?",
            (name,)).fetchone()[0]
        total = self._conn().execute("SELECT COUNT(*) FROM items WHERE owner IS NULL OR owner=?", (name,)).fetchone()[0]
        return rated, total

    def rated_by(self, annotator: str) -> list[int]:
        return [r[0] for r in self._conn().execute(
            "SELECT r.item_id FROM ratings r JOIN annotators a ON a.id=r.annotator_id WHERE a.name=? "
            "ORDER BY r.updated", (check_name(annotator),))]

    def ratings(self) -> list[dict]:
        """Every rating joined with its item and annotator."""
        return [dict(r) for r in self._conn().execute(
            "SELECT i.content_hash, i.id AS item_id, i.step, i.run, i.similarity, i.reward, i.rationale_shift, "
            "a.name AS annotator, "
            "r.faithfulness, r.informativeness, r.fluency, r.hallucination, r.comment, r.created, r.updated "
            "FROM ratings r JOIN items i ON i.id=r.item_id JOIN annotators a ON a.id=r.annotator_id "
            "ORDER BY i.id, a.name")]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error: one write is one transaction."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type:
            self.conn.execute("ROLLBACK")
            return
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error:  # a failed COMMIT leaves the transaction open: close it, then report
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise


def _check_caps(c, added: int, owner: str | None, max_total: int | None, max_per_owner: int | None) -> None:
    """Inside a writing transaction, after its inserts: past a cap, refuse (and so roll back) the
    ``added`` new items whole. Finding items already there adds nothing and is never refused."""
    if not added:
        return
    if max_total is not None:
        total = c.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        if total > max_total:
            raise AnnotationError(f"The annotation store holds its limit of {max_total:,} items: "
                                  f"{added:,} new item(s) were not added.")
    if max_per_owner is not None and owner:
        mine = c.execute("SELECT COUNT(*) FROM items WHERE owner=?", (owner,)).fetchone()[0]
        if mine > max_per_owner:
            raise AnnotationError(f"Your queue keeps at most {max_per_owner:,} items and these {added:,} new item(s) "
                                  f"would make {mine:,}: nothing was added.")


def _edit_rating(c, old, new: dict, updated: float) -> None:
    """Change a rating to ``new`` (values of RATING_VALUES), keeping its old values in history."""
    keep = {k: old[k] for k in (*RATING_VALUES, "updated")}
    c.execute("INSERT INTO rating_history (rating_id, old, changed) VALUES (?,?,?)",
              (old["id"], json.dumps(keep), time.time()))
    c.execute("UPDATE ratings SET faithfulness=?, informativeness=?, fluency=?, hallucination=?, comment=?,"
              " updated=? WHERE id=?", (*(new[k] for k in RATING_VALUES), updated, old["id"]))


def _item(row) -> Item:
    return Item(id=row["id"], text=row["text"], rationale=row["rationale"], settings=json.loads(row["settings"]),
                paired_text=row["paired_text"], similarity=row["similarity"], reward=row["reward"],
                source=row["source"], run=row["run"], step=row["step"], content_hash=row["content_hash"],
                created=row["created"], rationale_shift=row["rationale_shift"], owner=row["owner"])


_STORES: dict[Path, AnnotationStore] = {}
_STORES_LOCK = threading.Lock()


def default_store() -> AnnotationStore:
    """The app's store, opened (and its schema checked) once per file, then shared: each thread
    gets its own connection from it."""
    from grace.files.paths import data_dir

    path = (data_dir() / "annotations.sqlite").resolve()
    with _STORES_LOCK:
        if path not in _STORES or not path.exists():
            _STORES[path] = AnnotationStore(path)
        return _STORES[path]


def items_from_comparison(comp, settings: dict) -> list[dict]:
    """Annotation items for an Explore comparison: the query's rationale and each document's,
    with the query as paired text and the document's cosine as its similarity, and each rationale's
    measured shift (``analysis.effect``)."""
    shifts = comp.shift or [None] * len(comp.docs)
    items = [dict(text=comp.query.text, rationale=comp.query.rationale, settings=settings, source="explore",
                  rationale_shift=comp.query_shift)]
    for d, cos, shift in zip(comp.docs, comp.grace, shifts):
        items.append(dict(text=d.text, rationale=d.rationale, settings=settings, source="explore",
                          paired_text=comp.query.text, similarity=float(cos), rationale_shift=shift))
    return [it for it in items if it["rationale"].strip()]


def items_from_samples(run: str, samples: list[dict], settings: dict) -> list[dict]:
    """Annotation items for a training run's probe rationales: the same text at several steps."""
    return [dict(text=s["text"], rationale=s["rationale"], settings=settings, source="training", run=run,
                 step=int(s["step"])) for s in samples if s.get("rationale", "").strip()]
