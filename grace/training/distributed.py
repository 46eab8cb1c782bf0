"""What one process of several (``accelerate launch``) needs of the others during a step.

Rewards and InfoNCE are defined over the whole batch, which the processes share out: each process
gathers the others' embeddings (and sums counts) so its rewards and its loss see the whole batch.
With one process every function here returns its input.
"""

from __future__ import annotations

import torch


def gather_rows(accelerator, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every process's rows of ``x`` (dim 0; processes may hold different numbers), in process
    order, on every process; and where this process's rows start. The others' rows carry no
    gradient: ``with_local`` puts this process's own (with its gradient) back in."""
    if accelerator.num_processes == 1:
        return x, 0
    counts = accelerator.gather(torch.tensor([x.shape[0]], device=x.device)).tolist()
    m = max(counts)
    padded = x.detach()
    if x.shape[0] < m:
        padded = torch.cat([padded, padded.new_zeros((m - x.shape[0], *x.shape[1:]))])
    everything = accelerator.gather(padded.contiguous())
    parts = [everything[i * m: i * m + c] for i, c in enumerate(counts)]
    rank = accelerator.process_index
    return torch.cat(parts), sum(counts[:rank])


def with_local(gathered: torch.Tensor, local: torch.Tensor, offset: int) -> torch.Tensor:
    """``gathered`` with this process's rows replaced by ``local`` (which carries the gradient)."""
    if gathered.shape[0] == local.shape[0]:
        return local
    return torch.cat([gathered[:offset], local, gathered[offset + local.shape[0]:]])


def summing(accelerator):
    """``reduce(t)``: ``t`` summed over processes (the identity with one)."""
    if accelerator.num_processes == 1:
        return lambda t: t
    return lambda t: accelerator.reduce(t.clone(), reduction="sum")
