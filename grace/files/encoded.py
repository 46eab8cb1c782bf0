"""Reading what ``grace encode`` wrote: one JSON object per line with text, rationale, embedding
and (with rationales) shift. The Map draws such a file without running the model."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .textio import InputError

MAX_ROWS = 100_000


@dataclass
class EncodedFile:
    texts: list[str]
    rationales: list[str]
    embeddings: np.ndarray  # [N, D] float32, unit rows
    shift: np.ndarray | None  # [N], when every row has one


def read_encoded(path: str | Path, max_rows: int = MAX_ROWS) -> EncodedFile:
    """The rows of a ``grace encode`` output; a bad line is refused with its number and reason, a
    file longer than ``max_rows`` rows with its count."""
    p = Path(path)
    texts, rationales, vectors, shifts = [], [], [], []
    dim = None
    try:
        f = open(p, "rb")
    except OSError:
        raise InputError(f"{p.name}: no such file.") from None
    with f:
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            if len(texts) >= max_rows:
                raise InputError(f"{p.name} has more than {max_rows:,} rows; the Map draws at most {max_rows:,}.")
            try:
                row = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise InputError(f"{p.name}, line {n}: not a JSON object (is this a grace encode output?).") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str) or "embedding" not in row:
                raise InputError(f"{p.name}, line {n}: needs 'text' and 'embedding' (the fields grace encode "
                                 "writes).")
            e = row["embedding"]
            try:  # float32 at once: 100,000 rows of Python floats would take gigabytes
                v = np.asarray(e, dtype=np.float32) if isinstance(e, list) else None
            except (TypeError, ValueError):
                v = None
            if v is None or v.ndim != 1 or not v.size or v.dtype != np.float32:
                raise InputError(f"{p.name}, line {n}: 'embedding' must be a list of numbers.")
            if dim is None:
                dim = v.size
            elif v.size != dim:
                raise InputError(f"{p.name}, line {n}: an embedding of {v.size} numbers after ones of {dim}.")
            texts.append(row["text"])
            rationales.append(row.get("rationale") if isinstance(row.get("rationale"), str) else "")
            vectors.append(v)
            s = row.get("shift")
            ok = isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s)
            shifts.append(float(s) if ok else None)
    if not texts:
        raise InputError(f"{p.name}: the file is empty.")
    emb = np.stack(vectors)
    if not np.isfinite(emb).all():
        raise InputError(f"{p.name}: an embedding holds a non-finite number.")
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if (norms == 0).any():
        raise InputError(f"{p.name}, row {int(np.flatnonzero(norms[:, 0] == 0)[0]) + 1}: an all-zero embedding.")
    shift = np.asarray(shifts, dtype=np.float64) if all(s is not None for s in shifts) else None
    return EncodedFile(texts, rationales, emb / norms, shift)
