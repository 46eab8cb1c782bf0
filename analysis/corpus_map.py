"""The Map view's computation: a corpus embedded once per setting (cancellable between batches),
then projected, searched and queried for neighbours without touching the model again.

The embeddings of the last few corpora are kept in memory, keyed by everything that decides them
(the encoder settings, the adapter's weights and the texts), so switching PCA / UMAP, colouring by
another column or clicking points costs no model call.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from grace.files.cancel import Cancelled
from grace.model.settings import EncodeSettings

from .effect import measurable, measure
from .projection import Projection, project

BATCH = 8  # texts per model call: progress moves and a Cancel takes effect within one batch
_CACHE: OrderedDict[str, "Embedded"] = OrderedDict()
_CACHE_SIZE = 6
_LOCK = threading.Lock()


@dataclass
class Embedded:
    texts: list[str]
    rationales: list[str]
    embeddings: np.ndarray  # [N, D], unit rows
    shift: np.ndarray | None = None  # [N] how far each rationale moved its text (analysis.effect); None: no rationales


@dataclass
class Panel:
    title: str
    data: Embedded
    projections: dict[str, Projection] = field(default_factory=dict)

    def coords(self, method: str) -> np.ndarray:
        """2-d coordinates by ``method`` ("umap" or "pca"), computed once per panel; "umap" on too
        few texts falls back to PCA with a note. UMAP coordinates are also kept on disk under the
        embeddings' hash (minutes for 100,000 texts; a second map of the same file takes none)."""
        if method not in self.projections:
            self.projections[method] = _cached_umap(self.data.embeddings) if method == "umap" else \
                project(self.data.embeddings, method=method)
        return self.projections[method].coords


UMAP_CACHE_FILES = 20


def _cached_umap(embeddings: np.ndarray) -> Projection:
    """``project(method="auto")`` (UMAP, or PCA for few texts), its UMAP coordinates read from and
    written to the data folder's cache (the newest UMAP_CACHE_FILES kept)."""
    from grace.files.paths import data_dir

    folder = data_dir() / "cache" / "umap"
    key = hashlib.sha256(np.ascontiguousarray(embeddings, dtype=np.float32).tobytes()).hexdigest()[:32]
    path = folder / f"{key}.npy"
    try:
        coords = np.load(path)
        if coords.shape == (embeddings.shape[0], 2):
            return Projection(coords=coords, method="umap")
    except (OSError, ValueError):
        pass
    proj = project(embeddings, method="auto")
    if proj.method == "umap":
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{threading.get_ident()}.npy"
        np.save(tmp, proj.coords)
        tmp.replace(path)
        for old in sorted(folder.glob("*.npy"), key=lambda f: f.stat().st_mtime)[:-UMAP_CACHE_FILES]:
            old.unlink(missing_ok=True)
    return proj


def embed_corpus(encoder, settings: EncodeSettings, texts: list[str], *,
                 on_batch: Callable[[int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Embedded:
    """Embeddings (and rationales) of ``texts``, from the cache when the same settings, adapter
    weights and texts were embedded before. ``should_stop`` is asked before every batch of
    ``BATCH`` texts; when it answers True, ``Cancelled`` is raised and nothing is cached."""
    key = settings.texts_fingerprint(texts)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            if on_batch:
                on_batch(len(texts))
            return _CACHE[key]
    rationales, vectors, shifts = [], [], []
    for start in range(0, len(texts), BATCH):
        if should_stop and should_stop():
            raise Cancelled()
        batch = texts[start:start + BATCH]
        results = encoder.encode(batch, settings, return_details=True)
        rationales += [r.rationale for r in results]
        vectors += [r.embedding for r in results]
        measured = measure(encoder, settings, batch, results)  # the same texts without their rationales
        if measured is not None:
            shifts += measured[0].tolist()
        if on_batch:
            on_batch(len(rationales))
    out = Embedded(texts=list(texts), rationales=rationales, embeddings=np.stack(vectors).astype(np.float32),
                   shift=np.asarray(shifts) if measurable(settings) else None)
    with _LOCK:
        _CACHE[key] = out
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return out


def neighbours(embeddings: np.ndarray, index: int, k: int = 5) -> list[tuple[int, float]]:
    """The ``k`` nearest items to ``index`` by cosine (rows are unit vectors), nearest first."""
    sims = embeddings @ embeddings[index]
    sims[index] = -np.inf
    order = np.argsort(-sims, kind="stable")[:k]
    return [(int(j), float(sims[j])) for j in order]


def align(reference: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """``coords`` rotated, reflected, scaled and shifted onto ``reference`` (orthogonal
    Procrustes), so the same item's position in two maps can be compared on one plot."""
    from scipy.linalg import orthogonal_procrustes

    ref_c, x_c = reference - reference.mean(0), coords - coords.mean(0)
    r, _ = orthogonal_procrustes(x_c, ref_c)
    scale = np.linalg.norm(ref_c) / max(np.linalg.norm(x_c), 1e-12)
    return x_c @ r * scale + reference.mean(0)


def search(texts: list[str], query: str) -> list[int]:
    """Indices of the texts that contain ``query`` (case-insensitive); none for an empty query."""
    q = (query or "").strip().lower()
    return [i for i, t in enumerate(texts) if q and q in t.lower()]
