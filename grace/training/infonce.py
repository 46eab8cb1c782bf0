"""InfoNCE (eq. 1-2): the loss of the CL and SimCSE baselines, over the whole batch of every process."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from .distributed import gather_rows, with_local


def infonce(hq: torch.Tensor, hd: torch.Tensor, temperature: float) -> tuple[torch.Tensor, float]:
    """eq. 1-2: cross-entropy of sim(q_i, d_j) / tau with d_i the positive of q_i (the first
    ``len(hq)`` rows of ``hd``; the rest are negatives); and the in-batch accuracy."""
    logits = hq @ hd.T / temperature
    labels = torch.arange(hq.shape[0], device=logits.device)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    return loss, float((logits.argmax(1) == labels).float().mean())


def infonce_backward(accelerator, reduce: Callable[[torch.Tensor], torch.Tensor],
                     embed: Callable[[list[str]], torch.Tensor], batch: Sequence, method: str,
                     temperature: float) -> dict:
    """One backward pass of InfoNCE on this process's ``batch``: cl, each query against every
    positive and negative in the whole batch; simcse, two dropout views of each passage are
    positives. ``embed(texts)`` is the direct-forward embedding with gradients. Each process
    computes the whole batch's loss from the gathered embeddings, its own rows carrying the
    gradient, so the summed gradients are the whole batch's."""
    def whole(local: torch.Tensor) -> torch.Tensor:
        gathered, offset = gather_rows(accelerator, local)
        return with_local(gathered, local, offset)

    if method == "cl":
        negatives = [n for t in batch for n in t.negatives]
        hq = whole(embed([t.query for t in batch]))
        hd_local = embed([t.positive for t in batch] + negatives)
        parts = [whole(hd_local[:len(batch)])]  # positives first: query i's label is i
        if float(reduce(torch.tensor([float(len(negatives))], device=accelerator.device))) > 0:
            parts.append(whole(hd_local[len(batch):]))  # every process joins, with or without negatives
        hd = torch.cat(parts)
    else:
        hq, hd = whole(embed(list(batch))), whole(embed(list(batch)))  # dropout makes the views differ
    loss, accuracy = infonce(hq, hd, temperature)
    loss.backward()
    return {"loss": loss.item(), "acc": accuracy}
