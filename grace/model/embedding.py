"""The embedding function: (prompt ids, rationale ids) -> pooled, L2-normalised vectors (eq. 10-11).

``embed_ids`` (a forward pass of the decoder body) and ``pool_states`` (pooling of states that
the fast generation path collected) are the one embedding code path: the encoder, the trainer's
rewards and the evaluation adapter all end here. ``EncodeResult`` is what an encoded text carries
for attributions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .generation import left_pad
from .pooling import INSTRUCTION, PAD, RATIONALE, TEXT, check_pooling, pool, pool_mask
from .prompts import PromptIds

SEGMENT_NAMES = {INSTRUCTION: "instruction", TEXT: "text", RATIONALE: "rationale"}


@dataclass
class EncodeResult:
    """One encoded text, with what token attributions need.

    ``tokens``/``segments``/``token_states`` cover the text and rationale positions (the
    instruction is left out); ``pooled_mask`` marks those the pooling read; ``pooled`` is the
    un-normalised pooled vector and ``embedding`` its L2-normalised form.
    """

    text: str
    rationale: str
    tokens: list[str]
    segments: list[str]
    embedding: np.ndarray
    token_ids: list[int] = field(repr=False, default_factory=list)
    token_states: np.ndarray | None = field(repr=False, default=None)
    pooled_mask: np.ndarray | None = field(repr=False, default=None)
    pooled: np.ndarray | None = field(repr=False, default=None)
    pooling: str = "mean"
    rationale_ids: list[int] = field(repr=False, default_factory=list)
    truncated: bool = False


@dataclass
class EmbedBatch:
    """Output of ``embed_ids``: normalised embeddings [B, d] (torch, float32) and optionally
    per-row states of the non-instruction positions for attributions."""

    embeddings: torch.Tensor
    pooled: torch.Tensor
    details: list[dict] | None = None


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The causal LM under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_body(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer body without the LM head (hidden states, no 262k-way logits)."""
    return base_model(model).get_decoder()


def lm_logits(model: torch.nn.Module, states: torch.Tensor) -> torch.Tensor:
    """Float32 logits of the output layer for the given last-layer states, with the model's final
    soft-capping (Gemma) applied: only ever called on the positions that need them."""
    base = base_model(model)
    logits = base.get_output_embeddings()(states).float()
    cap = getattr(base.config.get_text_config(), "final_logit_softcapping", None)
    return torch.tanh(logits / cap) * cap if cap else logits


def segment_codes(prompts: Sequence[PromptIds], rationales: Sequence[Sequence[int]]) -> list[list[int]]:
    out = []
    for p, r in zip(prompts, rationales):
        codes = ([INSTRUCTION] * p.text_start + [TEXT] * (p.text_end - p.text_start)
                 + [INSTRUCTION] * (len(p.ids) - p.text_end) + [RATIONALE] * len(r))
        out.append(codes)
    return out


def common_prefix(prompts: Sequence[PromptIds]) -> int:
    """Length of the instruction prefix every prompt shares (never into a text)."""
    limit = min(p.text_start for p in prompts)
    first = prompts[0].ids
    n = 0
    while n < limit and all(p.ids[n] == first[n] for p in prompts):
        n += 1
    return n


def fits_window(model: torch.nn.Module, longest: int) -> bool:
    """Whether sequences of ``longest`` tokens stay inside the model's sliding window (the shared
    prefix layout puts padding in the middle of a row, which a window would count)."""
    window = getattr(base_model(model).config.get_text_config(), "sliding_window", None)
    return window is None or longest <= window


def cache_keyword(body: torch.nn.Module) -> str:
    """transformers renamed the decoder's past_key_values argument to cache; accept either."""
    import inspect

    return "cache" if "cache" in inspect.signature(type(body).forward).parameters else "past_key_values"


def shared_prefix_cache(model: torch.nn.Module, prompts: Sequence[PromptIds], n_pre: int):
    """A KV cache holding the first ``n_pre`` prompt tokens (shared by every prompt), computed once
    and repeated for the batch; gradients flow through it when enabled."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    body = decoder_body(model)
    cache = DynamicCache(config=base_model(model).config)
    pre = torch.tensor([list(prompts[0].ids[:n_pre])], device=device)
    body(input_ids=pre, position_ids=torch.arange(n_pre, device=device).unsqueeze(0), use_cache=True,
         **{cache_keyword(body): cache})
    cache.batch_repeat_interleave(len(prompts))
    return cache


@dataclass
class SequenceStates:
    """Hidden states over P(x_i) + c_i, left-padded to one width.

    With a shared prefix, that prefix's tokens are not among the positions (they are instruction
    tokens, never pooled or scored); ``states`` is layer ``layer``, ``last`` the last layer (what
    the output layer reads)."""

    states: torch.Tensor
    last: torch.Tensor
    segments: torch.Tensor
    ids: torch.Tensor


def forward_states(model: torch.nn.Module, prompts: Sequence[PromptIds], continuations: Sequence[Sequence[int]],
                   *, pad_id: int, layer: int = -1, share_prefix: bool = False) -> SequenceStates:
    """The decoder body over P(x_i) + c_i (no logits); gradients flow when enabled.

    ``share_prefix`` runs the instruction prefix every prompt shares (a few-shot template is ~120
    tokens) once, with gradients, and shares its keys and values across the batch: each row is
    [prefix | padding | text + cue + continuation] with the padding masked and position ids that
    skip it, so every row sees what the plain left-padded layout sees (tested equal)."""
    device = next(model.parameters()).device
    body = decoder_body(model)
    want_all = layer != -1
    rows = segment_codes(prompts, continuations)
    n_pre = common_prefix(prompts) if share_prefix else 0
    if n_pre and not fits_window(model, max(len(c) for c in rows) + 1):
        n_pre = 0
    kw: dict = {}
    if n_pre:
        kw = {cache_keyword(body): shared_prefix_cache(model, prompts, n_pre), "use_cache": True}
    seqs = [list(p.ids[n_pre:]) + list(c) for p, c in zip(prompts, continuations)]
    ids, attn = left_pad(seqs, pad_id, device)
    segments = torch.zeros_like(ids)
    for i, codes in enumerate(rows):
        codes = codes[n_pre:]
        segments[i, ids.shape[1] - len(codes):] = torch.tensor(codes, device=device)
    position_ids = (n_pre + attn.cumsum(-1) - 1).clamp(min=0)
    if n_pre:
        attn = torch.cat([torch.ones((len(prompts), n_pre), dtype=attn.dtype, device=device), attn], dim=1)
    else:
        kw = {"use_cache": False}
    out = body(input_ids=ids, attention_mask=attn, position_ids=position_ids, output_hidden_states=want_all, **kw)
    last = out.last_hidden_state
    return SequenceStates(states=out.hidden_states[layer] if want_all else last, last=last, segments=segments,
                          ids=ids)


def distinct_prompts(prompts: Sequence[PromptIds]) -> tuple[list[PromptIds], list[int]]:
    """The distinct prompts (by token ids, in order of first appearance) and each row's index
    among them: rows sharing a prompt (a GRACE group's K rollouts) run it once."""
    first: dict[tuple[int, ...], int] = {}
    which = [first.setdefault(tuple(p.ids), len(first)) for p in prompts]
    return [prompts[which.index(u)] for u in range(len(first))], which


@dataclass
class ResponseStates:
    """What ``response_states`` computed: the last-layer state predicting each response token
    ([sum of lengths, d], row after row), and with ``keep_layer`` each row's states of that layer
    over its text and over its response tokens (what ``pool_segments`` pools)."""

    predicting: torch.Tensor
    text: list[torch.Tensor] | None = None
    response: list[torch.Tensor] | None = None


def response_states(model: torch.nn.Module, prompts: Sequence[PromptIds], responses: Sequence[Sequence[int]],
                    *, pad_id: int, keep_layer: int | None = None) -> ResponseStates | None:
    """The decoder body over each prompt and its response, with each distinct prompt run once
    however many responses share it (a GRACE group's K rollouts share their positive's), the
    instruction prefix every prompt shares once too; gradients flow through the shared parts. The
    prompt's last position predicts a response's first token, its token j the next. Rows are
    [prefix | padding | prompt rest | response, right-padded]: the padding is masked and position
    ids skip it (tested equal to one row at a time). ``keep_layer``: also keep that layer's states
    over each text and each response (the last response token is then run too). None when the
    layout would not fit the model's sliding window (then ``forward_states`` is the way)."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    body = decoder_body(model)
    unique, which = distinct_prompts(prompts)
    n_pre = common_prefix(unique)
    suffixes = [p.ids[n_pre:] for p in unique]
    ids, smask = left_pad(suffixes, pad_id, device)
    fed = [list(r) if keep_layer is not None else list(r[:-1]) for r in responses]
    width = max([len(f) for f in fed] + [0])
    if not fits_window(model, n_pre + ids.shape[1] + width + 1):
        return None
    cache = shared_prefix_cache(model, unique, n_pre) if n_pre else DynamicCache(config=base_model(model).config)
    attn = torch.cat([torch.ones((len(unique), n_pre), dtype=torch.long, device=device), smask], dim=1)
    pos = n_pre + smask.cumsum(-1) - 1
    key, want_all = cache_keyword(body), keep_layer not in (None, -1)
    out = body(input_ids=ids, attention_mask=attn, position_ids=pos.clamp(min=0), use_cache=True,
               output_hidden_states=want_all, **{key: cache})
    prompt_last = out.last_hidden_state[:, -1]
    kept = (out.hidden_states[keep_layer] if want_all else out.last_hidden_state) if keep_layer is not None else None
    rows = torch.tensor(which, device=device)
    after = kept_after = None
    if width:
        cache.batch_select_indices(rows)
        rest = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
        rmask = torch.zeros_like(rest)
        for i, f in enumerate(fed):
            if f:
                rest[i, :len(f)] = torch.tensor(f, device=device)
                rmask[i, :len(f)] = 1
        rpos = pos[rows, -1:] + 1 + torch.arange(width, device=device)
        out2 = body(input_ids=rest, attention_mask=torch.cat([attn[rows], rmask], dim=1), position_ids=rpos,
                    use_cache=True, output_hidden_states=want_all, **{key: cache})
        after = out2.last_hidden_state
        if keep_layer is not None:
            kept_after = out2.hidden_states[keep_layer] if want_all else after
    parts = []
    for i, r in enumerate(responses):
        if len(r):
            parts.append(prompt_last[which[i]].unsqueeze(0))
        if len(r) > 1:
            parts.append(after[i, :len(r) - 1])
    result = ResponseStates(torch.cat(parts) if parts else prompt_last[:0])
    if keep_layer is not None:
        texts = []
        for u, p in enumerate(unique):
            off = ids.shape[1] - len(suffixes[u]) - n_pre
            texts.append(kept[u, off + p.text_start: off + p.text_end])
        result.text = [texts[u] for u in which]
        result.response = [kept_after[i, :len(r)] if kept_after is not None else kept[:0, 0] for i, r in
                           enumerate(responses)]
    return result


def embed_ids(
    model: torch.nn.Module,
    prompts: Sequence[PromptIds],
    rationales: Sequence[Sequence[int]],
    *,
    pad_id: int,
    pooling: str = "mean",
    layer: int = -1,
    keep_states: bool = False,
    share_prefix: bool = False,
) -> EmbedBatch:
    """Embeddings of P(x_i) + r_i: the single embedding code path (eq. 10-11).

    Runs the decoder body (no logits) over left-padded sequences with position ids that skip
    the padding, takes layer ``layer`` (-1 = last, after the final norm; -2 = penultimate, ...),
    pools with the mask of ``pooling`` and L2-normalises. Gradients flow when the caller
    has them enabled (the CL baseline trains through it; rewards call it under no_grad).
    ``share_prefix``: see ``forward_states`` (the trainer uses it; the result is the same).
    """
    check_pooling(pooling)
    fs = forward_states(model, prompts, rationales, pad_id=pad_id, layer=layer, share_prefix=share_prefix)
    return pool_states(fs.states, fs.segments, fs.ids, pooling=pooling, keep_states=keep_states)


def pool_segments(prompts: Sequence[PromptIds], text_states: Sequence[torch.Tensor],
                  rationale_states: Sequence[torch.Tensor | Sequence[torch.Tensor]],
                  rationales: Sequence[Sequence[int]], pad_id: int, *, pooling: str,
                  keep_states: bool = False) -> EmbedBatch:
    """Pool states collected piecewise (generation's, or the update's): row r is its text's states
    then the first len(rationales[r]) of ``rationale_states[r]`` (a [n, d] tensor or a list of [d]),
    left-padded with its segment codes and token ids, through ``pool_states``. Differentiable."""
    rows = []
    for r, (t, rat) in enumerate(zip(text_states, rationale_states)):
        n = len(rationales[r])
        part = rat[:n] if isinstance(rat, torch.Tensor) else (torch.stack(list(rat[:n])) if n else t[:0])
        rows.append(torch.cat([t, part.to(t.dtype)], dim=0))
    length = max(x.shape[0] for x in rows)
    device = rows[0].device
    states = torch.stack([torch.nn.functional.pad(x, (0, 0, length - x.shape[0], 0)) for x in rows])
    seg = torch.full((len(rows), length), PAD, dtype=torch.long, device=device)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long, device=device)
    for r, p in enumerate(prompts):
        n_t, n_r = text_states[r].shape[0], len(rationales[r])
        start = length - n_t - n_r
        seg[r, start:start + n_t], seg[r, start + n_t:] = TEXT, RATIONALE
        ids[r, start:] = torch.tensor(list(p.ids[p.text_start:p.text_end]) + list(rationales[r]), device=device)
    return pool_states(states, seg, ids, pooling=pooling, keep_states=keep_states)


def pool_states(states: torch.Tensor, segments: torch.Tensor, ids: torch.Tensor, *, pooling: str,
                keep_states: bool = False) -> EmbedBatch:
    """Pool [B, L, d] hidden states by their segment codes and L2-normalise (eq. 11); both the
    forward pass above and the generation-time states of ``fastgen`` end here."""
    mask = pool_mask(segments, pooling)
    pooled = pool(states, mask, pooling)
    embeddings = torch.nn.functional.normalize(pooled, dim=-1)
    details = None
    if keep_states:
        details = []
        keep = (segments == TEXT) | (segments == RATIONALE)
        for i in range(ids.shape[0]):
            k = keep[i]
            details.append({
                "ids": ids[i][k].tolist(),
                "segments": [SEGMENT_NAMES[c] for c in segments[i][k].tolist()],
                "states": states[i][k].detach().float().cpu().numpy(),
                "pooled_mask": mask[i][k].cpu().numpy(),
            })
    return EmbedBatch(embeddings=embeddings, pooled=pooled, details=details)
