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

For training (``Rows`` plan): greedy anchors and sampled rollouts share one pass (a per-row greedy
flag, each kind with its own logits processors), each sampled row draws from its own seeded
generator (so a row's rollout does not depend on which rows share its batch or process), and the
sampling step keeps each sampled token's log-probability: the old policy's (eq. 19's pi_old).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .embedding import (EmbedBatch, cache_keyword, common_prefix, decoder_body, distinct_prompts, fits_window,
                        lm_logits, pool_segments, shared_prefix_cache)
from .generation import RationaleNoRepeatNgram, RationaleRepetitionPenalty, _eos_ids, cut_rationale, left_pad
from .prompts import PromptIds
from .sampling import sample, sample_rows
from .settings import EncodeSettings


Forward = Callable[..., tuple[torch.Tensor, torch.Tensor]]  # (ids, attn, pos, cache) -> (states, logits)


@dataclass
class FastResult:
    rationales: list[list[int]]
    finished: list[bool]
    embed: EmbedBatch
    responses: list[list[int]]  # rationale + the tokens that ended it (EOS or the stop string)
    logprobs: list[torch.Tensor] | None = None  # per response token, sampled rows (``RowPlan.logprobs``)


@dataclass
class RowPlan:
    """How each row of one pass decodes (training: anchors and rollouts together).

    ``greedy[i]``: row i decodes greedily with ``greedy_settings``' processors; the others sample
    with the pass's settings. ``seeds[i]``: the seed of sampled row i's own generator. With
    ``logprobs`` each sampled row's response tokens get log softmax(logits / T) under the policy
    that sampled them, before any processor (the distribution the policy gradient scores)."""
    greedy: Sequence[bool]
    seeds: Sequence[int]
    greedy_settings: EncodeSettings
    logprobs: bool = True


def supports(model, prompts: Sequence[PromptIds], settings: EncodeSettings) -> bool:
    """The fast path needs a KV cache with batch selection and rows inside any sliding window."""
    longest = max(len(p.ids) for p in prompts) + settings.max_new_tokens + 1
    return common_prefix(prompts) > 0 and fits_window(model, longest)


def generate_and_embed(model, tokenizer, prompts: Sequence[PromptIds], settings: EncodeSettings, *,
                       stop_strings: Sequence[str] = (), keep_states: bool = False, fixed_length: bool = False,
                       on_token: Callable[[int, list[int]], None] | None = None,
                       plan: RowPlan | None = None) -> FastResult:
    """Rationales and embeddings (pooled as ``settings.pooling`` / ``settings.layer``) for one batch
    of prompts. ``fixed_length`` (benchmarks) always generates ``max_new_tokens``; ``plan`` decodes
    rows differently (training's anchors and rollouts; ``settings`` are the sampled rows').

    Four steps: ``_prefill`` runs the prompts (the shared prefix once), ``_decode`` generates while
    rows leave the batch as they end, ``_Rows.finish`` cuts the rationales, ``_pool`` pools the states
    that generation computed."""
    device = next(model.parameters()).device
    gen = None
    if settings.sample and settings.seed is not None:
        gen = torch.Generator(device=device).manual_seed(settings.seed)
    run = _forward(model, settings.layer)
    start = _prefill(model, tokenizer, prompts, run)
    stop_ids = _eos_ids(model, tokenizer) | ({tokenizer.pad_token_id} if tokenizer.pad_token_id is not None else set())
    rows = _Rows(len(prompts), tokenizer, stop_ids, stop_strings, fixed_length, on_token, settings.max_new_tokens)
    chooser = _PlannedChooser(plan, settings, device) if plan is not None else _Chooser(settings, gen)
    _decode(run, start, rows, chooser)
    rationales, finished, responses = rows.finish()
    embed = pool_segments(prompts, start.text_states, rows.states, rationales, tokenizer.pad_token_id,
                  pooling=settings.pooling, keep_states=keep_states)
    logprobs = None
    if plan is not None and plan.logprobs:
        logprobs = [torch.tensor(lp[:len(resp)], dtype=torch.float32) for lp, resp in zip(chooser.logprobs, responses)]
    return FastResult(rationales=rationales, finished=finished, responses=responses, embed=embed, logprobs=logprobs)


def _forward(model, layer: int) -> Forward:
    """``run(ids, attn, pos, cache)``: the decoder body over new tokens, extending ``cache``; the
    states of layer ``layer`` and the logits at the last position only."""
    body = decoder_body(model)
    want_all = layer != -1
    cache_kw = cache_keyword(body)

    def run(ids, attn, pos, cache):
        out = body(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True,
                   output_hidden_states=want_all, **{cache_kw: cache})
        states = out.hidden_states[layer] if want_all else out.last_hidden_state
        return states, lm_logits(model, out.last_hidden_state[:, -1])

    return run


@dataclass
class _Start:
    """The batch after its prompts were run: what decoding continues from."""
    cache: object
    attn: torch.Tensor  # [B, prefix + suffix width]
    next_pos: torch.Tensor  # [B] each row's next position id
    logits: torch.Tensor  # [B, vocab] at the last prompt position
    text_states: list[torch.Tensor]  # each row's states over its text tokens


def _prefill(model, tokenizer, prompts: Sequence[PromptIds], run: Forward) -> _Start:
    """1) the shared prefix, once (its KV cache repeated for the batch); 2) each distinct row's text +
    cue, right-aligned after it, with position ids that skip the padding in the middle; rows with
    the same prompt (a GRACE group's K rollouts) then copy that row's cache, logits and states."""
    device = next(model.parameters()).device
    unique, which = distinct_prompts(prompts)
    b = len(unique)
    n_pre = common_prefix(unique)
    cache = shared_prefix_cache(model, unique, n_pre)
    suffixes = [p.ids[n_pre:] for p in unique]
    ids, smask = left_pad(suffixes, tokenizer.pad_token_id, device)
    width = ids.shape[1]
    attn = torch.cat([torch.ones((b, n_pre), dtype=torch.long, device=device), smask], dim=1)
    pos = n_pre + smask.cumsum(-1) - 1
    states, logits = run(ids, attn, pos.clamp(min=0), cache)
    text_states = []
    for i, p in enumerate(unique):
        off = width - len(suffixes[i])
        text_states.append(states[i, off + p.text_start - n_pre: off + p.text_end - n_pre])
    if b < len(prompts):
        rows = torch.tensor(which, device=device)
        cache.batch_select_indices(rows)
        attn, pos, logits = attn[rows], pos[rows], logits[rows]
    return _Start(cache=cache, attn=attn, next_pos=pos[:, -1] + 1, logits=logits,
                  text_states=[text_states[u] for u in which])


class _Rows:
    """Each row's decoding: the tokens fed back (and their states), and how the row ended."""

    def __init__(self, b: int, tokenizer, stop_ids: set[int], stop_strings: Sequence[str], fixed_length: bool,
                 on_token: Callable[[int, list[int]], None] | None, max_new_tokens: int):
        self.tokenizer, self.stop_ids, self.stop_strings = tokenizer, stop_ids, stop_strings
        self.max_new_tokens = max_new_tokens
        self.fixed_length, self.on_token = fixed_length, on_token
        self.generated: list[list[int]] = [[] for _ in range(b)]
        self.states: list[list[torch.Tensor]] = [[] for _ in range(b)]
        self.done = [False] * b
        self.ended_by: list[int | None] = [None] * b  # the stop token that ended the row

    def accept(self, r: int, t: int) -> bool:
        """Record token ``t`` of row ``r``; whether the row goes on (and ``t`` is fed back)."""
        if t in self.stop_ids:
            self.done[r], self.ended_by[r] = True, t
            return False
        self.generated[r].append(t)
        if self.on_token is not None:
            self.on_token(r, list(self.generated[r]))
        if self.stop_strings and not self.fixed_length:
            text = self.tokenizer.decode(self.generated[r][-8:], skip_special_tokens=False)
            if any(s in text for s in self.stop_strings):
                # the rationale ends before the stop string, so every token it keeps has
                # already been fed (and has its state): the row can leave now
                self.done[r] = True
                return False
        return True

    def history(self, alive: list[int], device) -> torch.Tensor:
        """The alive rows' generated tokens, [alive, longest], right-padded (for the processors)."""
        pad = self.tokenizer.pad_token_id
        width = max(len(self.generated[r]) for r in alive)
        hist = torch.full((len(alive), width), pad, dtype=torch.long, device=device)
        for j, r in enumerate(alive):
            hist[j, :len(self.generated[r])] = torch.tensor(self.generated[r], device=device)
        return hist

    def finish(self) -> tuple[list[list[int]], list[bool], list[list[int]]]:
        """(rationales, finished, responses): a response is the rationale's tokens plus the stop
        token that ended it; rows still alive hit the length limit."""
        rationales, finished = [], []
        responses = [g + ([e] if e is not None else []) for g, e in zip(self.generated, self.ended_by)]
        for r, g in enumerate(self.generated):
            if self.fixed_length:
                ids_r, fin = g, False
            else:
                ids_r, fin = cut_rationale(g, self.tokenizer, set(), self.stop_strings)
                fin = fin or self.done[r]
            rationales.append(ids_r)
            finished.append(fin)
        return rationales, finished, responses


def _processors(settings: EncodeSettings) -> list:
    processors = []
    if settings.repetition_penalty and settings.repetition_penalty != 1.0:
        processors.append(RationaleRepetitionPenalty(0, settings.repetition_penalty))
    if settings.no_repeat_ngram:
        processors.append(RationaleNoRepeatNgram(0, settings.no_repeat_ngram))
    return processors


def _process(processors: list, rows: "_Rows", alive: list[int], logits: torch.Tensor) -> torch.Tensor:
    """The logits processors over the alive rows' generated tokens."""
    pad = rows.tokenizer.pad_token_id
    pad_col = logits[:, pad].clone()
    hist = rows.history(alive, logits.device)
    for proc in processors:
        logits = proc(hist, logits)
    # alive rows share one history length, so ``hist`` holds no padding today; should that
    # change, padding is not a token a row generated: undo what the processors did to the
    # pad id (it is the EOS id for some models, e.g. Qwen)
    logits[:, pad] = pad_col
    return logits


class _Chooser:
    """Every row decodes alike: greedy, or sampled with the batch's one generator."""

    def __init__(self, settings: EncodeSettings, gen: torch.Generator | None):
        self.settings, self.gen, self.processors = settings, gen, _processors(settings)

    def __call__(self, logits: torch.Tensor, rows: "_Rows", alive: list[int], step: int) -> torch.Tensor:
        if self.processors and step > 0:
            logits = _process(self.processors, rows, alive, logits)
        if rows.fixed_length and rows.stop_ids:
            logits[:, sorted(rows.stop_ids)] = float("-inf")
        return sample(logits, self.settings, self.gen)


class _PlannedChooser:
    """``RowPlan``: greedy rows and sampled rows in one batch, sampled ones with their own generators;
    keeps each sampled row's token log-probabilities (``logprobs[row]``)."""

    def __init__(self, plan: RowPlan, settings: EncodeSettings, device: torch.device):
        self.plan, self.settings = plan, settings
        self.greedy_proc, self.sample_proc = _processors(plan.greedy_settings), _processors(settings)
        self.gens = [torch.Generator().manual_seed(int(s)) for s in plan.seeds]  # on the CPU: one number per step
        self.logprobs: list[list[float]] = [[] for _ in plan.seeds]

    def __call__(self, logits: torch.Tensor, rows: "_Rows", alive: list[int], step: int) -> torch.Tensor:
        tok = torch.empty(len(alive), dtype=torch.long, device=logits.device)
        for greedy in (True, False):
            js = [j for j, r in enumerate(alive) if bool(self.plan.greedy[r]) == greedy]
            if not js:
                continue
            sel = torch.tensor(js, device=logits.device)
            sub = logits[sel]
            procs = self.greedy_proc if greedy else self.sample_proc
            processed = bool(procs) and step > 0
            raw = sub.clone() if processed and not greedy and self.plan.logprobs else sub
            if processed:
                sub = _process(procs, rows, [alive[j] for j in js], sub)
            if greedy:
                tok[sel] = sub.argmax(dim=-1)
                continue
            t, lp = sample_rows(sub, self.settings, [self.gens[alive[j]] for j in js])
            tok[sel] = t
            if self.plan.logprobs:  # eq. 19's pi_old: the policy's own distribution at temperature T
                if processed:  # the draw's softmax was of processed logits: not the policy's
                    lp = torch.log_softmax(raw.float() / self.settings.temperature, dim=-1).gather(
                        1, t.unsqueeze(1)).squeeze(1)
                for j, v in zip(js, lp.tolist()):
                    self.logprobs[alive[j]].append(v)
        return tok


def _decode(run: Forward, start: _Start, rows: _Rows, choose) -> None:
    """3) decode up to ``max_new_tokens``, dropping finished rows (and their cache rows), so one long
    rationale does not keep the finished ones computing. ``choose`` picks the alive rows' next
    tokens. The state of every token fed back is kept in ``rows`` (a row at the length limit had its
    last token fed in the final step)."""
    cache, attn, next_pos, logits = start.cache, start.attn, start.next_pos, start.logits
    device = attn.device
    alive = list(range(len(rows.done)))
    for step in range(rows.max_new_tokens):
        tok = choose(logits, rows, alive, step)
        keep = []
        for j, r in enumerate(alive):
            if rows.accept(r, int(tok[j])):
                keep.append(j)
        if not keep:
            return
        sel = torch.tensor(keep, device=device)
        if len(keep) < len(alive):
            cache.batch_select_indices(sel)
            attn, next_pos = attn[sel], next_pos[sel]
        alive = [alive[j] for j in keep]
        attn = torch.cat([attn, torch.ones((len(alive), 1), dtype=torch.long, device=device)], dim=1)
        st, logits = run(tok[sel].unsqueeze(1), attn, next_pos.unsqueeze(1), cache)
        for j, r in enumerate(alive):
            rows.states[r].append(st[j, 0])
        next_pos = next_pos + 1
