"""The policy's rollouts and anchors (eq. 12): rationales, the responses that are trained (each
rationale with the token that ended it), whether each ended, and their embeddings, from one
generation pass.

This is the one place that chooses the fast path (``grace.model.fastgen``: generation yields the
embedding states) or plain ``generate`` followed by ``embed_ids``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..model.embedding import embed_ids
from ..model.fastgen import generate_and_embed, supports
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
