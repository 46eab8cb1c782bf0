"""Reward components of a training run (and its validation score, where
``benchmarks/checkpoint_curve.py`` wrote one into the run folder) against training time, as a PNG.

    python benchmarks/plot_run.py results/reproduce/runs/grace-sup benchmarks/grace_sup_curves.png
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from grace.files.run_folder import RunFolder

KEYS = ["reward/positive", "reward/self", "reward/consistency", "reward/hard_negative", "rationale_length"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a run folder (with its metrics)")
    ap.add_argument("png")
    ap.add_argument("--smooth", type=int, default=5, help="moving mean over this many steps")
    args = ap.parse_args()
    rows = [json.loads(x) for x in RunFolder(args.run).metrics.read_text().splitlines() if x.strip()]
    if not rows:
        raise SystemExit(f"{args.run}: no metrics yet.")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, acc = [], 0.0
    for r in rows:
        acc += r["step_time"]
        t.append(acc / 60)
    keys = [k for k in KEYS if k in rows[0]]
    vpath = RunFolder(args.run).validation
    val = [json.loads(x) for x in vpath.read_text().splitlines() if x.strip()] if vpath.exists() else []
    fig, axes = plt.subplots(len(keys) + bool(val), 1, figsize=(7, 2.0 * (len(keys) + bool(val))), sharex=True)
    if val:
        ax = axes[-1]
        ax.plot([v["minutes"] for v in val], [100 * v["average"] for v in val], "o-", color="tab:green")
        ax.set_ylabel("validation avg.")
    for ax, k in zip(axes[:len(keys)], keys):
        ys = [r[k] for r in rows]
        n = args.smooth
        ax.plot(t, ys, alpha=0.3, color="tab:blue")
        ax.plot(t, [statistics.mean(ys[max(0, i - n + 1):i + 1]) for i in range(len(ys))], color="tab:blue")
        ax.set_ylabel(k.split("/")[-1].replace("_", " "))
    axes[-1].set_xlabel("training minutes (2 CPU cores)")
    fig.suptitle(f"{Path(args.run).name}: {len(rows)} steps", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.png, dpi=100)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
