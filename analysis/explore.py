"""The Explore view's computation: one query against documents under three encoders, and
what-if re-scoring with hand-edited rationales (no generation)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from grace.model.embedding import EncodeResult
from grace.model.settings import EncodeSettings

from .attributions import Contributions, contributions
from .effect import measure


SEEDS = 3  # sampled rationales: the GRACE cosine is also measured with this many seeds


@dataclass
class Comparison:
    query: EncodeResult
    docs: list[EncodeResult]
    grace: list[float]
    direct: list[float]
    minilm: list[float] | None
    base: list[float] | None = None  # GRACE without the adapter, when one is chosen
    spread: list[float] | None = None  # std of the GRACE cosine over SEEDS seeds, when sampled
    shift: list[float] | None = None  # each document's rationale shift (analysis.effect), with rationales
    without: list[float] | None = None  # cos(query, document without its rationale), with rationales
    query_shift: float | None = None

    def order(self) -> list[int]:
        """Document indices ranked by the GRACE cosine."""
        return sorted(range(len(self.docs)), key=lambda i: -self.grace[i])

    def rows(self, max_chars: int = 300) -> list[list]:
        """Ranked rows (``HEADERS``): rank, input number, document (cut to ``max_chars`` for display),
        the GRACE cosine and its spread over seeds, GRACE without the adapter, direct forward,
        MiniLM, the rationale's exact share of the GRACE cosine, how far the rationale moved the
        document's embedding and the cosine without it (``analysis.effect``), the rationale."""
        def r4(values, i):
            return None if values is None else round(values[i], 4)

        out = []
        for rank, i in enumerate(self.order(), 1):
            c = contributions(self.query, self.docs[i])
            seg = c.totals("b")
            text = self.docs[i].text
            out.append([rank, i + 1, text if len(text) <= max_chars else text[:max_chars - 1] + "…",
                        r4(self.grace, i), r4(self.spread, i), r4(self.base, i), r4(self.direct, i),
                        r4(self.minilm, i), round(seg["rationale"], 4), r4(self.shift, i), r4(self.without, i),
                        self.docs[i].rationale])
        return out


HEADERS = ["rank", "#", "document", "GRACE cosine", f"± over {SEEDS} seeds", "GRACE, no adapter",
           "direct forward", "MiniLM", "from rationale", "moved by rationale", "without rationale", "rationale"]


def _cosines(encoder, texts: list[str], settings: EncodeSettings) -> list[float]:
    e = encoder.encode(texts, settings)
    return [float(e[0] @ v) for v in e[1:]]


def compare_documents(encoder, query: str, docs: list[str], *, minilm=None, settings: EncodeSettings | None = None,
                      base_encoder=None, on_token: Callable[[int, list[int]], None] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> Comparison:
    """GRACE cosine (with ``settings``) beside the direct forward pass, MiniLM and, when
    ``base_encoder`` is given, GRACE without the adapter; with sampled rationales also the spread
    of the GRACE cosine over ``SEEDS`` seeds (the shown rationales are the first seed's).
    ``should_stop`` is asked between the passes (``on_token`` may raise to stop inside one);
    when it says yes, ``Cancelled`` is raised."""
    from grace.files.cancel import Cancelled

    def check() -> None:
        if should_stop is not None and should_stop():
            raise Cancelled("stopped")

    s = settings or EncodeSettings()
    texts = [query] + docs
    results = encoder.encode(texts, s, return_details=True, on_token=on_token)
    q, ds = results[0], results[1:]
    grace = [float(q.embedding @ d.embedding) for d in ds]
    spread = None
    if s.rationale and s.sample:
        first = s.seed or 0
        runs = [grace]
        for k in range(1, SEEDS):
            check()
            runs.append(_cosines(encoder, texts, s.with_(seed=first + k)))
        spread = [float(np.std([r[i] for r in runs])) for i in range(len(docs))]
    check()
    shift = without = query_shift = None
    if s.rationale:
        direct = _cosines(encoder, texts, s.direct())
        measured = measure(encoder, s, texts, results)  # each text with an empty rationale: no generation
        if measured is not None:
            moved, alone = measured
            query_shift, shift = float(moved[0]), [float(x) for x in moved[1:]]
            without = [float(q.embedding @ a) for a in alone[1:]]  # the query keeps its rationale
    else:
        direct = grace[:]
    check()
    base = _cosines(base_encoder, texts, s.with_(adapter=None)) if base_encoder is not None else None
    mini = _cosines(minilm, texts, None) if minilm is not None else None
    return Comparison(query=q, docs=ds, grace=grace, direct=direct, minilm=mini, base=base, spread=spread,
                      shift=shift, without=without, query_shift=query_shift)


@dataclass
class WhatIf:
    before: float
    after: float
    contributions: Contributions
    query: EncodeResult
    doc: EncodeResult


def rescore(encoder, query: EncodeResult, doc: EncodeResult, query_rationale: str, doc_rationale: str,
            settings: EncodeSettings | None = None) -> WhatIf:
    """Embed (text, edited rationale) pairs with ``settings``' prompt and pooling (the encoder's own
    settings when omitted) through the same pooling path; no generation."""
    before = float(np.dot(query.embedding, doc.embedding))
    q2, d2 = encoder.encode([query.text, doc.text], settings, rationales=[query_rationale, doc_rationale],
                            return_details=True)
    c = contributions(q2, d2)
    return WhatIf(before=before, after=c.cosine, contributions=c, query=q2, doc=d2)
