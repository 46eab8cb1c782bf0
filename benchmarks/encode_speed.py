"""Encode speed: the batched GraceEncoder vs a naive one-text-at-a-time ``generate`` loop.

Both generate exactly ``--new-tokens`` tokens per text (EOS and stop strings ignored) with the
same prompts, then embed; so tokens/s compare like with like. Run from the repository root:

    python benchmarks/encode_speed.py [--texts 32] [--new-tokens 64] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _results import machine, write_section  # noqa: E402
from sample_texts import TEXTS  # noqa: E402

from grace.encoder import GraceEncoder, embed_ids  # noqa: E402
from grace.generation import GenerationSettings  # noqa: E402


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


def batched(enc: GraceEncoder, texts: list[str], new_tokens: int, batch_size: int) -> float:
    settings = GenerationSettings(max_new_tokens=new_tokens, batch_size=batch_size, fixed_length=True)
    start = time.perf_counter()
    with torch.inference_mode():
        prompts = enc.build_prompts(texts)
        rats = enc.generate(prompts, settings)
        enc.embed(prompts, rats, batch_size=batch_size)
    assert all(len(r) == new_tokens for r in rats)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--model", default="default")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md as it is")
    args = ap.parse_args()
    texts = (TEXTS * (args.texts // len(TEXTS) + 1))[:args.texts]
    enc = GraceEncoder.from_pretrained(args.model, device="cpu")
    batched(enc, texts[:2], 4, 2)  # warm-up
    t_batch = batched(enc, texts, args.new_tokens, args.batch_size)
    t_naive = naive_loop(enc, texts, args.new_tokens)
    n_tok = len(texts) * args.new_tokens
    rows = [("naive loop (generate per text)", t_naive), (f"GraceEncoder (batch {args.batch_size})", t_batch)]
    lines = [f"Encode speed, {len(texts)} texts x {args.new_tokens} new tokens, model {args.model}, "
             f"float32, greedy. Machine: {machine()}.", "",
             "| method | seconds | texts/s | generated tokens/s |", "|---|---|---|---|"]
    for name, t in rows:
        lines.append(f"| {name} | {t:.1f} | {len(texts) / t:.2f} | {n_tok / t:.1f} |")
    lines += ["", f"Batched encoder / naive loop: **{t_naive / t_batch:.1f}x** (target: at least 4x)."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("encode_speed", "## Encode speed (`benchmarks/encode_speed.py`)\n\n" + body)


if __name__ == "__main__":
    main()
