"""How many optimizer steps per batch of rollouts: the reward curve per minute of CPU.

Trains GRACE (supervised, the sample triplets, B=2, K=4, 48 new tokens, --dtype auto) for the same
wall-clock budget with 1, 2 and 4 updates per batch, and reports the mean reward of the rollouts
(R_positive, the query-to-rollout similarity, and the total reward) over the last third of each
run, with a PNG of the curves against time. Run from the repository root:

    python benchmarks/updates_per_batch.py [--minutes 6] [--updates 1 2 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from _results import machine, report

from grace.files.run_folder import RunFolder
from grace.training.config import GraceConfig
from grace.training.data import SAMPLE_TRIPLETS
from grace.training.trainer import train


def run(updates: int, minutes: float, model: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = GraceConfig(data=str(SAMPLE_TRIPLETS), output=str(Path(tmp) / "run"), model=model, steps=10_000,
                          batch_size=2, rollouts=4, sample_every=0, save_every=100_000, device="cpu",
                          dtype="auto", updates_per_batch=updates, max_minutes=minutes)
        train(cfg)
        return [json.loads(x) for x in RunFolder(Path(tmp) / "run").metrics.read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--updates", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--model", default="default")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    curves = {}
    lines = [f"GRACE supervised on the sample triplets, B=2, K=4, 48 new tokens, `--dtype auto`, "
             f"{args.minutes:g} minutes per setting. Machine: {machine()}.", "",
             "| updates per batch | steps in the budget | R_positive, first third | R_positive, last third | "
             "total reward, last third | clip fraction |", "|---|---|---|---|---|---|"]
    for u in args.updates:
        rows = run(u, args.minutes, args.model)
        curves[u] = rows
        n = len(rows)
        first, last = rows[: max(1, n // 3)], rows[-max(1, n // 3):]
        pos = lambda rs: statistics.mean(r["reward/positive"] for r in rs)  # noqa: E731
        line = (f"| {u} | {n} | {pos(first):.3f} | {pos(last):.3f} | "
                f"{statistics.mean(r['reward/total'] for r in last):+.2f} | "
                f"{statistics.mean(r['clip_fraction'] for r in rows):.3f} |")
        print(line, flush=True)
        lines.append(line)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for u, rows in curves.items():
        t, acc, ys = [], 0.0, []
        for r in rows:
            acc += r["step_time"]
            t.append(acc / 60)
            ys.append(r["reward/positive"])
        k = 5  # moving average over 5 steps
        smooth = [statistics.mean(ys[max(0, i - k + 1):i + 1]) for i in range(len(ys))]
        ax.plot(t, smooth, label=f"{u} update(s) per batch")
    ax.set_xlabel("training minutes (2 CPU cores)")
    ax.set_ylabel("R_positive (5-step moving mean)")
    ax.legend()
    fig.tight_layout()
    png = Path(__file__).with_name("updates_per_batch.png")
    fig.savefig(png, dpi=100)
    lines += ["", f"Curves: `benchmarks/{png.name}`. With B=2 every step sees different examples, so the "
              "curves are noisy; compare the last third."]
    body = "\n".join(lines)
    report("updates_per_batch", "Updates per batch of rollouts", body, write=not args.no_write)


if __name__ == "__main__":
    main()
