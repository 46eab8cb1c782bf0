"""Pooling hidden states into one vector per sequence (eq. 10-11) and the masks it uses.

The mask says which positions are pooled: text and rationale tokens (``mean``, the paper's
default), only the rationale (``rationale-mean``), only the text (``text-mean``), the last
token (``last``, EOS-style) or an element-wise ``max`` over text and rationale.
"""

from __future__ import annotations

import torch

POOLINGS = ("mean", "rationale-mean", "text-mean", "last", "max")

# segment codes in the per-position segment tensor
PAD, INSTRUCTION, TEXT, RATIONALE = 0, 1, 2, 3


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"Unknown pooling {pooling!r}: use one of {', '.join(POOLINGS)}.")
    return pooling


def pool_mask(segments: torch.Tensor, pooling: str) -> torch.Tensor:
    """Boolean [B, L] mask of the positions a pooling reads (``segments`` holds the codes above)."""
    check_pooling(pooling)
    if pooling == "rationale-mean":
        mask = segments == RATIONALE
    elif pooling == "text-mean":
        mask = segments == TEXT
    else:
        # eq. 11: every non-padding position after the instruction, t in (L_sys, L]
        mask = (segments == TEXT) | (segments == RATIONALE)
    if pooling == "last":
        # the last pooled position of each row (sequences are left-padded, so it is the final one)
        idx = torch.arange(segments.shape[1], device=segments.device).expand_as(segments)
        last = torch.where(mask, idx, torch.full_like(idx, -1)).max(dim=1).values
        mask = idx == last.unsqueeze(1)
    empty = ~mask.any(dim=1)
    if bool(empty.any()):
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(f"Nothing to pool with {pooling!r} for row(s) {rows} (e.g. an empty rationale).")
    return mask


def pool(states: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Un-normalised pooled vector per row from [B, L, d] states and a [B, L] mask."""
    states = states.float()
    m = mask.unsqueeze(-1)
    if pooling == "max":
        return states.masked_fill(~m, float("-inf")).max(dim=1).values
    # eq. 11: h = mean_{t in M} E_t  (for "last", M holds one position)
    return (states * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
