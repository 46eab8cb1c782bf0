"""Seconds per GRACE step on CPU and where they go (generating, embedding, back-propagating).

Default: the embedded Gemma 3 270M, B=2, K=4, 48 new tokens, LoRA rank 8, on the sample
triplets; then the 20-step demo job's projected wall time. Run from the repository root:

    python benchmarks/train_speed.py [--steps 4] [--model default]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import machine, write_section  # noqa: E402

from grace.training.config import GraceConfig  # noqa: E402
from grace.training.data import SAMPLE_TRIPLETS  # noqa: E402
from grace.training.trainer import train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4, help="measured steps (the first is a warm-up)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GraceConfig(data=str(SAMPLE_TRIPLETS), output=str(Path(tmp) / "run"), model=args.model,
                          steps=args.steps + 1, batch_size=2, rollouts=4, max_new_tokens=48, lora_rank=8,
                          sample_every=0, save_every=1000, device="cpu")
        t0 = time.perf_counter()
        train(cfg)
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()][1:]
    mean = {k: statistics.mean(r[k] for r in rows) for k in ("step_time", "time/generate", "time/embed",
                                                             "time/backward", "rationale_length")}
    step = mean["step_time"]
    share = {k: mean[f"time/{k}"] / step for k in ("generate", "embed", "backward")}
    lines = [f"GRACE step time, model {args.model}, B=2, K=4, 48 new tokens, LoRA rank 8, float32 CPU. "
             f"Machine: {machine()}.", "",
             "| seconds per step | generating | embedding | back-propagating | other | mean rollout length |",
             "|---|---|---|---|---|---|",
             f"| {step:.1f} | {share['generate']:.0%} | {share['embed']:.0%} | {share['backward']:.0%} | "
             f"{1 - sum(share.values()):.0%} | {mean['rationale_length']:.1f} tokens |", "",
             f"Mean of {len(rows)} steps after a warm-up step; the whole run, model load included, took "
             f"{wall:.0f} s. A 20-step demo job projects to about {20 * step / 60 + 0.5:.1f} minutes "
             "(target: under 15)."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("train_speed", "## Training step time (`benchmarks/train_speed.py`)\n\n" + body)


if __name__ == "__main__":
    main()
