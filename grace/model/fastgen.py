"""Fast rationale generation that also yields the embedding states (no second forward pass).

What it saves over ``model.generate`` + ``embed_ids``:
- the prompt's shared instruction prefix (a few-shot template is ~120 tokens) is run once and its
  KV cache is repeated for the batch, instead of once per text;
- finished rows leave the batch (their cache rows are dropped), so one long rationale does not
  keep 31 finished ones computing;
- generation already computes the last-layer state of every text token and of every rationale
  token it feeds back: those are kept and pooled, so the embedding needs no second pass over
  P(x) + r (only rationales that hit the length limit need one more step for their last token);
- logits only at the last position: the 262k-way output layer never runs over the prompt.

Rows are [prefix | padding | text + cue | rationale]; the padding in the middle is masked and the
position ids skip it, so every row sees exactly what the plain left-padded path sees. Greedy
rationales equal the plain path's and embeddings agree within float tolerance (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .embedding import (EmbedBatch, cache_keyword, common_prefix, decoder_body, fits_window, lm_logits, pool_states,
                        shared_prefix_cache)
from .generation import RationaleNoRepeatNgram, RationaleRepetitionPenalty, _eos_ids, cut_rationale, left_pad
from .pooling import PAD, RATIONALE, TEXT
from .prompts import PromptIds
from .settings import EncodeSettings


@dataclass
class FastResult:
    rationales: list[list[int]]
    finished: list[bool]
    embed: EmbedBatch
    responses: list[list[int]]  # rationale + the tokens that ended it (EOS or the stop string)


def supports(model, prompts: Sequence[PromptIds], settings: EncodeSettings) -> bool:
    """The fast path needs a KV cache with batch selection and rows inside any sliding window."""
    longest = max(len(p.ids) for p in prompts) + settings.max_new_tokens + 1
    return common_prefix(prompts) > 0 and fits_window(model, longest)


def _sample(logits: torch.Tensor, settings: EncodeSettings, gen: torch.Generator | None) -> torch.Tensor:
    if not settings.sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / settings.temperature, dim=-1)
    if settings.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        keep = sorted_p.cumsum(dim=-1) - sorted_p < settings.top_p
        sorted_p = sorted_p * keep
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def generate_and_embed(model, tokenizer, prompts: Sequence[PromptIds], settings: EncodeSettings, *,
                       stop_strings: Sequence[str] = (), keep_states: bool = False, fixed_length: bool = False,
                       on_token: Callable[[int, list[int]], None] | None = None) -> FastResult:
    """Rationales and embeddings (pooled as ``settings.pooling`` / ``settings.layer``) for one batch
    of prompts. ``fixed_length`` (benchmarks) always generates ``max_new_tokens``."""
    device = next(model.parameters()).device
    body = decoder_body(model)
    pooling, layer = settings.pooling, settings.layer
    want_all = layer != -1
    cache_kw = cache_keyword(body)
    stop_ids = _eos_ids(model, tokenizer) | ({tokenizer.pad_token_id} if tokenizer.pad_token_id is not None else set())
    b = len(prompts)
    gen = None
    if settings.sample and settings.seed is not None:
        gen = torch.Generator(device=device).manual_seed(settings.seed)

    def run(ids, attn, pos, cache):
        out = body(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True,
                   output_hidden_states=want_all, **{cache_kw: cache})
        states = out.hidden_states[layer] if want_all else out.last_hidden_state
        return states, lm_logits(model, out.last_hidden_state[:, -1])

    # 1) the shared prefix, once
    n_pre = common_prefix(prompts)
    cache = shared_prefix_cache(model, prompts, n_pre)
    # 2) each row's text + cue, right-aligned after the prefix
    suffixes = [p.ids[n_pre:] for p in prompts]
    ids, smask = left_pad(suffixes, tokenizer.pad_token_id, device)
    width = ids.shape[1]
    attn = torch.cat([torch.ones((b, n_pre), dtype=torch.long, device=device), smask], dim=1)
    pos = n_pre + smask.cumsum(-1) - 1
    states, logits = run(ids, attn, pos.clamp(min=0), cache)
    text_states = []
    for i, p in enumerate(prompts):
        off = width - len(suffixes[i])
        text_states.append(states[i, off + p.text_start - n_pre: off + p.text_end - n_pre])
    # 3) decode, dropping finished rows
    next_pos = pos[:, -1] + 1
    alive = list(range(b))
    generated: list[list[int]] = [[] for _ in range(b)]
    rat_states: list[list[torch.Tensor]] = [[] for _ in range(b)]
    done = [False] * b
    ended_by: list[int | None] = [None] * b
    processors = []
    if settings.repetition_penalty and settings.repetition_penalty != 1.0:
        processors.append(RationaleRepetitionPenalty(0, settings.repetition_penalty))
    if settings.no_repeat_ngram:
        processors.append(RationaleNoRepeatNgram(0, settings.no_repeat_ngram))
    for step in range(settings.max_new_tokens):
        if processors and step > 0:
            width_g = max(len(generated[r]) for r in alive)
            hist = torch.full((len(alive), width_g), tokenizer.pad_token_id, dtype=torch.long, device=device)
            for j, r in enumerate(alive):
                hist[j, :len(generated[r])] = torch.tensor(generated[r], device=device)
            pad_col = logits[:, tokenizer.pad_token_id].clone()
            for proc in processors:
                logits = proc(hist, logits)
            # alive rows share one history length, so ``hist`` holds no padding today; should that
            # change, padding is not a token a row generated: undo what the processors did to the
            # pad id (it is the EOS id for some models, e.g. Qwen)
            logits[:, tokenizer.pad_token_id] = pad_col
        if fixed_length and stop_ids:
            logits[:, sorted(stop_ids)] = float("-inf")
        tok = _sample(logits, settings, gen)
        keep = []
        for j, r in enumerate(alive):
            t = int(tok[j])
            if t in stop_ids:
                done[r], ended_by[r] = True, t
                continue
            generated[r].append(t)
            if on_token is not None:
                on_token(r, list(generated[r]))
            if stop_strings and not fixed_length:
                text = tokenizer.decode(generated[r][-8:], skip_special_tokens=False)
                if any(s in text for s in stop_strings):
                    # the rationale ends before the stop string, so every token it keeps has
                    # already been fed (and has its state): the row can leave now
                    done[r] = True
                    continue
            keep.append(j)
        if not keep:
            alive = []
            break
        sel = torch.tensor(keep, device=device)
        if len(keep) < len(alive):
            cache.batch_select_indices(sel)
            attn = attn[sel]
            next_pos = next_pos[sel]
        alive = [alive[j] for j in keep]
        last_tok = tok[sel].unsqueeze(1)
        attn = torch.cat([attn, torch.ones((len(alive), 1), dtype=torch.long, device=device)], dim=1)
        st, logits = run(last_tok, attn, next_pos.unsqueeze(1), cache)
        for j, r in enumerate(alive):
            rat_states[r].append(st[j, 0])
        next_pos = next_pos + 1
    # rows still alive hit the length limit: their last token was fed in the final step above
    rationales, finished = [], []
    responses = [generated[r] + ([ended_by[r]] if ended_by[r] is not None else []) for r in range(b)]
    for r in range(b):
        if fixed_length:
            ids_r, fin = generated[r], False
        else:
            ids_r, fin = cut_rationale(generated[r], tokenizer, set(), stop_strings)
            fin = fin or done[r]
        rationales.append(ids_r)
        finished.append(fin)
    # 4) pool the collected states through the shared pooling path
    rows = [torch.cat([text_states[r]] + [s.unsqueeze(0) for s in rat_states[r][:len(rationales[r])]], dim=0)
            for r in range(b)]
    length = max(x.shape[0] for x in rows)
    d = rows[0].shape[1]
    states_b = torch.zeros((b, length, d), dtype=rows[0].dtype, device=device)
    seg_b = torch.full((b, length), PAD, dtype=torch.long, device=device)
    ids_b = torch.full((b, length), tokenizer.pad_token_id, dtype=torch.long, device=device)
    for r in range(b):
        n_t, n_r = text_states[r].shape[0], len(rationales[r])
        start = length - n_t - n_r
        states_b[r, start:] = rows[r]
        seg_b[r, start:start + n_t] = TEXT
        seg_b[r, start + n_t:] = RATIONALE
        p = prompts[r]
        ids_b[r, start:] = torch.tensor(p.ids[p.text_start:p.text_end] + rationales[r], device=device)
    return FastResult(rationales=rationales, finished=finished, responses=responses,
                      embed=pool_states(states_b, seg_b, ids_b, pooling=pooling, keep_states=keep_states))
