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


@dataclass
class Panel:
    title: str
    data: Embedded
    projections: dict[str, Projection] = field(default_factory=dict)

    def coords(self, method: str) -> np.ndarray:
        """2-d coordinates by ``method`` ("umap" or "pca"), computed once per panel; "umap" on too
        few texts falls back to PCA with a note."""
        if method not in self.projections:
            self.projections[method] = project(self.data.embeddings, method="auto" if method == "umap" else method)
        return self.projections[method].coords


def _key(settings: EncodeSettings, texts: list[str]) -> str:
    h = hashlib.sha256(settings.fingerprint().encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()


def embed_corpus(encoder, settings: EncodeSettings, texts: list[str], *,
                 on_batch: Callable[[int], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Embedded:
    """Embeddings (and rationales) of ``texts``, from the cache when the same settings, adapter
    weights and texts were embedded before. ``should_stop`` is asked before every batch of
    ``BATCH`` texts; when it answers True, ``Cancelled`` is raised and nothing is cached."""
    key = _key(settings, texts)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            if on_batch:
                on_batch(len(texts))
            return _CACHE[key]
    rationales, vectors = [], []
    for start in range(0, len(texts), BATCH):
        if should_stop and should_stop():
            raise Cancelled()
        results = encoder.encode(texts[start:start + BATCH], settings, return_details=True)
        rationales += [r.rationale for r in results]
        vectors += [r.embedding for r in results]
        if on_batch:
            on_batch(len(rationales))
    out = Embedded(texts=list(texts), rationales=rationales, embeddings=np.stack(vectors).astype(np.float32))
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
