"""An "Open in Embedding Atlas" export of a map: a Parquet table in the layout the
``embedding-atlas`` command reads (text, rationale, precomputed x and y, and nearest neighbours
as ``{"ids": [...], "distances": [...]}`` with zero-based row ids and cosine distances), optionally
a labels table (x, y, text: names drawn at given places), and the command that opens them. For maps beyond what a browser page draws well: Embedding Atlas renders millions of points."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

K = 15  # neighbours per row (Embedding Atlas's own default for its UMAP graph)
BLOCK = 2048  # rows per exact-neighbour block: a [BLOCK, N] similarity matrix at a time


def nearest(embeddings: np.ndarray, k: int = K) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine neighbours of every row (unit rows), each row's own id first: ids [N, k] and
    distances 1 - cos [N, k], nearest first, computed in blocks so memory stays O(BLOCK x N)."""
    x = np.asarray(embeddings, dtype=np.float32)
    n = x.shape[0]
    k = min(k, n)
    ids = np.empty((n, k), dtype=np.int64)
    dist = np.empty((n, k), dtype=np.float32)
    for a in range(0, n, BLOCK):
        sims = x[a:a + BLOCK] @ x.T
        rows = np.arange(sims.shape[0])
        sims[rows, a + rows] = np.inf  # itself first, whatever duplicates it has
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, part, 1), axis=1, kind="stable")
        best = np.take_along_axis(part, order, 1)
        ids[a:a + BLOCK] = best
        d = 1.0 - np.take_along_axis(sims, best, 1)
        d[:, 0] = 0.0  # the row itself
        dist[a:a + BLOCK] = np.clip(d, 0.0, 2.0)
    return ids, dist


def write_atlas(path: str | Path, *, texts: Sequence[str], rationales: Sequence[str], coords: np.ndarray,
                embeddings: np.ndarray, columns: dict[str, Sequence] | None = None,
                labels: Sequence[tuple[float, float, str]] = (), k: int = K) -> tuple[Path, Path | None, str]:
    """``path`` (.parquet) and, with ``labels``, ``path``'s ``-labels.parquet`` beside it; returns
    both and the command that opens them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    ids, dist = nearest(embeddings, k)
    offsets = pa.array(np.arange(0, ids.size + 1, ids.shape[1], dtype=np.int32))
    neighbours = pa.StructArray.from_arrays(
        [pa.ListArray.from_arrays(offsets, pa.array(ids.ravel())),
         pa.ListArray.from_arrays(offsets, pa.array(dist.ravel()))], names=["ids", "distances"])
    table = {"text": pa.array(list(texts), pa.string()), "rationale": pa.array(list(rationales), pa.string()),
             "x": pa.array(coords[:, 0].astype(np.float32)), "y": pa.array(coords[:, 1].astype(np.float32)),
             "neighbors": neighbours}
    for name, values in (columns or {}).items():
        if name not in table:
            table[name] = pa.array(list(values))
    pq.write_table(pa.table(table), path)
    label_path = None
    command = f"embedding-atlas {path.name} --text text --x x --y y --neighbors neighbors"
    if labels:
        label_path = path.with_name(path.stem + "-labels.parquet")
        pq.write_table(pa.table({"x": [float(x) for x, _, _ in labels], "y": [float(y) for _, y, _ in labels],
                                 "text": [t for _, _, t in labels]}), label_path)
        command += f" --labels {label_path.name}"
    return path, label_path, command
