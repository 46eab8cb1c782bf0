"""Seconds per GRACE step on CPU and where they go, float32 vs ``--dtype auto`` and one vs several
updates per batch of rollouts, measured in one run.

Default: the embedded Gemma 3 270M, B=2, K=4, 48 new tokens, LoRA rank 8, on the sample
triplets. Besides seconds per step it reports seconds per 1,000 rollout tokens *trained*
(rollout tokens x updates: what each configuration buys per second of CPU). Run from the
repository root:

    python benchmarks/train_speed.py [--steps 4] [--model default]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from _results import machine, report

from grace.files.run_folder import RunFolder
from grace.training.config import GraceConfig
from grace.training.data import SAMPLE_TRIPLETS
from grace.training.trainer import train

DEFAULT_UPDATES = GraceConfig.updates_per_batch


def measure(model: str, steps: int, dtype: str | None, updates: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GraceConfig(data=str(SAMPLE_TRIPLETS), output=str(Path(tmp) / "run"), model=model,
                          steps=steps + 1, batch_size=2, rollouts=4, max_new_tokens=48, lora_rank=8,
                          sample_every=0, save_every=1000, device="cpu", dtype=dtype, updates_per_batch=updates)
        t0 = time.perf_counter()
        train(cfg)
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in RunFolder(Path(tmp) / "run").metrics.read_text().splitlines()][1:]
    mean = {k: statistics.mean(r[k] for r in rows) for k in ("step_time", "time/generate", "time/backward",
                                                             "rationale_length")}
    trained_tokens = 2 * 4 * mean["rationale_length"] * updates
    return {**mean, "wall": wall, "per_1k_trained": 1000 * mean["step_time"] / trained_tokens,
            "dtype": dtype or "float32", "updates": updates, "steps": len(rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4, help="measured steps per configuration (after a warm-up step)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    configs = [(None, 1), (None, DEFAULT_UPDATES), ("auto", 1), ("auto", DEFAULT_UPDATES)]
    results = []
    for dtype, updates in configs:
        r = measure(args.model, args.steps, dtype, updates)
        print(f"dtype {r['dtype']}, {updates} update(s): {r['step_time']:.1f} s/step "
              f"(generate {r['time/generate']:.1f}, update {r['time/backward']:.1f})", flush=True)
        results.append(r)
    lines = [f"GRACE step time, model {args.model}, B=2, K=4, 48 new tokens, LoRA rank 8, on the CPU. "
             f"Machine: {machine()}.", "",
             "| dtype | updates per batch | seconds per step | generating + rewards | policy updates | "
             "mean response length | seconds per 1,000 rollout tokens trained |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['dtype']} | {r['updates']} | {r['step_time']:.1f} | {r['time/generate']:.1f} s | "
                     f"{r['time/backward']:.1f} s | {r['rationale_length']:.1f} tokens | {r['per_1k_trained']:.1f} |")
    base = results[0]["step_time"]
    lines += ["", f"Each row: mean of {args.steps} steps after a warm-up step, in one run. `auto` is "
              f"{base / results[2]['step_time']:.2f}x float32 per step at 1 update; "
              f"{DEFAULT_UPDATES} updates per batch cost {results[1]['step_time'] / base:.2f}x one update in "
              "float32 and train each rollout token that many times. Target: at most 10 s per step with "
              "`--dtype auto` and the default updates."]
    body = "\n".join(lines)
    report("train_speed", "Training step time", body, write=not args.no_write)


if __name__ == "__main__":
    main()
