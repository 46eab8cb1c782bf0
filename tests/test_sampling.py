"""The rollouts' two-level sampler draws what the one-level inverse CDF draws, and its
log-probability is the policy's log softmax."""

import torch

from grace.model.sampling import BLOCK, inverse_cdf, nucleus_probs, sample_rows
from grace.model.settings import EncodeSettings


def one_level(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The reference: a float64 cumulative sum over the whole vocabulary, searched once."""
    cdf = probs.double().cumsum(-1)
    tok = torch.searchsorted(cdf, (u.double() * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
    last = probs.shape[1] - 1 - (probs.flip(-1) > 0).int().argmax(dim=-1)
    return torch.minimum(tok, last)


def _logits(rows: int, vocab: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.5, 3.0, 8.0, 20.0]).repeat(rows // 4 + 1)[:rows].unsqueeze(1)  # flat to peaked
    return torch.randn(rows, vocab, generator=g) * scale


def test_two_level_draws_equal_the_one_level_inverse_cdf():
    vocab = 3 * BLOCK + 77  # not a whole number of blocks
    for top_p in (1.0, 0.9, 0.3):
        s = EncodeSettings(sample=True, temperature=0.7, top_p=top_p)
        probs = nucleus_probs(_logits(16, vocab, seed=int(top_p * 10)), s)
        for trial in range(40):
            u = torch.rand(16, generator=torch.Generator().manual_seed(trial), dtype=torch.float64)
            assert torch.equal(inverse_cdf(probs, u), one_level(probs, u))
        edges = torch.zeros(16, dtype=torch.float64)
        assert torch.equal(inverse_cdf(probs, edges), one_level(probs, edges))
        # just under 1 the two sums' float64 rounding (1e-16 of the mass) can exceed a peaked row's
        # whole tail, so each may pick another token of the tail: either has mass
        picked = inverse_cdf(probs, torch.full((16,), 1 - 1e-16, dtype=torch.float64))
        assert bool((probs.gather(1, picked.unsqueeze(1)) > 0).all())  # never a token outside the nucleus


def test_a_draw_at_a_block_edge_takes_the_next_blocks_first_token_with_mass():
    probs = torch.zeros(1, 2 * BLOCK)
    probs[0, 3], probs[0, BLOCK + 5] = 0.5, 0.5
    assert inverse_cdf(probs, torch.tensor([0.25], dtype=torch.float64)).item() == 3
    assert inverse_cdf(probs, torch.tensor([0.5], dtype=torch.float64)).item() == BLOCK + 5
    assert inverse_cdf(probs, torch.tensor([0.999], dtype=torch.float64)).item() == BLOCK + 5


def test_sample_rows_returns_the_policys_log_probability_and_follows_each_rows_generator():
    s = EncodeSettings(sample=True, temperature=0.7, top_p=1.0)
    logits = _logits(8, 2 * BLOCK + 3, seed=3)
    gens = [torch.Generator().manual_seed(100 + i) for i in range(8)]
    tok, lp = sample_rows(logits, s, gens)
    want = torch.log_softmax(logits / 0.7, dim=-1).gather(1, tok.unsqueeze(1)).squeeze(1)
    assert torch.allclose(lp, want, atol=1e-5)
    # row 5 alone, with a fresh generator of the same seed, draws the same token
    alone, _ = sample_rows(logits[5:6], s, [torch.Generator().manual_seed(105)])
    assert alone.item() == tok[5].item()
