"""Encode speed: the batched GraceEncoder vs a naive one-text-at-a-time ``generate`` loop, and
the encoder with the shipped adapter applied unmerged (a PeftModel: LoRA matmuls on q, k, v, o
at every step) and merged into the weights (what ``load_backbone`` does), in one run.

Every row generates exactly ``--new-tokens`` tokens per text (EOS and stop strings ignored) with
the same prompts and embeds them; so tokens/s compare like with like. The encoder runs its
default path (grace.model.fastgen, float32). Run from the repository root:

    python benchmarks/encode_speed.py [--texts 32] [--new-tokens 64] [--batch-size 32] [--no-naive]
"""

from __future__ import annotations

import argparse

from _results import machine, report
from _speed import encoder_run, naive_loop
from sample_texts import TEXTS

from grace.model.backbone import load_backbone
from grace.model.encoder import GraceEncoder
from grace.model.settings import EncodeSettings

ADAPTER = "grace-wordnet-sup"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--model", default="default")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive loop (minutes)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md as it is")
    args = ap.parse_args()
    texts = (TEXTS * (args.texts // len(TEXTS) + 1))[:args.texts]
    enc = GraceEncoder.from_pretrained(args.model, device="cpu")
    encoder_run(enc, texts[:2], 4, 2, fast=True)  # warm-up
    t_batch, _ = encoder_run(enc, texts, args.new_tokens, args.batch_size, fast=True)
    timed = {}
    for label, merge in (("unmerged", False), ("merged", True)):
        s = EncodeSettings(model=args.model, adapter=ADAPTER, device="cpu")
        adapted = GraceEncoder(load_backbone(args.model, adapter=ADAPTER, device="cpu", merge=merge), s)
        encoder_run(adapted, texts[:2], 4, 2, fast=True)  # warm-up
        timed[label], _ = encoder_run(adapted, texts, args.new_tokens, args.batch_size, fast=True)
    t_naive = None if args.no_naive else naive_loop(enc, texts, args.new_tokens)
    n_tok = len(texts) * args.new_tokens
    rows = ([("naive loop (generate per text)", t_naive)] if t_naive else []) + [
        (f"GraceEncoder (batch {args.batch_size}), no adapter", t_batch),
        (f"GraceEncoder, adapter {ADAPTER} unmerged (PeftModel)", timed["unmerged"]),
        (f"GraceEncoder, adapter {ADAPTER} merged (the default)", timed["merged"])]
    lines = [f"Encode speed, {len(texts)} texts x {args.new_tokens} new tokens, model {args.model}, "
             f"float32, greedy. Machine: {machine()}.", "",
             "| method | seconds | texts/s | generated tokens/s |", "|---|---|---|---|"]
    for name, t in rows:
        lines.append(f"| {name} | {t:.1f} | {len(texts) / t:.2f} | {n_tok / t:.1f} |")
    if t_naive:
        lines += ["", f"Batched encoder / naive loop: **{t_naive / t_batch:.1f}x** (target: at least 4x)."]
    lines += ["", f"With the adapter, in the same run: unmerged takes {timed['unmerged'] / t_batch:.2f}x the time "
              f"of no adapter, merged {timed['merged'] / t_batch:.2f}x (target: no measurable cost)."]
    body = "\n".join(lines)
    report("encode_speed", "Encode speed", body, write=not args.no_write)


if __name__ == "__main__":
    main()
