"""GRACE rewards for ``trl.GRPOTrainer``: for users who already train with TRL (vLLM generation,
DeepSpeed, FSDP, many GPUs).

TRL samples the rationales and runs the policy-gradient update; ``GraceReward`` scores each
completion with the same reward functions as ``grace.training.trainer`` (eq. 13-17), reading the
rationale embeddings from the policy itself through ``embed_ids`` (the one embedding path):

    reward = GraceReward(model, tokenizer)
    trainer = GRPOTrainer(model=model, reward_funcs=reward, train_dataset=reward.dataset(triplets),
                          args=GRPOConfig(num_generations=4, scale_rewards="none", ...))

``scale_rewards="none"`` gives eq. 18's advantage (reward minus the group mean, no division by the
std). When to use which trainer: ``grace train`` (ours) keeps the exact prompt spans, trains the
stop decision of the template's stop string and runs on 2 CPU cores; TRL scales out on GPUs.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..model.embedding import embed_ids
from ..model.generation import generate_rationales
from ..model.prompts import PromptBuilder
from ..model.settings import EncodeSettings
from .config import GraceConfig
from .rewards import consistency_reward, contrastive_reward, hard_negative_reward, total_reward


class GraceReward:
    """A TRL reward function: ``__call__(prompts, completions, completion_ids, query, positive, ...)``.

    Each dataset row's ``prompt`` is P(d+) for its positive; the query's rationale (the fixed
    anchor, greedy, as in the reference code) is generated with the current policy when the
    reward is computed. Completions of the same positive form a group (consecutive rows, as
    TRL's sampler lays them out).
    """

    __name__ = "grace"

    def __init__(self, model: torch.nn.Module, tokenizer, *, prompt: str = GraceConfig.prompt,
                 lambda_consistency: float = GraceConfig.lambda_consistency,
                 lambda_hard: float = GraceConfig.lambda_hard,
                 reward_temperature: float = GraceConfig.reward_temperature,
                 settings: EncodeSettings | None = None):  # the defaults of ``grace train``
        self.model, self.tokenizer = model, tokenizer
        self.prompts = PromptBuilder(tokenizer, prompt)
        self.settings = settings or EncodeSettings(prompt=prompt)
        self.lambda_consistency, self.lambda_hard = lambda_consistency, lambda_hard
        self.reward_temperature = reward_temperature

    def dataset(self, triplets: Sequence) -> "datasets.Dataset":  # noqa: F821
        """A TRL dataset from ``Triplet`` records (``grace.training.data.load_triplets``)."""
        from datasets import Dataset

        rows = [{"prompt": self.tokenizer.decode(self.prompts.build(t.positive).ids, skip_special_tokens=True),
                 "query": t.query, "positive": t.positive} for t in triplets]
        return Dataset.from_list(rows)

    def __call__(self, prompts: list, completions: list, completion_ids: list[list[int]], *,
                 query: list[str], positive: list[str], **_) -> list[float]:
        model = self.model
        eos = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        rationales = [[t for t in ids if t not in eos] for ids in completion_ids]
        groups: list[list[int]] = []
        for i, text in enumerate(positive):
            if groups and positive[groups[-1][0]] == text:
                groups[-1].append(i)
            else:
                groups.append([i])
        k = len(groups[0])
        if any(len(g) != k for g in groups) or k < 2:
            raise ValueError("GraceReward needs every positive's completions together, at least 2 per group "
                             "(GRPOConfig.num_generations >= 2).")
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                p_roll = [self.prompts.build(positive[i]) for g in groups for i in g]
                r_roll = [rationales[i] for g in groups for i in g]
                h_roll = embed_ids(model, p_roll, r_roll, pad_id=int(self.tokenizer.pad_token_id),
                                   pooling=self.settings.pooling, layer=self.settings.layer).embeddings.float()
                p_anchor = [self.prompts.build(query[g[0]]) for g in groups]
                s = self.settings.with_(sample=False, batch_size=len(p_anchor))
                r_anchor = generate_rationales(model, self.tokenizer, p_anchor, s,
                                               stop_strings=self.prompts.stop_strings())
                h_anchor = embed_ids(model, p_anchor, r_anchor, pad_id=int(self.tokenizer.pad_token_id),
                                     pooling=s.pooling, layer=s.layer).embeddings.float()
        finally:
            model.train(was_training)
        b = len(groups)
        h_roll = h_roll.view(b, k, -1)
        main = contrastive_reward(h_anchor, h_roll, None)  # eq. 13 (the negatives' term cancels in eq. 18)
        cons = consistency_reward(h_roll)  # eq. 14
        hard = hard_negative_reward(h_anchor, h_roll) if b > 1 else torch.zeros_like(main)  # eq. 15
        r = total_reward(main, cons, hard, lambda_consistency=self.lambda_consistency,
                         lambda_hard=self.lambda_hard if b > 1 else 0.0, temperature=self.reward_temperature)
        out = [0.0] * len(positive)
        for gi, g in enumerate(groups):
            for kk, i in enumerate(g):
                out[i] = float(r.total[gi, kk])
        return out
