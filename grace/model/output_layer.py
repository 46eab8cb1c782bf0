"""Log-probabilities of chosen tokens through the 262k-way output layer, a chunk of rows at a time.

``token_logprobs`` is what the policy loss needs (eq. 19's log pi(r_t | ...)): for each state h and
target token t, log softmax(cap(W h) / T)_t. Autograd through ``log_softmax(lm_logits(h))`` keeps
the [tokens, 262,144] logits and log-probabilities for the backward pass and reads them twice
more there. Here each chunk of rows computes its logits, their log-sum-exp and, when gradients
are wanted, the gradient of each row's log-probability with respect to its state,

    d log p_t / d h = (W^T ((e_t - p) * cap'(W h))) / T,                      (softmax's gradient)

so the backward pass is one multiplication by a [tokens, d] tensor and no [tokens, vocab] tensor
outlives its chunk. Only for a frozen output layer without bias (LoRA leaves it alone);
otherwise, and for states that need no gradient, it is the plain computation. Tested equal to
autograd's values and gradients.
"""

from __future__ import annotations

import torch

from .embedding import base_model, lm_logits

CHUNK_ROWS = 256  # rows per chunk: [256, 262,144] float32 logits are 268 MB


def _head(model: torch.nn.Module) -> tuple[torch.Tensor | None, float | None]:
    """The output layer's weight when it is frozen and has no bias (else None), and the soft-cap."""
    base = base_model(model)
    head = base.get_output_embeddings()
    cap = getattr(base.config.get_text_config(), "final_logit_softcapping", None)
    ok = isinstance(head, torch.nn.Linear) and head.bias is None and not head.weight.requires_grad
    return (head.weight if ok else None), (float(cap) if cap else None)


def _chunk(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float, cap: float | None,
           grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One chunk: each row's log-probability of its target and (``grad``) d log p / d h."""
    x = (h @ weight.T).float()  # the output layer, as lm_logits runs it
    if cap:
        squashed = torch.tanh(x / cap)
        z = squashed * cap / temperature
    else:
        z = x / temperature
    lse = torch.logsumexp(z, dim=-1)
    logp = z.gather(1, targets.unsqueeze(1)).squeeze(1) - lse
    if not grad:
        return logp, None
    coef = torch.exp(z - lse.unsqueeze(1)).neg_()  # -p
    coef.scatter_add_(1, targets.unsqueeze(1), torch.ones_like(logp).unsqueeze(1))  # e_t - p
    if cap:
        coef.mul_(1 - squashed * squashed)  # cap'(x) = 1 - tanh^2(x / cap)
    coef.div_(temperature)
    return logp, (coef.to(weight.dtype) @ weight).to(h.dtype)


class _TokenLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, states, weight, targets, temperature, cap):  # noqa: D102 (autograd's signature)
        parts, grads = [], []
        for i in range(0, states.shape[0], CHUNK_ROWS):
            lp, g = _chunk(states[i:i + CHUNK_ROWS], weight, targets[i:i + CHUNK_ROWS], temperature, cap, True)
            parts.append(lp)
            grads.append(g)
        ctx.save_for_backward(torch.cat(grads))
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        (d_states,) = ctx.saved_tensors
        return d_states * grad_out.to(d_states.dtype).unsqueeze(1), None, None, None, None


def token_logprobs(model: torch.nn.Module, states: torch.Tensor, targets: torch.Tensor,
                   temperature: float = 1.0) -> torch.Tensor:
    """log softmax(lm_logits(states) / T) at ``targets`` ([N, d] last-layer states, [N] token ids),
    float32; differentiable in ``states``."""
    weight, cap = _head(model)
    if weight is None or not (torch.is_grad_enabled() and states.requires_grad):
        if weight is None:  # a trained or biased output layer: autograd through the plain path
            logp = torch.log_softmax(lm_logits(model, states) / temperature, dim=-1)
            return logp.gather(1, targets.unsqueeze(1)).squeeze(1)
        return torch.cat([_chunk(states[i:i + CHUNK_ROWS], weight, targets[i:i + CHUNK_ROWS], temperature, cap,
                                 False)[0] for i in range(0, states.shape[0], CHUNK_ROWS)])
    return _TokenLogprobs.apply(states, weight, targets, temperature, cap)
