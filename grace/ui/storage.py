"""What the app keeps on disk for its visitors, and how much: exports (per visitor and in total,
oldest out), uploaded training data (one copy per content) and the quotas of runs.

Only ``exports_dir()`` is served to browsers (``launch(allowed_paths=...)``); everything else in
the data folder (runs, annotations, results) is never a download. An export's name holds a
random part, so its address cannot be guessed by another visitor.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import time
from pathlib import Path

from grace.files.paths import data_dir
from grace.files.textio import atomic_output

MAX_EXPORTS_PER_VISITOR = 10
MAX_EXPORTS_TOTAL = 200
MAX_RUNS_PER_VISITOR = 5  # public mode: a visitor removes one of theirs to start a sixth
MAX_RUNS_TOTAL = 60  # public mode: beyond it, the oldest finished runs are pruned


def exports_dir() -> Path:
    d = data_dir() / "exports"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _owner_folder(owner: str) -> str:
    return hashlib.sha256(owner.encode("utf-8")).hexdigest()[:16]


def export_path(owner: str, prefix: str, suffix: str = ".csv") -> Path:
    """A new export file's path for ``owner`` (a ``Visitor.id``), after pruning: the owner keeps
    their newest ``MAX_EXPORTS_PER_VISITOR - 1`` files, the folder its newest ``MAX_EXPORTS_TOTAL - 1``.
    Exports are re-made from what is on the page (no model work), so pruning loses nothing."""
    folder = exports_dir() / _owner_folder(owner)
    folder.mkdir(parents=True, exist_ok=True)
    _prune(sorted(folder.glob("*.*"), key=_mtime), MAX_EXPORTS_PER_VISITOR - 1)
    _prune(sorted(exports_dir().glob("*/*.*"), key=_mtime), MAX_EXPORTS_TOTAL - 1)
    return folder / f"{prefix}-{int(time.time() * 1000)}-{secrets.token_hex(8)}{suffix}"


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def _prune(files: list[Path], keep: int) -> None:
    for f in files[:max(0, len(files) - keep)]:
        f.unlink(missing_ok=True)


def store_upload(src: str | Path) -> Path:
    """Copy an uploaded training file into the app's uploads folder once per content (runs on the
    same file share it; ``prune_uploads`` removes those no run uses)."""
    src = Path(src)
    h = hashlib.sha256()
    with open(src, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    suffix = src.suffix.lower() if src.suffix.lower() in (".jsonl", ".txt", ".json") else ".txt"
    folder = data_dir() / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / f"{h.hexdigest()[:24]}{suffix}"
    if not dst.exists():
        with open(src, "rb") as f, atomic_output(dst, "wb") as out:
            shutil.copyfileobj(f, out)
    return dst


def prune_uploads(used: set[str]) -> None:
    """Remove uploaded files that no run on disk trains on (``used``: resolved paths)."""
    folder = data_dir() / "uploads"
    for f in folder.glob("*") if folder.is_dir() else []:
        if f.is_file() and str(f.resolve()) not in used:
            f.unlink(missing_ok=True)


def served_paths() -> list[str]:
    """The folders Gradio may serve files from: the exports only."""
    return [str(exports_dir().resolve())]
