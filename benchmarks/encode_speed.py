"""Encode speed: the batched GraceEncoder vs a naive one-text-at-a-time ``generate`` loop.

Both generate exactly ``--new-tokens`` tokens per text (EOS and stop strings ignored) with the
same prompts and embed them; so tokens/s compare like with like. The encoder runs its default
path (grace.model.fastgen, float32). Run from the repository root:

    python benchmarks/encode_speed.py [--texts 32] [--new-tokens 64] [--batch-size 32]
"""

from __future__ import annotations

import argparse

from _results import machine, report
from _speed import encoder_run, naive_loop
from sample_texts import TEXTS

from grace.model.encoder import GraceEncoder


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
    encoder_run(enc, texts[:2], 4, 2, fast=True)  # warm-up
    t_batch, _ = encoder_run(enc, texts, args.new_tokens, args.batch_size, fast=True)
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
    report("encode_speed", "Encode speed", body, write=not args.no_write)


if __name__ == "__main__":
    main()
