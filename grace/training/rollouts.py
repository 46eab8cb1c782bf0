"""The policy's rollouts and anchors (eq. 12): rationales, the responses that are trained (each
rationale with the token that ended it), whether each ended, their embeddings and (fast path) the
sampling policy's log-probabilities, from one generation pass.

This is the one place that chooses the fast path (``grace.model.fastgen``: generation yields the
embedding states; anchors and rollouts share one pass) or plain ``generate`` followed by
``embed_ids`` (one pass for the anchors, one for the rollouts; old log-probabilities recomputed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..model.embedding import embed_ids
from ..model.fastgen import RowPlan, generate_and_embed, supports
from ..model.generation import generate_rationales
from ..model.prompts import PromptIds
from ..model.settings import EncodeSettings
from .config import GraceConfig


@dataclass
class Rollouts:
    rationales: list[list[int]]
    responses: list[list[int]]  # rationale + the tokens that ended it (EOS or the stop string)
    finished: list[bool]  # False: hit the length limit without ending
    embeddings: torch.Tensor  # [N, d] float32
    logprobs: list[torch.Tensor] | None = None  # per response token, under the policy that sampled it

    def take(self, rows: slice) -> "Rollouts":
        lp = self.logprobs[rows] if self.logprobs is not None else None
        return Rollouts(self.rationales[rows], self.responses[rows], self.finished[rows], self.embeddings[rows], lp)


def rollout_settings(cfg: GraceConfig, n: int, *, sample: bool, seed: int) -> EncodeSettings:
    """Rollouts sample from the policy itself (no repetition penalty: the policy gradient needs
    samples of pi_theta); anchors and probes decode greedily with the encoder's settings."""
    s = cfg.encode_settings().with_(seed=seed, batch_size=max(n, 1))
    if sample:
        s = s.with_(sample=True, temperature=cfg.sampling_temperature, top_p=cfg.top_p, repetition_penalty=1.0)
    return s


def generate(policy, tokenizer, prompts: Sequence[PromptIds], settings: EncodeSettings, *,
             stop_strings: Sequence[str], pad_id: int) -> Rollouts:
    """One generation pass over ``prompts`` (call under ``torch.no_grad``)."""
    if supports(policy, prompts, settings):
        r = generate_and_embed(policy, tokenizer, prompts, settings, stop_strings=stop_strings)
        return Rollouts(r.rationales, r.responses, r.finished, r.embed.embeddings.float())
    finished: list[bool] = []
    responses: list[list[int]] = []
    rats = generate_rationales(policy, tokenizer, prompts, settings, stop_strings=stop_strings,
                               finished=finished, responses=responses)
    emb = embed_ids(policy, prompts, rats, pad_id=pad_id, pooling=settings.pooling, layer=settings.layer).embeddings
    return Rollouts(rats, responses, finished, emb.float())


def anchors_and_rollouts(policy, tokenizer, anchors: Sequence[PromptIds], rollouts: Sequence[PromptIds],
                         cfg: GraceConfig, *, seeds: Sequence[int], stop_strings: Sequence[str],
                         pad_id: int) -> tuple[Rollouts, Rollouts]:
    """eq. 12's generations of one step: a greedy anchor per prompt of ``anchors`` (the encoder's
    settings: what inference embeds) and a sampled rollout per prompt of ``rollouts``, rollout i
    from its own generator seeded ``seeds[i]``. On the fast path both share one pass and the
    rollouts carry the sampling pass's log-probabilities (call under ``torch.no_grad``)."""
    n_a, n = len(anchors), len(anchors) + len(rollouts)
    sample = rollout_settings(cfg, n, sample=True, seed=int(seeds[0]) if len(seeds) else 0)
    greedy = rollout_settings(cfg, n, sample=False, seed=0)
    prompts = list(anchors) + list(rollouts)
    if not supports(policy, prompts, sample):
        return (generate(policy, tokenizer, anchors, greedy, stop_strings=stop_strings, pad_id=pad_id),
                generate(policy, tokenizer, rollouts, sample, stop_strings=stop_strings, pad_id=pad_id))
    plan = RowPlan(greedy=[True] * n_a + [False] * len(rollouts), seeds=[0] * n_a + [int(x) for x in seeds],
                   greedy_settings=greedy)
    r = generate_and_embed(policy, tokenizer, prompts, sample, stop_strings=stop_strings, plan=plan)
    both = Rollouts(r.rationales, r.responses, r.finished, r.embed.embeddings.float(), r.logprobs)
    anchor_part = both.take(slice(0, n_a))
    anchor_part.logprobs = None  # greedy: not a sample of the policy
    return anchor_part, both.take(slice(n_a, n))


def rollout_seed(seed: int, step: int, position: int, k: int) -> int:
    """The seed of rollout ``k`` of the example at ``position`` in step ``step``: a hash of the four,
    so no two rollouts of a run share one."""
    return int(np.random.SeedSequence([seed, step, position, k]).generate_state(1, np.uint64)[0] >> 1)


def logs_rollouts(step: int) -> bool:
    """Whether step ``step``'s rollouts go to ``rollouts.jsonl``: every step up to 100, then every
    10th up to 1,000, every 100th up to 10,000 and so on, so a run of any length logs at most about
    90 steps per power of ten (each step's row is a few kB per rollout group)."""
    every = 10 ** (len(str(step)) - 2) if step > 100 else 1
    return step % every == 0


def rollout_log(step: int, examples: Sequence[tuple[str, str]], anchors: Sequence[str],
                rationales: Sequence[Sequence[str]], rewards, finished: Sequence[Sequence[bool]],
                lengths: Sequence[Sequence[int]], clip: Sequence[Sequence[float]]) -> dict:
    """One step's row of ``rollouts.jsonl``: for each example its two texts (query and positive;
    unsupervised: the passage twice), its greedy anchor rationale and its K rollouts with each
    reward component (``rewards``: a ``RewardBreakdown`` of [B, K] over these examples), the
    advantage, the response length, whether it ended and the clipped share of its update tokens."""
    parts = {"main": rewards.main, "consistency": rewards.consistency, "hard_negative": rewards.hard_negative,
             "length_penalty": rewards.length_penalty, "total": rewards.total, "advantage": rewards.advantage}
    values = {k: v.detach().float().cpu().tolist() for k, v in parts.items()}
    out = []
    for i, (query, positive) in enumerate(examples):
        out.append({"query": query, "positive": positive, "anchor": anchors[i], "rollouts": [
            {"rationale": rationales[i][j], **{k: values[k][i][j] for k in values}, "length": lengths[i][j],
             "finished": bool(finished[i][j]), "clip_fraction": clip[i][j]} for j in range(len(rationales[i]))]})
    return {"step": step, "examples": out}


def write_rollout_log(accelerator, append: Callable[[dict], None], tokenizer, step: int,
                      texts: Sequence[tuple[str, str]], positions: Sequence[int], anchors: Rollouts, roll: Rollouts,
                      rewards, clip: Sequence[float], k: int) -> None:
    """Step ``step``'s row of ``rollouts.jsonl`` (``rollout_log``), passed to ``append`` by the main
    process: every process's examples (``texts``: this process's, at ``positions`` in the whole
    batch) in their places in the whole batch, so "example 3" is the same example with any number of
    processes. ``rewards`` is the whole batch's ``RewardBreakdown`` in process order."""
    from .rewards import RewardBreakdown

    def text(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)

    mine = [{"texts": t, "anchor": text(anchors.rationales[i]),
             "rationales": [text(x) for x in roll.rationales[i * k:(i + 1) * k]],
             "lengths": [len(x) for x in roll.responses[i * k:(i + 1) * k]],
             "finished": roll.finished[i * k:(i + 1) * k], "clip": clip[i * k:(i + 1) * k],
             "position": pos} for i, (t, pos) in enumerate(zip(texts, positions))]
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        mine = gather_object(mine)
    if not accelerator.is_main_process:
        return
    order = sorted(range(len(mine)), key=lambda j: mine[j]["position"])  # rewards are in process order
    rows = [mine[j] for j in order]
    ordered = RewardBreakdown(**{f: getattr(rewards, f)[order] for f in ("main", "consistency", "hard_negative",
                                                                         "length_penalty", "total", "advantage")})
    append(rollout_log(step, [m["texts"] for m in rows], [m["anchor"] for m in rows], [m["rationales"] for m in rows],
                       ordered, [m["finished"] for m in rows], [m["lengths"] for m in rows], [m["clip"] for m in rows]))
