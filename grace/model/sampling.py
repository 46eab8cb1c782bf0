"""Drawing the next token from the 262k-way distribution, and its log-probability.

``sample_rows`` is the rollouts' sampler: each row draws with its own generator by the inverse CDF
of one uniform number, so a row's draw depends on nothing but its own logits and generator. The
CDF is walked in two levels (which block of ``BLOCK`` tokens, then which token in it): the block
sums are one float64 reduction of the probabilities and only the chosen block is summed
cumulatively, instead of a float64 cumulative sum over the whole vocabulary. The draw is the
one-level inverse CDF's up to float64 rounding at a bin edge (tested equal over many draws), and
the sampled token's log-probability reuses the softmax the draw already computed.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .settings import EncodeSettings

BLOCK = 512  # tokens per block of the two-level inverse CDF (the 262,144-token vocabulary: 512 blocks)


def nucleus_probs(logits: torch.Tensor, settings: EncodeSettings) -> torch.Tensor:
    """softmax(logits / T) restricted to the top-p nucleus (not renormalised: sampling does not need
    it). Inside the nucleus each value is the full softmax's."""
    probs = torch.softmax(logits.float() / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(dim=-1) - sorted_p < settings.top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p * keep)
    return probs


def sample(logits: torch.Tensor, settings: EncodeSettings, gen: torch.Generator | None) -> torch.Tensor:
    """One token per row: the argmax, or a draw of the batch's one generator ``gen``."""
    if not settings.sample:
        return logits.argmax(dim=-1)
    return torch.multinomial(nucleus_probs(logits, settings), 1, generator=gen).squeeze(-1)


def _last_with_mass(p: torch.Tensor) -> torch.Tensor:
    """Per row, the index of the last entry > 0 (a draw at the very top edge lands there)."""
    return p.shape[-1] - 1 - (p.flip(-1) > 0).int().argmax(dim=-1)


def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The token whose CDF bin holds u * total mass, per row (u: [rows] in [0, 1)), in two levels:
    float64 block sums, then the cumulative sum of the chosen block only."""
    rows, v = probs.shape
    pad = (-v) % BLOCK
    p = torch.nn.functional.pad(probs, (0, pad)) if pad else probs
    blocks = p.view(rows, -1, BLOCK)
    block_sums = blocks.sum(-1, dtype=torch.float64)
    block_cdf = block_sums.cumsum(-1)
    target = u.to(torch.float64) * block_cdf[:, -1]
    b = torch.searchsorted(block_cdf, target.unsqueeze(1), right=True).squeeze(1)
    b = torch.minimum(b, _last_with_mass(block_sums))
    before = torch.where(b > 0, block_cdf.gather(1, (b - 1).clamp(min=0).unsqueeze(1)).squeeze(1), 0.0)
    chosen = blocks[torch.arange(rows, device=probs.device), b].double()
    inner = torch.searchsorted(chosen.cumsum(-1), (target - before).unsqueeze(1), right=True).squeeze(1)
    inner = torch.minimum(inner, _last_with_mass(chosen))
    return b * BLOCK + inner


def sample_rows(logits: torch.Tensor, settings: EncodeSettings, gens: Sequence[torch.Generator]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row, row j drawn with its own generator ``gens[j]``, and its log-probability
    under softmax(logits / T) (the untruncated distribution, read off the softmax the draw used:
    inside the nucleus its values are the full softmax's)."""
    probs = nucleus_probs(logits, settings)
    u = torch.tensor([float(torch.rand((), generator=g)) for g in gens], dtype=torch.float64, device=probs.device)
    tok = inverse_cdf(probs, u)
    return tok, torch.log(probs.gather(1, tok.unsqueeze(1)).squeeze(1))
