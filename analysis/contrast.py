"""Attributions that separate documents: "why A over B", centred cosines, rationale ablation.

All three are exact decompositions or plain re-scorings over ``EncodeResult``s (LIT's
interpreters are the model for this: functions over model outputs, the UI only shows them).

- ``explain_pair``: cos(q, A) - cos(q, B) split over the query's tokens,
  c_t = <s_t, e_A - e_B> / ||h_q||  (s_t: token t's share of the query's pooled vector h_q,
  e = h / ||h||), which sum to the difference exactly; A's and B's tokens carry their own cosines.
- ``centred_contributions``: the cosine after subtracting a reference embedding m (the mean of
  the compared documents, or of a corpus) from both normalised embeddings, u = e - m. The
  reference is spread over each side's pooled tokens by their pooling weight w_t (sum 1), so
  c_t = <s_t / ||h|| - w_t m, u_other> / (||u|| ||u_other||) and the c_t sum to cos(u_a, u_b).
- ``ablate_rationale``: the cosine with each rationale piece removed, re-embedded from the text
  and the edited rationale (no generation; the what-if editor's path), plus text-only and
  rationale-only scores.
"""

from __future__ import annotations

import re

import numpy as np

from grace.model.embedding import EncodeResult

from .attributions import Contributions, contributions, token_shares


def _unit(result: EncodeResult) -> tuple[np.ndarray, np.ndarray, float]:
    shares = token_shares(result)
    h = shares.sum(axis=0)
    n = float(np.linalg.norm(h))
    return shares, h / n, n


def explain_pair(query: EncodeResult, a: EncodeResult, b: EncodeResult) -> dict:
    """Why ``a`` ranks above (or below) ``b`` for ``query``: ``difference`` = cos(q, a) - cos(q, b);
    ``contributions.query`` sums to it; ``contributions.a`` / ``.b`` sum to cos(q, a) / cos(q, b)."""
    shares_q, _, nq = _unit(query)
    _, ea, _ = _unit(a)
    _, eb, _ = _unit(b)
    q_vals = shares_q @ (ea - eb) / nq
    ca, cb = contributions(query, a), contributions(query, b)
    return {"difference": ca.cosine - cb.cosine, "cosine_a": ca.cosine, "cosine_b": cb.cosine,
            "contributions": {"query": [[t, float(v)] for t, v in zip(query.tokens, q_vals)],
                              "a": ca.pairs("b"), "b": cb.pairs("b")},
            "query_segments": _totals(query.segments, q_vals)}


def _totals(segments: list[str], values) -> dict[str, float]:
    out = {"text": 0.0, "rationale": 0.0}
    for s, v in zip(segments, values):
        out[s] = out.get(s, 0.0) + float(v)
    return out


def pooling_weights(result: EncodeResult) -> np.ndarray:
    """Each token's weight in its pooled vector (1/|M| over the pooled positions; sums to 1)."""
    mask = np.asarray(result.pooled_mask, dtype=bool)
    return mask / mask.sum()


def reference_embedding(results: list[EncodeResult]) -> np.ndarray:
    """The mean of the normalised embeddings (float64): what every compared text shares."""
    return np.mean([_unit(r)[1] for r in results], axis=0)


def centred_contributions(a: EncodeResult, b: EncodeResult, reference: np.ndarray) -> Contributions:
    """Contributions of both sides to cos(e_a - m, e_b - m); each side sums to it exactly."""
    m = np.asarray(reference, dtype=np.float64)
    sa, ea, na = _unit(a)
    sb, eb, nb = _unit(b)
    ua, ub = ea - m, eb - m
    da, db = float(np.linalg.norm(ua)), float(np.linalg.norm(ub))
    if da < 1e-12 or db < 1e-12:
        raise ValueError("A text equals the reference embedding: nothing is left after centring.")
    pa = sa / na - pooling_weights(a)[:, None] * m  # rows sum to u_a
    pb = sb / nb - pooling_weights(b)[:, None] * m
    return Contributions(cosine=float(ua @ ub / (da * db)),
                         a_tokens=a.tokens, a_segments=a.segments, a_values=pa @ ub / (da * db),
                         b_tokens=b.tokens, b_segments=b.segments, b_values=pb @ ua / (da * db))


_PIECE = re.compile(r"[^\n.;:!?,]+[.;:!?,]?")


def rationale_pieces(rationale: str) -> list[tuple[int, int]]:
    """(start, end) spans of the rationale's sentences, lines and list items (the keywords of a
    keyword list), with their closing punctuation."""
    return [m.span() for m in _PIECE.finditer(rationale) if m.group(0).strip(" .;:!?,\n")]


def ablate_rationale(encoder, settings, query: EncodeResult, doc: EncodeResult) -> dict:
    """The change of cos(query, doc) when each piece of the doc's rationale is removed, sorted by
    how much the cosine falls; and the cosine with the text only and with the rationale only.
    The query keeps its rationale; every re-score embeds (text, edited rationale) without generating."""
    r = doc.rationale
    spans = rationale_pieces(r)
    edited = [r[:a] + r[b:] for a, b in spans]
    # the unedited rationale goes through the same re-tokenisation, so "change" compares like with like
    texts = [doc.text] * (len(edited) + 2)
    res = encoder.encode(texts, settings, rationales=[doc.rationale] + edited + [""], return_details=True)
    base = float(np.dot(query.embedding, res[0].embedding))
    res = res[1:]
    rows = [{"removed": r[a:b].strip(), "span": [a, b], "cosine": float(np.dot(query.embedding, e.embedding)),
             "change": float(np.dot(query.embedding, e.embedding)) - base} for (a, b), e in zip(spans, res)]
    rows.sort(key=lambda r: r["change"])
    out = {"cosine": base, "pieces": rows, "text_only": float(np.dot(query.embedding, res[-1].embedding))}
    if doc.rationale.strip():
        only = encoder.encode([doc.text], settings.with_(pooling="rationale-mean"), rationales=[doc.rationale])
        out["rationale_only"] = float(np.dot(query.embedding, only[0]))
    return out
