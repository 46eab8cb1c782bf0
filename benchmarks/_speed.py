"""Timing helpers shared by the speed benchmarks (same prompts, greedy, fixed length)."""

from __future__ import annotations

import time

import torch

from grace.model.embedding import embed_ids
from grace.model.encoder import GraceEncoder
from grace.model.settings import EncodeSettings


def naive_loop(enc: GraceEncoder, texts: list[str], new_tokens: int) -> float:
    """What a user would write: one text at a time, generate, then a forward pass to pool."""
    start = time.perf_counter()
    for text in texts:
        p = enc.prompts.build(text)
        ids = torch.tensor([p.ids])
        with torch.inference_mode():
            out = enc.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                     max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                     pad_token_id=enc.pad_id)
            embed_ids(enc.model, [p], [out[0, len(p.ids):].tolist()], pad_id=enc.pad_id)
    return time.perf_counter() - start


def encoder_run(enc: GraceEncoder, texts, new_tokens, batch_size, fast: bool) -> tuple[float, list]:
    enc.fast = fast
    settings = EncodeSettings(max_new_tokens=new_tokens, batch_size=batch_size, repetition_penalty=1.0)
    t = time.perf_counter()
    with torch.inference_mode():
        prompts = enc.build_prompts(texts)
        if fast:
            _, rats = enc._encode_fast(prompts, settings, keep_states=False, on_batch=lambda n: None,
                                       on_token=None, fixed_length=True)
        else:
            rats = enc.generate(prompts, settings, fixed_length=True)
            enc.embed(prompts, rats, batch_size=batch_size)
    enc.fast = True
    assert all(len(r) == new_tokens for r in rats)
    return time.perf_counter() - t, rats
