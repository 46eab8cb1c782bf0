"""GRACE rewards (eq. 13-17) and the group advantage (eq. 18) as pure tensor functions.

Shapes: B examples, K rollouts each, M negatives, d dimensions; embeddings are L2-normalised
so a dot product is a cosine. Every function returns one value per rollout, [B, K].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def contrastive_reward(q: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | None,
                       neg_mask: torch.Tensor | None = None) -> torch.Tensor:
    """eq. 13: R_CL = sim(h_q, h_d+^k) - mean_m sim(h_q, h_d-_m).  q [B,d], pos [B,K,d], neg [B,M,d];
    ``neg_mask`` [B,M] marks each example's real negatives when their numbers differ."""
    r = torch.einsum("bd,bkd->bk", q, pos)
    if neg is not None and neg.shape[1] > 0:
        sims = torch.einsum("bd,bmd->bm", q, neg)
        if neg_mask is None:
            neg_mask = torch.ones_like(sims, dtype=torch.bool)
        mean = (sims * neg_mask).sum(dim=1, keepdim=True) / neg_mask.sum(dim=1, keepdim=True)
        r = r - mean
    return r


def negatives_by_example(h: torch.Tensor, counts: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The layout ``contrastive_reward`` takes: negatives' embeddings h [N,d] (``counts[i]`` of
    example i, in order) as [B,M,d] zero-padded, and the [B,M] mask of the real ones."""
    m = max(counts)
    neg = h.new_zeros((len(counts), m, h.shape[1]))
    mask = torch.zeros((len(counts), m), dtype=torch.bool, device=h.device)
    pos = 0
    for i, c in enumerate(counts):
        neg[i, :c], mask[i, :c] = h[pos:pos + c], True
        pos += c
    return neg, mask


def self_reward(anchor: torch.Tensor, rollouts: torch.Tensor) -> torch.Tensor:
    """eq. 20: R_self = sim(h_anchor, h_x^k) for the unsupervised mode.  anchor [B,d], rollouts [B,K,d]."""
    return torch.einsum("bd,bkd->bk", anchor, rollouts)


def consistency_reward(rollouts: torch.Tensor) -> torch.Tensor:
    """eq. 14: R_consist = mean_{j != k} sim(h^k, h^j), agreement among one example's K rollouts."""
    k = rollouts.shape[1]
    if k < 2:
        raise ValueError("Consistency needs at least 2 rollouts.")
    sims = torch.einsum("bkd,bjd->bkj", rollouts, rollouts)
    return (sims.sum(dim=2) - sims.diagonal(dim1=1, dim2=2)) / (k - 1)


def hard_negative_reward(anchors: torch.Tensor, rollouts: torch.Tensor) -> torch.Tensor:
    """eq. 15, in-batch hard negative, read per rollout.

    For rollout k of example i: R_hard = - mean_{j != i} sim(h_q_j, h_d+_i^k), how close this
    rollout comes to the *other* examples' queries (anchors) in the batch. The equation's literal
    form, - mean_{j != i} max_l sim(h_q_i, h_d+_j^l), takes the same value for all K rollouts
    of example i and so cancels in the group advantage (eq. 18); this reading keeps the same
    in-batch negatives but lets the term rank the rollouts. anchors [B,d], rollouts [B,K,d].
    """
    b = anchors.shape[0]
    if b < 2:
        raise ValueError("The in-batch hard negative needs at least 2 examples per batch.")
    sims = torch.einsum("jd,ikd->ikj", anchors, rollouts)  # [B(i), K, B(j)]
    others = ~torch.eye(b, dtype=torch.bool, device=anchors.device)  # j != i
    return -(sims * others.unsqueeze(1)).sum(dim=2) / (b - 1)


@dataclass
class RewardBreakdown:
    """Each component per rollout [B, K]; ``total`` is what the advantage uses."""

    main: torch.Tensor  # contrastive (supervised) or self (unsupervised)
    consistency: torch.Tensor
    hard_negative: torch.Tensor
    length_penalty: torch.Tensor
    total: torch.Tensor
    advantage: torch.Tensor | None = None


def total_reward(main: torch.Tensor, consistency: torch.Tensor, hard: torch.Tensor, *,
                 lambda_consistency: float, lambda_hard: float, temperature: float,
                 truncated: torch.Tensor | None = None, length_penalty: float = -1.0) -> RewardBreakdown:
    """eq. 16-17: R = (R_CL + l1 R_consist + l2 R_hard) / tau; a rollout that hit the length
    limit without ending gets ``length_penalty`` instead (as the reference code does)."""
    if temperature <= 0:
        raise ValueError("The reward temperature must be above 0.")
    total = (main + lambda_consistency * consistency + lambda_hard * hard) / temperature
    penalty = torch.zeros_like(total)
    if truncated is not None:
        truncated = truncated.to(torch.bool)
        penalty = torch.where(truncated, torch.full_like(total, length_penalty), penalty)
        total = torch.where(truncated, penalty, total)
    return RewardBreakdown(main=main, consistency=consistency, hard_negative=hard,
                           length_penalty=penalty, total=total)


def group_advantage(rewards: torch.Tensor) -> torch.Tensor:
    """eq. 18: A_k = R_k - mean_l R_l over each example's K rollouts (no division by the std)."""
    return rewards - rewards.mean(dim=1, keepdim=True)


# What a rollout that hit the length limit without ending does to its group (``grace_rewards``):
#   penalty        the reference code: its reward is the length penalty, in the group mean of eq. 18
#   finished-mean  eq. 18 over the group's finished rollouts only; unfinished ones get a fixed
#                  negative advantage (``truncated_advantage``)
#   mask           eq. 18 over the finished rollouts; unfinished ones get advantage 0 (not trained)
#   none           no special treatment: scored by similarity like any other
TRUNCATION_RULES = ("penalty", "finished-mean", "mask", "none")


def finished_advantage(rewards: torch.Tensor, finished: torch.Tensor, unfinished: float) -> torch.Tensor:
    """eq. 18 over each group's finished rollouts (A_k = R_k - mean over the finished l); an
    unfinished rollout's advantage is ``unfinished``."""
    f = finished.to(torch.bool)
    count = f.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (rewards * f).sum(dim=1, keepdim=True) / count
    return torch.where(f, rewards - mean, torch.full_like(rewards, unfinished))


ADVANTAGE_SCALES = ("none", "group-std")  # eq. 18 as printed (and the reference), or GRPO's A / std


def scale_by_group_std(advantage: torch.Tensor, rewards: torch.Tensor, counted: torch.Tensor,
                       eps: float = 1e-6) -> torch.Tensor:
    """GRPO's normalisation: each group's advantages of the ``counted`` rollouts divided by the
    standard deviation of their rewards (the others keep theirs: a cut rollout's fixed value)."""
    c = counted.to(torch.bool)
    n = c.sum(dim=1, keepdim=True)
    mean = (rewards * c).sum(dim=1, keepdim=True) / n.clamp(min=1)
    var = (((rewards - mean) * c) ** 2).sum(dim=1, keepdim=True) / (n - 1).clamp(min=1)
    return torch.where(c & (n > 1), advantage / (var.sqrt() + eps), advantage)


def grace_rewards(anchors: torch.Tensor, rollouts: torch.Tensor, finished: torch.Tensor, *,
                  lambda_consistency: float, lambda_hard: float, temperature: float,
                  length_penalty: float = -1.0, truncation: str = "penalty",
                  truncated_advantage: float = -0.2, advantage_scale: str = "none") -> RewardBreakdown:
    """One step's rewards and advantages from embeddings: anchors [B,d] (the query's rationale, or
    the passage's anchor rationale unsupervised), rollouts [B,K,d], finished [B,K] (False: the
    rollout hit the length limit). Every tensor is made on the inputs' device.

    main = sim(anchor, rollout): eq. 13's positive term (supervised) or eq. 20 (unsupervised).
    Eq. 13's negative term, - mean_m sim(h_q, h_d-_m), has one value per example and cancels in
    the advantage (eq. 18), so its rationales are not generated for the reward. ``truncation``:
    one of ``TRUNCATION_RULES`` (the reference code's is ``penalty``); under ``finished-mean`` and
    ``mask`` the ``length_penalty`` component holds what a cut rollout was trained on (its fixed
    advantage). ``advantage_scale``: one of ``ADVANTAGE_SCALES``.
    """
    if advantage_scale not in ADVANTAGE_SCALES:
        raise ValueError(f"Unknown advantage scale {advantage_scale!r}: use one of {', '.join(ADVANTAGE_SCALES)}.")
    if truncation not in TRUNCATION_RULES:
        raise ValueError(f"Unknown truncation rule {truncation!r}: use one of {', '.join(TRUNCATION_RULES)}.")
    b = rollouts.shape[0]
    main = self_reward(anchors, rollouts)  # eq. 13 (positive term) / eq. 20
    cons = consistency_reward(rollouts)  # eq. 14
    hard = hard_negative_reward(anchors, rollouts) if b > 1 else torch.zeros_like(main)  # eq. 15, per rollout
    r = total_reward(main, cons, hard, lambda_consistency=lambda_consistency,  # eq. 16-17
                     lambda_hard=lambda_hard if b > 1 else 0.0, temperature=temperature,
                     truncated=~finished.to(torch.bool) if truncation == "penalty" else None,
                     length_penalty=length_penalty)
    counted = torch.ones_like(finished, dtype=torch.bool)
    if truncation in ("finished-mean", "mask"):
        fixed = truncated_advantage if truncation == "finished-mean" else 0.0
        r.advantage = finished_advantage(r.total, finished, fixed)
        counted = finished.to(torch.bool)
        r.length_penalty = torch.where(counted, torch.zeros_like(r.total), torch.full_like(r.total, fixed))
    else:
        r.advantage = group_advantage(r.total)  # eq. 18
    if advantage_scale == "group-std":
        r.advantage = scale_by_group_std(r.advantage, r.total, counted)
    return r
