"""The policy-gradient pieces of a GRACE step, as plain functions (eq. 19 with the reference code's
PPO-style clipping): the rollouts' per-token log-probabilities, the clipped surrogate, the KL
estimate, and one batch of updates on a batch of rollouts.

Nothing here knows about data, files or processes: ``policy_update`` takes an ``optimizer_step``
that runs the backward passes it is given and steps (the trainer's, which averages gradients
across processes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..model.embedding import embed_ids, forward_states, pool_segments, response_states
from ..model.output_layer import token_logprobs
from ..model.prompts import PromptIds

CUT_ROLLOUT_LOSSES = ("token-mean", "sequence-mean")  # how a rollout cut at the length limit weighs (policy_update)
OptimizerStep = Callable[[Callable[[], None]], float]  # runs the backward passes, steps; the gradient norm


def rollout_logprobs(model, prompts: Sequence[PromptIds], responses: Sequence[Sequence[int]], pad_id: int,
                     temperature: float = 1.0, share_prefix: bool = True) -> list[torch.Tensor]:
    """Per-token log pi(r_t | P(x), r_<t) of each response (eq. 19), with gradients.

    A response is the rationale plus the token(s) that ended it (EOS or the stop string), so the
    decision to stop is scored too. Logits are computed only at the positions that predict
    response tokens, a chunk of rows at a time (``token_logprobs``): the 262k-way output layer
    never runs over the prompt. ``share_prefix``: each distinct prompt runs once for all the
    responses that share it (``response_states``); off, every row runs its whole prompt.
    """
    device = next(model.parameters()).device
    lengths = [len(r) for r in responses]
    targets = torch.tensor([t for r in responses for t in r], dtype=torch.long, device=device)
    shared = response_states(model, prompts, responses, pad_id=pad_id) if share_prefix else None
    states = shared.predicting if shared is not None else None
    if states is None:
        fs = forward_states(model, prompts, responses, pad_id=pad_id)
        width = fs.ids.shape[1]
        rows = [i for i, n in enumerate(lengths) for _ in range(n)]
        cols = [c for n in lengths for c in range(width - n - 1, width - 1)]  # position t-1 predicts token t
        states = fs.last[rows, cols]
    if not len(targets):
        return [states.sum() * 0.0 for _ in responses]
    return list(torch.split(token_logprobs(model, states, targets, temperature), lengths))


@dataclass
class ContrastiveTerm:
    """GRACE + InfoNCE, a method beside the paper's: an InfoNCE loss (eq. 1-2) on the rollouts'
    embeddings, pooled from the update's own hidden states, against the step's anchors."""

    anchors: torch.Tensor  # [all examples, d]: the step's anchor embeddings, every process's (no gradient)
    labels: Sequence[int]  # per rollout: its example's row of ``anchors``
    rationales: Sequence[Sequence[int]]  # per rollout: the rationale its embedding pools
    weight: float
    temperature: float
    pooling: str = "mean"
    layer: int = -1


def logprobs_and_embeddings(model, prompts: Sequence[PromptIds], responses: Sequence[Sequence[int]],
                            rationales: Sequence[Sequence[int]], pad_id: int, temperature: float, *, pooling: str,
                            layer: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``rollout_logprobs`` and each rollout's embedding (eq. 10-11, ``pool_segments``) from one pass
    with gradients; where the shared layout does not fit, two passes (``rollout_logprobs``, ``embed_ids``)."""
    shared = response_states(model, prompts, responses, pad_id=pad_id, keep_layer=layer)
    if shared is None:
        emb = embed_ids(model, prompts, rationales, pad_id=pad_id, pooling=pooling, layer=layer).embeddings
        return rollout_logprobs(model, prompts, responses, pad_id, temperature, share_prefix=False), emb
    device = shared.predicting.device
    targets = torch.tensor([t for r in responses for t in r], dtype=torch.long, device=device)
    lps = torch.split(token_logprobs(model, shared.predicting, targets, temperature), [len(r) for r in responses])
    emb = pool_segments(prompts, shared.text, shared.response, rationales, pad_id, pooling=pooling).embeddings
    return list(lps), emb


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


def mini_batches(positions: Sequence[int], k: int, size: int, total: int) -> list[list[int]]:
    """The local rollouts of each mini-batch of a step of ``total`` examples: the example at batch
    position ``positions[i]`` (its place in the whole batch, across processes) owns local rollouts
    i*k .. i*k+k-1 and belongs to mini-batch position // ``size``. Every process gets the same
    number of mini-batches, ceil(total / size) (some may be empty on a process)."""
    count = -(-total // size)
    out: list[list[int]] = [[] for _ in range(count)]
    for i, pos in enumerate(positions):
        out[pos // size].extend(range(i * k, (i + 1) * k))
    return out


def _sum(x: torch.Tensor) -> torch.Tensor:
    return x


def policy_update(policy, prompts: Sequence[PromptIds], responses: Sequence[Sequence[int]],
                  advantages: torch.Tensor, *, pad_id: int, optimizer_step: OptimizerStep,
                  batches: Sequence[Sequence[int]], epochs: int, clip_eps: float, temperature: float,
                  kl_beta: float = 0.0, dual_clip: float | None = None,
                  old_logprobs: Sequence[torch.Tensor] | None = None,
                  reduce: Callable[[torch.Tensor], torch.Tensor] = _sum,
                  finished: Sequence[bool] | None = None, cut_loss: str = "token-mean",
                  contrastive: ContrastiveTerm | None = None) -> dict:
    """eq. 19 with a PPO-clipped ratio (and ``dual_clip``: ``clipped_policy_loss``): ``epochs``
    passes over one step's rollouts, one optimizer step per mini-batch (``batches``: the rollout
    indices of each, ``mini_batches``), so with one epoch each rollout is trained once, as in verl.

    ``old_logprobs``: each response's log-probabilities under the policy that sampled it (the
    sampling pass's); without them one no-grad pass computes them before the first update.
    The loss is the token-mean over each mini-batch's tokens in all processes: ``reduce`` sums a
    tensor over processes, and the optimizer step sums the gradients, so the update equals one
    process's on the whole batch. Rollouts whose advantage is 0 (a group whose rewards are all
    equal) add no gradient and are not run (their tokens still count in the mean); a mini-batch
    with none left takes no optimizer step. Returns the mean loss and gradient norm of the
    optimizer steps, the clip and dual-clip fractions over every trained token, the KL (with
    ``kl_beta``), how many rollouts were skipped, and (``rollout_clip_fraction``, a list, this
    process's rollouts) the clipped share of each rollout's tokens. ``cut_loss`` "sequence-mean": a
    rollout that did not finish (``finished``) weighs as much as the mini-batch's average rollout
    (its tokens' losses times mean length / its length) instead of one unit per token.
    ``contrastive`` (GRACE + InfoNCE): each mini-batch's loss also has its weight times the mean
    InfoNCE of its rollouts' embeddings against the anchors; every rollout is then run."""
    if cut_loss not in CUT_ROLLOUT_LOSSES:
        raise ValueError(f"Unknown cut-rollout loss {cut_loss!r}: use one of {', '.join(CUT_ROLLOUT_LOSSES)}.")
    reweigh = cut_loss == "sequence-mean" and finished is not None and not all(finished)
    policy.eval()  # LoRA dropout off: the rollouts were sampled without it
    device = next(policy.parameters()).device
    nonzero = (advantages != 0).tolist()  # one device sync, not one per rollout
    trained = [i for i in range(len(responses)) if kl_beta > 0 or contrastive is not None or nonzero[i]]
    keep = set(trained)
    if old_logprobs is None:
        with torch.no_grad():
            old_logprobs = [None] * len(responses)
            for rows in batches:
                run = [i for i in rows if i in keep]
                for i, lp in zip(run, rollout_logprobs(policy, [prompts[i] for i in run],
                                                       [responses[i] for i in run], pad_id, temperature)
                                 if run else []):
                    old_logprobs[i] = lp.detach()
    totals = {"loss": 0.0, "clipped": 0.0, "capped": 0.0, "kl": 0.0, "grad_norm": 0.0, "tokens": 0.0,
              "infonce": 0.0}
    clipped_of = [0.0] * len(responses)  # per rollout, over every epoch: the rollout inspector's column
    steps = 0
    for _ in range(epochs):
        for rows in batches:
            run = [i for i in rows if i in keep]
            counts = reduce(torch.tensor([float(sum(len(responses[i]) for i in rows)), float(len(run)),
                                          float(len(rows))], device=device))
            n_tokens, n_run, n_rows = float(counts[0]), float(counts[1]), float(counts[2])
            mean_len = n_tokens / max(n_rows, 1.0)
            if n_run == 0:
                continue
            box: dict = {}

            def backward() -> None:
                if not run:  # nothing here on this process; the others' gradients still arrive
                    box.update(loss=0.0, clipped=0.0, capped=0.0, kl=0.0, tokens=0.0, infonce=0.0)
                    return
                emb = None
                if contrastive is not None:
                    lps, emb = logprobs_and_embeddings(policy, [prompts[i] for i in run], [responses[i] for i in run],
                                                       [contrastive.rationales[i] for i in run], pad_id, temperature,
                                                       pooling=contrastive.pooling, layer=contrastive.layer)
                else:
                    lps = rollout_logprobs(policy, [prompts[i] for i in run], [responses[i] for i in run], pad_id,
                                           temperature)
                lp = torch.cat(lps)
                old = torch.cat([old_logprobs[i].to(lp.device, lp.dtype) for i in run])
                adv = torch.cat([advantages[i].expand(len(x)) for i, x in zip(run, lps)]).to(lp.dtype)
                tok_loss, was_clipped, was_capped = clipped_policy_loss(lp, old, adv, clip_eps, dual_clip)
                if reweigh:  # a cut rollout counts as one average rollout, not as its many tokens
                    w = [1.0 if finished[i] else mean_len / max(len(x), 1) for i, x in zip(run, lps)]
                    tok_loss = tok_loss * torch.cat([torch.full((len(x),), v, dtype=tok_loss.dtype, device=lp.device)
                                                     for v, x in zip(w, lps)])
                loss = tok_loss.sum() / n_tokens  # token-mean over the mini-batch, every process's tokens
                kl_value = 0.0
                if kl_beta > 0:
                    with torch.no_grad(), policy.disable_adapter():
                        ref = torch.cat(rollout_logprobs(policy, [prompts[i] for i in run],
                                                         [responses[i] for i in run], pad_id, temperature))
                    kl = kl_k3(lp, ref).sum() / n_tokens
                    loss = loss + kl_beta * kl
                    kl_value = kl.item()
                infonce_sum = 0.0
                if emb is not None:  # eq. 1-2 on the rollouts, a mean over the mini-batch's rollouts
                    logits = emb @ contrastive.anchors.to(emb.device, emb.dtype).T / contrastive.temperature
                    labels = torch.tensor([contrastive.labels[i] for i in run], device=emb.device)
                    nce = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
                    loss = loss + contrastive.weight * nce / n_rows
                    infonce_sum = nce.item()
                loss.backward()
                parts = torch.split(was_clipped, [len(x) for x in lps])
                for i, n in zip(run, torch.stack([x.float().sum() for x in parts]).tolist()):  # one sync
                    clipped_of[i] += n
                box.update(loss=loss.item(), clipped=float(was_clipped.sum()), capped=float(was_capped.sum()),
                           kl=kl_value, tokens=float(lp.numel()), infonce=infonce_sum)

            norm = optimizer_step(backward)
            part = reduce(torch.tensor([box["loss"], box["clipped"], box["capped"], box["kl"], box["tokens"],
                                        box["infonce"]], device=device)).tolist()
            for key, v in zip(("loss", "clipped", "capped", "kl", "tokens", "infonce"), part):
                totals[key] += v
            totals["grad_norm"] += float(norm)
            steps += 1
    skipped = reduce(torch.tensor([float(len(responses) - len(trained)), float(len(responses))], device=device))
    tokens = max(totals["tokens"], 1.0)
    out = {"loss": totals["loss"] / max(steps, 1), "clip_fraction": totals["clipped"] / tokens,
           "grad_norm": totals["grad_norm"] / max(steps, 1), "optimizer_steps": steps,
           "skipped_rollouts": float(skipped[0] / skipped[1].clamp(min=1)),
           "rollout_clip_fraction": [c / max(len(r) * epochs, 1) for c, r in zip(clipped_of, responses)]}
    if dual_clip:
        out["dual_clip_fraction"] = totals["capped"] / tokens
    if kl_beta > 0:
        out["kl"] = totals["kl"] / max(steps, 1)
    if contrastive is not None:  # the mean InfoNCE of a rollout, over every epoch
        out["infonce"] = totals["infonce"] / max(float(skipped[1]) * epochs, 1.0)
    return out
