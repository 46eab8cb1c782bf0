"""One optimizer step under one process or several (``accelerate launch``).

Forward passes go through the PEFT model itself, not through the DDP wrapper (which could not reach
the decoder body the shared-prefix and generation paths call), so DDP's gradient hooks never fire:
the backward passes run under ``no_sync`` and the gradients are summed across processes here,
then clipped, and the step is taken. Summed, not averaged: each process's loss is its share of the
whole batch's loss (normalised by the whole batch's counts), so the sum is the whole batch's gradient
and one process or several take the same step.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch


class OptimizerStep:
    """``step(backward)``: run ``backward`` (one or more ``.backward()`` calls), sum the
    gradients across processes, clip them to ``max_grad_norm``, step and zero them; returns the
    gradient norm before clipping."""

    def __init__(self, accelerator, model: torch.nn.Module, params: Sequence[torch.nn.Parameter],
                 optimizer: torch.optim.Optimizer, max_grad_norm: float):
        self.accelerator, self.model, self.params = accelerator, model, list(params)
        self.optimizer, self.max_grad_norm = optimizer, max_grad_norm

    def __call__(self, backward: Callable[[], None]) -> float:
        with self.accelerator.no_sync(self.model):
            backward()
        if self.accelerator.num_processes > 1:
            self._sum_gradients()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def _sum_gradients(self) -> None:
        """One all-reduce (sum) of every gradient, flattened; a missing gradient counts as zero."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = self.accelerator.reduce(torch.cat([g.flatten() for g in grads]), reduction="sum")
        pos = 0
        for p, g in zip(self.params, grads):
            p.grad = flat[pos:pos + g.numel()].view_as(p).clone()
            pos += g.numel()
