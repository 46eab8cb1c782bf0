"""The rationale's measured effect on one text: how far its rationale moved its embedding, as
1 - cos(embedding with the rationale, embedding of the text alone through the same prompt and
pooling; no generation). 0: the rationale changed nothing; the larger, the more the embedding is
the rationale's. The Explore table, the Map's colour and filter and the annotation items read it
from here."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from grace.model.settings import EncodeSettings


def measurable(settings: EncodeSettings) -> bool:
    """Whether the settings embed a rationale that can be taken away: not without rationales, not
    MiniLM (it writes none), not "rationale-mean" pooling (an embedding of the rationale alone has
    nothing left without it)."""
    return bool(settings.rationale) and settings.model != "minilm" and settings.pooling != "rationale-mean"


def text_only(encoder, settings: EncodeSettings, texts: Sequence[str]) -> np.ndarray:
    """[N, D] unit embeddings of ``texts`` with an empty rationale (the ablation path's "text
    only"): one forward pass each, nothing generated."""
    return np.asarray(encoder.encode(list(texts), settings, rationales=[""] * len(texts)), dtype=np.float64)


def rationale_shift(with_rationale: np.ndarray, without: np.ndarray) -> np.ndarray:
    """1 - cos per row between the embeddings with and without the rationale."""
    a = np.asarray(with_rationale, dtype=np.float64)
    b = np.asarray(without, dtype=np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)).clip(min=1e-12)
    return 1.0 - cos


def measure(encoder, settings: EncodeSettings, texts: Sequence[str], results
            ) -> tuple[np.ndarray, np.ndarray] | None:
    """For ``texts`` encoded as ``results`` (``EncodeResult``s of ``settings``): each one's rationale
    shift and the text-only embeddings it was measured against; None where it is not ``measurable``."""
    if not measurable(settings):
        return None
    alone = text_only(encoder, settings, texts)
    return rationale_shift(np.stack([r.embedding for r in results]), alone), alone
