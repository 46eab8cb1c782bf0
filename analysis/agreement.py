"""Agreement and correlation figures for rationale ratings.

- Krippendorff's alpha with the ordinal metric over items rated by 2+ annotators (the
  ``krippendorff`` package).
- Cohen's weighted kappa for two annotators, linear or quadratic weights (scikit-learn's
  ``cohen_kappa_score``).
- Spearman's rho between a rating dimension and the similarity / reward stored with the item.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from .annotations import DIMENSIONS

SCALE = (1, 2, 3, 4, 5)


def krippendorff_alpha_ordinal(units: list[list[int]], values: tuple[int, ...] = SCALE) -> float | None:
    """Alpha over units (each a list of the values it received); units with < 2 values are skipped.
    None when it is undefined (fewer than two pairable values, or every value the same)."""
    import krippendorff

    units = [u for u in units if len(u) >= 2]
    if not units:
        return None
    width = max(len(u) for u in units)
    # the package takes a raters x units matrix with NaN for a missing rating
    data = np.full((width, len(units)), np.nan)
    for j, unit in enumerate(units):
        data[:len(unit), j] = unit
    if len({v for u in units for v in u}) < 2:
        return None
    return float(krippendorff.alpha(reliability_data=data, level_of_measurement="ordinal",
                                    value_domain=list(values)))


def cohen_weighted_kappa(a: list[int], b: list[int], weights: str = "quadratic",
                         values: tuple[int, ...] = SCALE) -> float | None:
    """Weighted kappa between two annotators' ratings of the same items (scikit-learn's)."""
    from sklearn.metrics import cohen_kappa_score

    if len(a) != len(b) or not a:
        return None
    if len(set(a) | set(b)) < 2:
        return None  # one value everywhere: chance agreement is total, kappa undefined
    return float(cohen_kappa_score(a, b, labels=list(values), weights=weights))


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
    correlation with similarity, reward and the rationale's measured shift, mean rating by training step."""
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
        shifts = [(per_item_mean[i], first[i]["rationale_shift"]) for i in by_item
                  if first[i].get("rationale_shift") is not None]
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
            "spearman_shift": spearman([a for a, _ in shifts], [b for _, b in shifts]),
            "n": len(vals), "n_items": len(per_item_mean), "n_similarity": len(sims), "n_reward": len(rews),
            "n_shift": len(shifts),
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
