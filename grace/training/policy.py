"""The policy-gradient pieces of a GRACE step, as plain functions (eq. 19 with the reference code's
PPO-style clipping): the rollouts' per-token log-probabilities, the clipped surrogate, the KL
estimate, and one batch of updates on a batch of rollouts.

Nothing here knows about data, files or processes: ``policy_update`` takes an ``optimizer_step``
that runs the backward passes it is given and steps (the trainer's, which averages gradients
across processes).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..model.embedding import forward_states, lm_logits
from ..model.prompts import PromptIds

OptimizerStep = Callable[[Callable[[], None]], None]


def rollout_logprobs(model, prompts: Sequence[PromptIds], responses: Sequence[Sequence[int]], pad_id: int,
                     temperature: float = 1.0, share_prefix: bool = True) -> list[torch.Tensor]:
    """Per-token log pi(r_t | P(x), r_<t) of each response (eq. 19), with gradients.

    A response is the rationale plus the token(s) that ended it (EOS or the stop string), so the
    decision to stop is scored too. Logits are computed only at the positions that predict
    response tokens: the 262k-way output layer never runs over the prompt.
    """
    device = next(model.parameters()).device
    fs = forward_states(model, prompts, responses, pad_id=pad_id, share_prefix=share_prefix)
    width = fs.ids.shape[1]
    rows, cols, targets, lengths = [], [], [], []
    for i, r in enumerate(responses):
        n = len(r)
        rows += [i] * n
        cols += list(range(width - n - 1, width - 1))  # position t-1 predicts token t
        targets += list(r)
        lengths.append(n)
    if not targets:
        return [fs.last.sum() * 0.0 for _ in responses]
    logp = torch.log_softmax(lm_logits(model, fs.last[rows, cols]) / temperature, dim=-1)
    tok = logp.gather(1, torch.tensor(targets, device=device).unsqueeze(1)).squeeze(1)
    return list(torch.split(tok, lengths))


LOG_RATIO_BOUND = 20.0  # verl clamps log(pi / pi_old) to [-20, 20] before exp (compute_policy_loss)


def clipped_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                        clip_eps: float, dual_clip: float | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token PPO-clipped surrogate (eq. 19 with the reference code's clipping, verl's
    ``compute_policy_loss``): max(-rho A, -clip(rho, 1 - eps, 1 + eps) A), rho = pi / pi_old with
    log rho clamped to [-20, 20]; with ``dual_clip`` c (> 1; 0 or None: off) a negative-advantage
    token's loss is also capped at -c A, so a ratio that has grown far cannot blow it up.
    Returns the loss, which tokens the PPO clip chose, and which the dual clip capped."""
    ratio = torch.exp(torch.clamp(logp - old_logp, -LOG_RATIO_BOUND, LOG_RATIO_BOUND))
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    loss = torch.maximum(unclipped, clipped)
    was_clipped = clipped > unclipped
    if not dual_clip:
        return loss, was_clipped, torch.zeros_like(was_clipped)
    cap = -advantages * dual_clip
    negative = advantages < 0
    was_capped = negative & (loss > cap)
    return torch.where(negative, torch.minimum(loss, cap), loss), was_clipped, was_capped


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi || pi_ref) on samples of pi: exp(d) - d - 1, d = ref - logp."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def policy_update(policy, prompts: Sequence[PromptIds], responses: Sequence[Sequence[int]],
                  advantages: torch.Tensor, *, pad_id: int, optimizer_step: OptimizerStep, updates: int,
                  clip_eps: float, temperature: float, kl_beta: float = 0.0, chunk: int = 1,
                  dual_clip: float | None = None) -> dict:
    """``updates`` optimizer steps on one batch of rollouts (``advantages``: one per response):
    eq. 19 with a PPO-clipped ratio (and ``dual_clip``: ``clipped_policy_loss``), averaged over
    every response token of the batch (token-mean).
    Log-probabilities are taken ``chunk`` responses at a time (the trainer passes K: one example's
    group). The first update's log-probabilities (taken with gradients) are the old policy's, so
    its ratio is exactly 1. Returns the first update's loss, the clip and dual-clip fractions of
    the later ones and (with ``kl_beta``) the last update's KL."""
    policy.eval()  # LoRA dropout off: the rollouts were sampled without it
    n_tokens = max(1, sum(len(r) for r in responses))
    old: list[list[torch.Tensor]] = []
    losses, clipped, capped, kls = [], [], [], []
    for update in range(updates):
        totals = {"loss": 0.0, "clipped": 0.0, "capped": 0.0, "kl": 0.0}

        def backward() -> None:
            for c, start in enumerate(range(0, len(prompts), chunk)):
                sl = slice(start, start + chunk)
                lps = rollout_logprobs(policy, prompts[sl], responses[sl], pad_id, temperature)
                if update == 0:
                    old.append([lp.detach() for lp in lps])
                lp = torch.cat(lps)
                adv = torch.cat([advantages[start + j].expand(len(x)) for j, x in enumerate(lps)]).to(lp.dtype)
                tok_loss, was_clipped, was_capped = clipped_policy_loss(lp, torch.cat(old[c]), adv, clip_eps,
                                                                        dual_clip)
                loss = tok_loss.sum() / n_tokens  # token-mean over the whole batch
                if kl_beta > 0:
                    with torch.no_grad(), policy.disable_adapter():
                        ref = torch.cat(rollout_logprobs(policy, prompts[sl], responses[sl], pad_id, temperature))
                    kl = kl_k3(lp, ref).sum() / n_tokens
                    loss = loss + kl_beta * kl
                    totals["kl"] += kl.item()
                loss.backward()
                totals["loss"] += loss.item()
                totals["clipped"] += float(was_clipped.sum()) / n_tokens
                totals["capped"] += float(was_capped.sum()) / n_tokens

        optimizer_step(backward)
        losses.append(totals["loss"])
        clipped.append(totals["clipped"])
        capped.append(totals["capped"])
        kls.append(totals["kl"])
    later = max(1, updates - 1)
    out = {"loss": losses[0], "clip_fraction": sum(clipped[1:]) / later}
    if dual_clip:
        out["dual_clip_fraction"] = sum(capped[1:]) / later
    if kl_beta > 0:
        out["kl"] = kls[-1]
    return out
