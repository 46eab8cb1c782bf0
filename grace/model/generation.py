"""Batched rationale generation: r ~ pi_theta(. | P(x)) for many prompts at once.

Prompts are sorted by length and generated in left-padded batches with the KV cache; each
row stops at EOS or at the template's stop string, and the rationale keeps the token ids as
generated (no decode/re-encode drift). Repetition control looks at the rationale only: the
prompt's words (and a few-shot template's field names) are meant to be reused.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.streamers import BaseStreamer

from .prompts import PromptIds
from .settings import EncodeSettings


class RationaleRepetitionPenalty(LogitsProcessor):
    """CTRL-style repetition penalty applied only to tokens already in the rationale."""

    def __init__(self, prompt_width: int, penalty: float):
        self.prompt_width, self.penalty = prompt_width, penalty

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        gen = input_ids[:, self.prompt_width:]
        if gen.shape[1] == 0:
            return scores
        picked = torch.gather(scores, 1, gen)
        picked = torch.where(picked < 0, picked * self.penalty, picked / self.penalty)
        return scores.scatter(1, gen, picked)


class RationaleNoRepeatNgram(LogitsProcessor):
    """Forbid repeating any n-gram of the rationale (the prompt is not counted)."""

    def __init__(self, prompt_width: int, n: int):
        self.prompt_width, self.n = prompt_width, n

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        gen = input_ids[:, self.prompt_width:].tolist()
        n = self.n
        for row, toks in enumerate(gen):
            if len(toks) < n:
                continue
            prefix = tuple(toks[-(n - 1):]) if n > 1 else ()
            banned = [toks[i + n - 1] for i in range(len(toks) - n + 1) if tuple(toks[i:i + n - 1]) == prefix]
            if banned:
                scores[row, banned] = float("-inf")
        return scores


class _RowStreamer(BaseStreamer):
    """Forwards each step's new tokens to ``on_token(row, tokens_so_far)`` per input row."""

    def __init__(self, rows: Sequence[int], on_token: Callable[[int, list[int]], None], stop_ids: set[int]):
        self.rows, self.on_token, self.stop_ids = list(rows), on_token, stop_ids
        self.seen_prompt = False
        self.so_far: list[list[int]] = [[] for _ in self.rows]
        self.done = [False] * len(self.rows)

    def put(self, value: torch.Tensor) -> None:
        if not self.seen_prompt:  # the first call carries the prompt
            self.seen_prompt = True
            return
        for j, tok in enumerate(value.reshape(-1).tolist()):
            if tok in self.stop_ids:
                self.done[j] = True
            if not self.done[j]:
                self.so_far[j].append(tok)
                self.on_token(self.rows[j], list(self.so_far[j]))

    def end(self) -> None:
        pass


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, L] token ids padded on the left, and the attention mask (1 = a real token)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if len(s):
            ids[i, width - len(s):] = torch.tensor(list(s), dtype=torch.long)
            mask[i, width - len(s):] = 1
    return ids.to(device), mask.to(device)


def _eos_ids(model, tokenizer) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def cut_rationale(tokens: Sequence[int], tokenizer, stop_ids: set[int],
                  stop_strings: Sequence[str]) -> tuple[list[int], bool]:
    """Rationale ids up to (not including) the first EOS/pad or the start of a stop string,
    and whether the rationale finished (False: it hit the length limit)."""
    out: list[int] = []
    for t in tokens:
        if t in stop_ids:
            return _cut_at_stop_string(out, tokenizer, stop_strings)[0], True
        out.append(t)
    return _cut_at_stop_string(out, tokenizer, stop_strings)


def response_ids(tokens: Sequence[int], tokenizer, stop_ids: set[int], stop_strings: Sequence[str]) -> list[int]:
    """The generated tokens up to and including the one that ended the rationale: the EOS token,
    or the last token of a stop string. This is the response the policy loss trains (the decision
    to stop included, as the reference code's response mask does); a rationale that hit the length
    limit is all of its tokens."""
    out: list[int] = []
    for t in tokens:
        if t in stop_ids:
            return out + [t]
        out.append(t)
        if stop_strings and any(s in tokenizer.decode(out[-8:], skip_special_tokens=False) for s in stop_strings):
            return out
    return out


def _cut_at_stop_string(out: list[int], tokenizer, stop_strings: Sequence[str]) -> tuple[list[int], bool]:
    if not stop_strings or not out:
        return out, False
    text = tokenizer.decode(out, skip_special_tokens=False)
    hits = [text.find(s) for s in stop_strings if s and text.find(s) >= 0]
    if not hits:
        return out, False
    cut_at = min(hits)
    keep = 0
    for j in range(1, len(out) + 1):  # the longest prefix whose text ends before the stop
        if len(tokenizer.decode(out[:j], skip_special_tokens=False)) > cut_at:
            break
        keep = j
    return out[:keep], True


def generate_rationales(
    model: torch.nn.Module,
    tokenizer,
    prompts: Sequence[PromptIds],
    settings: EncodeSettings,
    *,
    stop_strings: Sequence[str] = (),
    fixed_length: bool = False,
    on_batch: Callable[[int], None] | None = None,
    on_token: Callable[[int, list[int]], None] | None = None,
    finished: list[bool] | None = None,
    responses: list[list[int]] | None = None,
) -> list[list[int]]:
    """Rationale token ids for each prompt, in input order. ``finished``, when given, is
    filled with whether each rationale ended (EOS or stop string) before the length limit.
    ``fixed_length`` (benchmarks) always generates ``max_new_tokens`` (no EOS or stop string).
    ``responses``, when given, is filled with each row's ``response_ids`` (what training scores).
    (Over 60 lines with its signature and these docs; the body, one batched decode loop, is ~45.)"""
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id
    stop_ids = _eos_ids(model, tokenizer) | ({pad_id} if pad_id is not None else set())
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].ids))
    result: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    resp: list[list[int]] = [[] for _ in prompts]
    for b, start in enumerate(range(0, len(order), settings.batch_size)):
        idx = order[start:start + settings.batch_size]
        ids, attn = left_pad([prompts[i].ids for i in idx], pad_id, device)
        width = ids.shape[1]
        processors = LogitsProcessorList()
        if settings.repetition_penalty and settings.repetition_penalty != 1.0:
            processors.append(RationaleRepetitionPenalty(width, settings.repetition_penalty))
        if settings.no_repeat_ngram:
            processors.append(RationaleNoRepeatNgram(width, settings.no_repeat_ngram))
        kwargs = dict(max_new_tokens=settings.max_new_tokens, do_sample=settings.sample,
                      pad_token_id=pad_id, eos_token_id=sorted(_eos_ids(model, tokenizer)),
                      logits_processor=processors)
        if settings.sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if fixed_length:
            kwargs["min_new_tokens"] = settings.max_new_tokens
        elif stop_strings:
            kwargs.update(stop_strings=list(stop_strings), tokenizer=tokenizer)
        if on_token is not None:
            kwargs["streamer"] = _RowStreamer(idx, on_token, stop_ids)
        if settings.seed is not None:
            torch.manual_seed(settings.seed + b)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=attn, **kwargs)
        new = out[:, width:].tolist()
        for j, i in enumerate(idx):
            if fixed_length:
                result[i] = resp[i] = new[j]
            else:
                result[i], done[i] = cut_rationale(new[j], tokenizer, stop_ids, stop_strings)
                resp[i] = response_ids(new[j], tokenizer, stop_ids, stop_strings)
        if on_batch is not None:
            on_batch(len(idx))
    if finished is not None:
        finished[:] = done
    if responses is not None:
        responses[:] = resp
    return result
