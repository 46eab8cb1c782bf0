"""Agreement and correlation figures for rationale ratings.

- Krippendorff's alpha with the ordinal metric over items rated by 2+ annotators:
  alpha = 1 - (n - 1) * sum_ck o_ck d2_ck / sum_ck n_c n_k d2_ck, with the coincidence matrix
  o_ck = sum_u sum_{i != j} [v_ui = c][v_uj = k] / (m_u - 1), n_c = sum_k o_ck, and the ordinal
  distance d2_ck = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2.
- Cohen's weighted kappa for two annotators: kappa = 1 - sum w_ij O_ij / sum w_ij E_ij with
  linear (|i-j|/(K-1)) or quadratic ((i-j)^2/(K-1)^2) weights.
- Spearman's rho between a rating dimension and the similarity / reward stored with the item.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .annotations import DIMENSIONS

SCALE = (1, 2, 3, 4, 5)


def krippendorff_alpha_ordinal(units: list[list[int]], values: tuple[int, ...] = SCALE) -> float | None:
    """Alpha over units (each a list of the values it received); units with < 2 values are skipped."""
    index = {v: i for i, v in enumerate(values)}
    o = np.zeros((len(values), len(values)))
    for unit in units:
        m = len(unit)
        if m < 2:
            continue
        for i, a in enumerate(unit):
            for j, b in enumerate(unit):
                if i != j:
                    o[index[a], index[b]] += 1.0 / (m - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n <= 1:
        return None
    d2 = np.zeros_like(o)
    for c in range(len(values)):
        for k in range(len(values)):
            lo, hi = min(c, k), max(c, k)
            d2[c, k] = (n_c[lo:hi + 1].sum() - (n_c[c] + n_c[k]) / 2.0) ** 2
    expected = (np.outer(n_c, n_c) * d2).sum()
    if expected == 0:
        return None  # every value the same: agreement is undefined
    return float(1.0 - (n - 1) * (o * d2).sum() / expected)


def cohen_weighted_kappa(a: list[int], b: list[int], weights: str = "quadratic",
                         values: tuple[int, ...] = SCALE) -> float | None:
    """Weighted kappa between two annotators' ratings of the same items."""
    if len(a) != len(b) or not a:
        return None
    k = len(values)
    index = {v: i for i, v in enumerate(values)}
    obs = np.zeros((k, k))
    for x, y in zip(a, b):
        obs[index[x], index[y]] += 1
    obs /= obs.sum()
    exp = np.outer(obs.sum(axis=1), obs.sum(axis=0))
    i, j = np.indices((k, k))
    w = np.abs(i - j) / (k - 1) if weights == "linear" else (i - j) ** 2 / (k - 1) ** 2
    denom = (w * exp).sum()
    if denom == 0:
        return None
    return float(1.0 - (w * obs).sum() / denom)


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho (average ranks for ties); None with fewer than 3 pairs or a constant side."""
    if len(x) < 3:
        return None
    from scipy.stats import spearmanr

    if len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y).statistic)


def summarise(ratings: list[dict]) -> dict:
    """Per-dimension mean and distribution, alpha per dimension, hallucination rate,
    correlation with similarity and reward, mean rating by training step."""
    out: dict = {"n_ratings": len(ratings), "n_items": len({r["item_id"] for r in ratings}),
                 "annotators": sorted({r["annotator"] for r in ratings}), "dimensions": {}}
    if not ratings:
        return out
    by_item: dict[int, list[dict]] = defaultdict(list)
    for r in ratings:
        by_item[r["item_id"]].append(r)
    for d in DIMENSIONS:
        vals = [r[d] for r in ratings]
        per_item_mean = {i: float(np.mean([r[d] for r in rs])) for i, rs in by_item.items()}
        first = {i: rs[0] for i, rs in by_item.items()}
        sims = [(per_item_mean[i], first[i]["similarity"]) for i in by_item if first[i]["similarity"] is not None]
        rews = [(per_item_mean[i], first[i]["reward"]) for i in by_item if first[i]["reward"] is not None]
        steps: dict[int, list[int]] = defaultdict(list)
        for r in ratings:
            if r.get("step") is not None:
                steps[r["step"]].append(r[d])
        out["dimensions"][d] = {
            "mean": float(np.mean(vals)),
            "distribution": {v: vals.count(v) for v in SCALE},
            "alpha": krippendorff_alpha_ordinal([[r[d] for r in rs] for rs in by_item.values()]),
            "spearman_similarity": spearman([a for a, _ in sims], [b for _, b in sims]),
            "spearman_reward": spearman([a for a, _ in rews], [b for _, b in rews]),
            "by_step": {s: float(np.mean(v)) for s, v in sorted(steps.items())},
        }
    out["hallucination_rate"] = float(np.mean([bool(r["hallucination"]) for r in ratings]))
    return out


def pair_kappa(ratings: list[dict], a: str, b: str, dimension: str, weights: str = "quadratic") -> float | None:
    """Weighted kappa of two annotators on the items both rated."""
    ra = {r["item_id"]: r[dimension] for r in ratings if r["annotator"] == a}
    rb = {r["item_id"]: r[dimension] for r in ratings if r["annotator"] == b}
    common = sorted(set(ra) & set(rb))
    return cohen_weighted_kappa([ra[i] for i in common], [rb[i] for i in common], weights)
