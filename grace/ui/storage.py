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

MAX_EXPORTS_PER_VISITOR = 10  # a visitor's oldest export makes room for their next one
MAX_EXPORTS_TOTAL = 200  # when full, a visitor with no export to replace is refused (never another's removed)
EXPORT_TTL_S = 24 * 3600.0  # an export is a download made from the page: after a day it has been fetched
MAX_RUNS_PER_VISITOR = 5  # public mode: a visitor removes one of theirs to start a sixth
MAX_RUNS_TOTAL = 60  # public mode: when full, a new run is refused (nobody's run is removed to make room)


class StorageFull(ValueError):
    """The app's disk quota for this kind of file is full; the message says what to do."""


def exports_dir() -> Path:
    d = data_dir() / "exports"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _owner_folder(owner: str) -> str:
    return hashlib.sha256(owner.encode("utf-8")).hexdigest()[:16]


def export_path(owner: str, prefix: str, suffix: str = ".csv") -> Path:
    """A new export file's path for ``owner`` (a ``Visitor.id``), after pruning the owner's own
    files only: they keep their newest ``MAX_EXPORTS_PER_VISITOR - 1``, and fewer when the app holds
    ``MAX_EXPORTS_TOTAL`` in all. Nobody's export is removed for another visitor (but those older
    than ``EXPORT_TTL_S``); when the total is full and the owner has none to replace, ``StorageFull``.
    Exports are re-made from what is on the page (no model work), so pruning loses nothing.
    In public mode only signed-in owners export (``identity.require_export``): quotas bind to accounts."""
    from .identity import require_export  # here, the one door every export goes through

    require_export(owner)
    folder = exports_dir() / _owner_folder(owner)
    _prune([f for f in exports_dir().glob("*/*.*") if time.time() - _mtime(f) > EXPORT_TTL_S], 0)
    mine = sorted(folder.glob("*.*"), key=_mtime)
    _prune(mine, MAX_EXPORTS_PER_VISITOR - 1)
    mine = mine[max(0, len(mine) - MAX_EXPORTS_PER_VISITOR + 1):]
    over = len(list(exports_dir().glob("*/*.*"))) - MAX_EXPORTS_TOTAL + 1
    if over > len(mine):
        raise StorageFull(f"The app holds its limit of {MAX_EXPORTS_TOTAL} exports from all visitors; "
                          "try again later (exports are kept for a day).")
    _prune(mine, len(mine) - max(0, over))
    folder.mkdir(parents=True, exist_ok=True)
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


def discard_upload(stored: Path | None, used: set[str]) -> None:
    """Remove a stored upload again after its start failed, unless a run on disk trains on it
    (``used``: resolved paths): a failed start leaves nothing on the disk."""
    if stored is not None and str(Path(stored).resolve()) not in used:
        Path(stored).unlink(missing_ok=True)


def prune_uploads(used: set[str]) -> None:
    """Remove uploaded files that no run on disk trains on (``used``: resolved paths)."""
    folder = data_dir() / "uploads"
    for f in folder.glob("*") if folder.is_dir() else []:
        if f.is_file() and str(f.resolve()) not in used:
            f.unlink(missing_ok=True)


def item_caps() -> dict:
    """The annotation store's caps for ``add_items``/``import_rows``/``import_file`` keywords: on a
    public app ``MAX_ITEMS_TOTAL`` items in all and ``MAX_ITEMS_PER_OWNER`` in a visitor's queue."""
    from analysis.annotations import MAX_ITEMS_PER_OWNER, MAX_ITEMS_TOTAL

    from .common import is_public

    return {"max_total": MAX_ITEMS_TOTAL, "max_per_owner": MAX_ITEMS_PER_OWNER} if is_public() else {}


def served_paths() -> list[str]:
    """The folders Gradio may serve files from: the exports only."""
    return [str(exports_dir().resolve())]
