"""What a GRACE training minute buys on the CPU: examples per minute and seconds per 1,000 rollout
tokens trained, for batch shapes measured in one run.

Shapes (B examples x K = 4 rollouts, 48 new tokens, LoRA rank 8, the sample triplets):
  B=2, 4 epochs     the shape before #19: 4 optimizer steps on the same 8 rollouts
  B=8, 1 epoch      the reference's shape at this scale: 32 rollouts and 8 anchors in one
                    generation pass, 4 optimizer steps on mini-batches of 2, each rollout once
  B=16, 1 epoch     twice as many rollouts per pass
"Seconds per 1,000 rollout tokens trained" counts each rollout token once per epoch. Run from the
repository root (after ``pip install -e .``):

    python benchmarks/train_speed.py [--steps 3] [--model default] [--dtype auto]
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

SHAPES = [("B=2, 4 epochs (before)", 2, 2, 4), ("B=8, 1 epoch", 8, 2, 1), ("B=16, 1 epoch", 16, 4, 1)]


def measure(model: str, steps: int, dtype: str | None, batch: int, mini: int, epochs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GraceConfig(data=str(SAMPLE_TRIPLETS), output=str(Path(tmp) / "run"), model=model,
                          steps=steps + 1, batch_size=batch, mini_batch_size=mini, updates_per_batch=epochs,
                          rollouts=4, max_new_tokens=48, lora_rank=8, sample_every=0, save_every=1000,
                          device="cpu", dtype=dtype)
        train(cfg)
        rows = [json.loads(line) for line in RunFolder(Path(tmp) / "run").metrics.read_text().splitlines()][1:]
    mean = {k: statistics.mean(r[k] for r in rows) for k in ("step_time", "time/generate", "time/backward",
                                                             "rationale_length", "rollout_tokens",
                                                             "optimizer_steps")}
    return {**mean, "examples_per_min": 60 * batch / mean["step_time"],
            "per_1k_trained": 1000 * mean["step_time"] / (mean["rollout_tokens"] * epochs), "steps": len(rows)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="measured steps per shape (after a warm-up step)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--dtype", default=None, help="float32 (default) or auto")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    results = []
    for label, batch, mini, epochs in SHAPES:
        t0 = time.perf_counter()
        r = measure(args.model, args.steps, args.dtype, batch, mini, epochs)
        r["label"] = label
        print(f"{label}: {r['step_time']:.1f} s/step, {r['examples_per_min']:.1f} examples/min, "
              f"{r['per_1k_trained']:.1f} s per 1,000 trained tokens ({time.perf_counter() - t0:.0f} s)", flush=True)
        results.append(r)
    lines = [f"GRACE training throughput, model {args.model}, dtype {args.dtype or 'float32'}, K=4, 48 new tokens, "
             f"LoRA rank 8, on the CPU. Machine: {machine()}.", "",
             "| shape | seconds per step | generating + rewards | policy updates | optimizer steps per step | "
             "mean response length | examples per minute | seconds per 1,000 rollout tokens trained |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['step_time']:.1f} | {r['time/generate']:.1f} s | {r['time/backward']:.1f} s "
                     f"| {r['optimizer_steps']:.0f} | {r['rationale_length']:.1f} tokens | "
                     f"{r['examples_per_min']:.1f} | {r['per_1k_trained']:.1f} |")
    before, default = results[0], results[1]
    lines += ["", f"Each row: mean of {args.steps} steps after a warm-up step, in one run. The default shape "
              f"(B=8, 1 epoch) sees {default['examples_per_min'] / before['examples_per_min']:.1f}x the examples "
              f"per minute of the shape before, and trains a rollout token in "
              f"{default['per_1k_trained'] / before['per_1k_trained']:.2f}x the time."]
    report("train_speed", "Training throughput", "\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
