"""What a training minute buys on the CPU: GRACE's examples per minute against CL's, in one run.

Rows (the defaults: B=8 examples per step, K=4 rollouts, 48 new tokens, LoRA rank 8, the sample
triplets, float32):
  CL                InfoNCE on the direct forward pass (the baseline GRACE is compared with)
  GRACE             8 anchors and 32 rollouts in one generation pass, 4 optimizer steps on
                    mini-batches of 2, each rollout once
  GRACE, B=16       (``--all``) twice the rollouts per pass
The figure of issue #27 is GRACE's examples per minute / CL's (goal >= 0.35). "Seconds per 1,000
rollout tokens trained" counts each rollout token once. Run from the repository root (after
``pip install -e .``):

    python benchmarks/train_speed.py [--steps 3] [--model default] [--dtype auto] [--all]
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

GOAL = 0.35  # GRACE examples per minute / CL's (issue #27)
# label, method, B, mini-batch, max new tokens
ROWS = [("CL", "cl", 8, 2, 48), ("GRACE", "grace", 8, 2, 48)]
MORE = [("GRACE, 32 new tokens", "grace", 8, 2, 32), ("GRACE, B=16", "grace", 16, 4, 48)]


def measure(model: str, steps: int, dtype: str | None, method: str, batch: int, mini: int, tokens: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GraceConfig(data=str(SAMPLE_TRIPLETS), output=str(Path(tmp) / "run"), model=model, method=method,
                          steps=steps + 1, batch_size=batch, mini_batch_size=mini, rollouts=4,
                          max_new_tokens=tokens, lora_rank=8, sample_every=0, save_every=1000, device="cpu",
                          dtype=dtype)
        train(cfg)
        rows = [json.loads(line) for line in RunFolder(Path(tmp) / "run").metrics.read_text().splitlines()][1:]
    keys = ["step_time", "time/backward"] + (["time/generate", "rationale_length", "rollout_tokens",
                                              "truncation_rate"] if method == "grace" else [])
    mean = {k: statistics.mean(r[k] for r in rows) for k in keys}
    out = {**mean, "examples_per_min": 60 * batch / mean["step_time"], "steps": len(rows)}
    if method == "grace":
        out["per_1k_trained"] = 1000 * mean["step_time"] / mean["rollout_tokens"]
    return out


def _cell(r: dict, key: str, fmt: str) -> str:
    return format(r[key], fmt) if key in r else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="measured steps per row (after a warm-up step)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--dtype", default=None, help="float32 (default) or auto")
    ap.add_argument("--all", action="store_true", help="also 32 new tokens and B=16")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    results = []
    for label, method, batch, mini, tokens in ROWS + (MORE if args.all else []):
        t0 = time.perf_counter()
        r = measure(args.model, args.steps, args.dtype, method, batch, mini, tokens)
        r["label"] = label
        print(f"{label}: {r['step_time']:.1f} s/step, {r['examples_per_min']:.1f} examples/min "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
        results.append(r)
    cl, grace = results[0], results[1]
    ratio = grace["examples_per_min"] / cl["examples_per_min"]
    print(f"GRACE / CL examples per minute: {ratio:.3f} (goal >= {GOAL})")
    lines = [f"Training throughput, model {args.model}, dtype {args.dtype or 'float32'}, K=4, LoRA rank 8, on "
             f"the CPU. Machine: {machine()}.", "",
             "| row | seconds per step | generating + rewards | updates | mean response length | truncated | "
             "examples per minute | seconds per 1,000 rollout tokens |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['step_time']:.1f} | {_cell(r, 'time/generate', '.1f')} | "
                     f"{r['time/backward']:.1f} | {_cell(r, 'rationale_length', '.1f')} | "
                     f"{_cell(r, 'truncation_rate', '.1%')} | {r['examples_per_min']:.1f} | "
                     f"{_cell(r, 'per_1k_trained', '.1f')} |")
    lines += ["", f"Each row: mean of {args.steps} steps after a warm-up step, in one run. **GRACE / CL examples "
              f"per minute: {ratio:.3f}** (goal >= {GOAL}: {'met' if ratio >= GOAL else 'not met'})."]
    report("train_speed", "Training throughput", "\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
