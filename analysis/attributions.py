"""Exact per-token contributions to a cosine similarity.

With pooled vectors h_a = sum_t s_t (s_t: token t's share of the pooled vector),
cos(h_a, h_b) = sum_t <s_t, h_b> / (||h_a|| ||h_b||), so c_t = <s_t, h_b> / (||h_a|| ||h_b||)
and the c_t sum to the cosine exactly. The share depends on the pooling:
mean: s_t = E_t / |M| (docs/internals.md, "Exact token contributions"); last: s_t = E_t for the last
pooled token; max: s_t keeps the dimensions where token t holds the maximum.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from grace.model.embedding import EncodeResult


def token_shares(result: EncodeResult) -> np.ndarray:
    """[T, d] shares of each text/rationale token in the un-normalised pooled vector (float64)."""
    if result.token_states is None or result.pooled_mask is None:
        raise ValueError("Contributions need encode(..., return_details=True).")
    states = result.token_states.astype(np.float64)
    mask = result.pooled_mask.astype(bool)
    shares = np.zeros_like(states)
    if result.pooling == "max":
        masked = np.where(mask[:, None], states, -np.inf)
        winner = masked.argmax(axis=0)  # for each dimension, the token that holds the max
        shares[winner, np.arange(states.shape[1])] = states[winner, np.arange(states.shape[1])]
    else:  # mean, text-mean, rationale-mean, last (M holds one position)
        shares[mask] = states[mask] / mask.sum()
    return shares


@dataclass
class Contributions:
    """Per-token contributions of both sides of a pair to their cosine."""

    cosine: float
    a_tokens: list[str]
    a_segments: list[str]
    a_values: np.ndarray
    b_tokens: list[str]
    b_segments: list[str]
    b_values: np.ndarray

    def totals(self, side: str = "b") -> dict[str, float]:
        """Sum of contributions by segment (text vs rationale) for side ``a`` or ``b``."""
        segs, vals = (self.a_segments, self.a_values) if side == "a" else (self.b_segments, self.b_values)
        out = {"text": 0.0, "rationale": 0.0}
        for s, v in zip(segs, vals):
            out[s] = out.get(s, 0.0) + float(v)
        return out

    def pairs(self, side: str = "b") -> list[list]:
        toks, vals = (self.a_tokens, self.a_values) if side == "a" else (self.b_tokens, self.b_values)
        return [[t, float(v)] for t, v in zip(toks, vals)]


def _side(result: EncodeResult, other_pooled: np.ndarray, norm_self: float, norm_other: float) -> np.ndarray:
    return token_shares(result) @ other_pooled / (norm_self * norm_other)


def contributions(a: EncodeResult, b: EncodeResult) -> Contributions:
    """Contribution of every token of ``a`` and of ``b`` to cos(h_a, h_b); each side sums to it."""
    ha = token_shares(a).sum(axis=0)
    hb = token_shares(b).sum(axis=0)
    na, nb = float(np.linalg.norm(ha)), float(np.linalg.norm(hb))
    cosine = float(ha @ hb / (na * nb))
    return Contributions(
        cosine=cosine,
        a_tokens=a.tokens, a_segments=a.segments, a_values=_side(a, hb, na, nb),
        b_tokens=b.tokens, b_segments=b.segments, b_values=_side(b, ha, nb, na),
    )


def rank_documents(query: EncodeResult, docs: list[EncodeResult]) -> dict:
    """Documents ranked by cosine to the query, each with its 1-based input number (``input``), both
    sides' token contributions and the document side's totals by segment (``segments``; the
    query's in ``query_segments``)."""
    rows = []
    for i, d in enumerate(docs, 1):
        c = contributions(query, d)
        rows.append({"input": i, "text": d.text, "rationale": d.rationale, "cosine": c.cosine,
                     "contributions": {"query": c.pairs("a"), "doc": c.pairs("b")},
                     "segments": c.totals("b"), "query_segments": c.totals("a")})
    rows.sort(key=lambda r: -r["cosine"])
    return {"query": {"text": query.text, "rationale": query.rationale}, "docs": rows}
