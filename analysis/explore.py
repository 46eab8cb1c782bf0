"""The Explore view's computation: one query against documents under three encoders, and
what-if re-scoring with hand-edited rationales (no generation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from grace.model.embedding import EncodeResult
from grace.model.settings import EncodeSettings

from .attributions import Contributions, contributions


@dataclass
class Comparison:
    query: EncodeResult
    docs: list[EncodeResult]
    grace: list[float]
    direct: list[float]
    minilm: list[float] | None

    def order(self) -> list[int]:
        """Document indices ranked by the GRACE cosine."""
        return sorted(range(len(self.docs)), key=lambda i: -self.grace[i])

    def rows(self, max_chars: int = 300) -> list[list]:
        """Ranked rows: rank, input number, document (cut to ``max_chars`` for display), the three
        cosines, the rationale's exact share of the GRACE cosine, the rationale."""
        out = []
        for rank, i in enumerate(self.order(), 1):
            c = contributions(self.query, self.docs[i])
            seg = c.totals("b")
            text = self.docs[i].text
            out.append([rank, i + 1, text if len(text) <= max_chars else text[:max_chars - 1] + "…",
                        round(self.grace[i], 4), round(self.direct[i], 4),
                        None if self.minilm is None else round(self.minilm[i], 4),
                        round(seg["rationale"], 4), self.docs[i].rationale])
        return out


def compare_documents(encoder, query: str, docs: list[str], *, minilm=None, settings: EncodeSettings | None = None,
                      on_token: Callable[[int, list[int]], None] | None = None) -> Comparison:
    """GRACE cosine (with ``settings``), direct forward and MiniLM, side by side."""
    s = settings or EncodeSettings()
    results = encoder.encode([query] + docs, s, return_details=True, on_token=on_token)
    q, ds = results[0], results[1:]
    grace = [float(q.embedding @ d.embedding) for d in ds]
    if s.rationale:
        direct = s.with_(rationale=False, pooling="text-mean" if s.pooling == "rationale-mean" else s.pooling)
        e = encoder.encode([query] + docs, direct)
        direct = [float(e[0] @ v) for v in e[1:]]
    else:
        direct = grace[:]
    mini = None
    if minilm is not None:
        m = minilm.encode([query] + docs)
        mini = [float(m[0] @ v) for v in m[1:]]
    return Comparison(query=q, docs=ds, grace=grace, direct=direct, minilm=mini)


@dataclass
class WhatIf:
    before: float
    after: float
    contributions: Contributions
    query: EncodeResult
    doc: EncodeResult


def rescore(encoder, query: EncodeResult, doc: EncodeResult, query_rationale: str, doc_rationale: str, *,
            pooling: str = "mean", layer: int = -1) -> WhatIf:
    """Embed (text, edited rationale) pairs through the same pooling path; no generation."""
    before = float(np.dot(query.embedding, doc.embedding))
    q2, d2 = encoder.encode([query.text, doc.text], rationales=[query_rationale, doc_rationale],
                            return_details=True, pooling=pooling, layer=layer)
    c = contributions(q2, d2)
    return WhatIf(before=before, after=c.cosine, contributions=c, query=q2, doc=d2)
