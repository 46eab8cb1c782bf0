"""Direct-forward (no rationale) embedding speed: the few-shot prefix run once per batch vs per text.

The Base row, the CL / SimCSE rows and Explore's direct-forward column embed P(x) without a
rationale; the `fewshot` prompt's ~120-token prefix is identical for every text. Embeds 200
WordNet definitions (the offline suite's texts) with the default model, float32, batch 32.

    python benchmarks/direct_forward.py [--texts 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _results import machine, report

from grace.evaluation.offline_tasks import build_task_data
from grace.model.embedding import embed_ids
from grace.model.encoder import GraceEncoder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=200)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    texts = build_task_data("full")["clustering"]["sentences"][:args.texts]
    enc = GraceEncoder.from_pretrained("default", device="cpu")
    enc.encode(texts[:4], rationale=False)  # warm-up
    t0 = time.perf_counter()
    shared = enc.encode(texts, rationale=False, batch_size=32)
    t_shared = time.perf_counter() - t0
    prompts = enc.build_prompts(texts)
    order = sorted(range(len(texts)), key=lambda i: len(prompts[i].ids))
    plain = np.zeros_like(shared)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(order), 32):
            idx = order[start:start + 32]
            out = embed_ids(enc.model, [prompts[i] for i in idx], [[] for _ in idx], pad_id=enc.pad_id)
            plain[idx] = out.embeddings.float().numpy()
    t_plain = time.perf_counter() - t0
    diff = float(np.abs(shared - plain).max())
    body = "\n".join([
        f"{len(texts)} WordNet definitions, default model, float32, batch 32, no rationale. Machine: {machine()}.", "",
        "| layout | seconds | texts/s |", "|---|---|---|",
        f"| prefix per text (plain left-padded batch) | {t_plain:.1f} | {len(texts) / t_plain:.1f} |",
        f"| prefix once per batch, keys/values shared (the encoder's path) | {t_shared:.1f} | "
        f"{len(texts) / t_shared:.1f} |", "",
        f"Shared / plain: **{t_plain / t_shared:.1f}x** (target: at least 10 texts/s). Largest difference "
        f"between the two embeddings: {diff:.1e}."])
    report("direct_forward", "Direct-forward speed", body, write=not args.no_write)


if __name__ == "__main__":
    main()
