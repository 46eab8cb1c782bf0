"""2-d maps of embeddings: UMAP (cosine) when there are enough points, PCA otherwise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_UMAP_POINTS = 10


@dataclass
class Projection:
    coords: np.ndarray  # [N, 2]
    method: str
    note: str = ""


def project(embeddings: np.ndarray, *, method: str = "auto", seed: int = 0, n_neighbors: int = 15) -> Projection:
    """UMAP with the cosine metric (deterministic for a seed); PCA with a note for few points."""
    x = np.asarray(embeddings, dtype=np.float32)
    n = x.shape[0]
    if n < 2:
        raise ValueError("A map needs at least 2 texts.")
    if method == "umap" or (method == "auto" and n >= MIN_UMAP_POINTS):
        if n < MIN_UMAP_POINTS:
            raise ValueError(f"UMAP needs at least {MIN_UMAP_POINTS} texts; use PCA for {n}.")
        import umap

        reducer = umap.UMAP(n_neighbors=min(n_neighbors, n - 1), metric="cosine", random_state=seed,
                            n_components=2, init="random" if n < 30 else "spectral")
        return Projection(coords=reducer.fit_transform(x).astype(np.float32), method="umap")
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    note = f"PCA: {n} texts are too few for UMAP (it needs {MIN_UMAP_POINTS})." if method == "auto" else ""
    return Projection(coords=coords.astype(np.float32), method="pca", note=note)
