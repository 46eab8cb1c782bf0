"""``grace train``: every option is a field of ``GraceConfig`` (through ``HfArgumentParser``)."""

from __future__ import annotations

import argparse
import sys

from ..training.config import GraceConfig
from .common import add_command, from_args


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..training.trainer import train

    cfg = from_args(GraceConfig, args)
    cfg.validate()
    bar = None

    def on_event(e: dict) -> None:
        nonlocal bar
        if e["event"] == "start":
            print(e["summary"], file=sys.stderr)
            bar = tqdm(total=e["steps"], initial=e["start_step"], desc=cfg.method_label, unit="step")
        elif e["event"] == "step":
            bar.update(1)
            keys = [k for k in e if k.startswith("reward/")] + ["loss"]
            parts = [f"{k.split('/')[-1]}={e[k]:+.3f}" for k in keys if k in e]
            bar.write(f"step {e['step']}: " + " ".join(parts) + f" ({e['step_time']:.1f}s)")
        elif e["event"] == "samples" and bar is not None:
            for s in e["samples"][:1]:
                bar.write(f"  probe @ step {e['step']}: {s['rationale'][:100]!r}")
        elif e["event"] == "end" and bar is not None:
            bar.close()

    result = train(cfg, overwrite=args.overwrite, callback=on_event)
    how = "stopped early" if result.stopped_early else "finished"
    print(f"{how} after {result.steps_done} steps; adapter in {result.adapter} "
          f"(use: grace encode --model {cfg.model} --adapter {result.adapter} ...)", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = add_command(sub, "train", help="fine-tune with GRACE, or the CL / SimCSE baselines (LoRA)", config=GraceConfig,
                    description="Train a LoRA adapter. GRACE treats contrastive similarity as a reward for "
                                "sampled rationales (policy gradient); cl and simcse are the paper's "
                                "contrastive baselines on the direct-forward embedding. Every option is a field "
                                "of GraceConfig, saved in the run folder.")
    p.add_argument("--overwrite", action="store_true", help="replace an output folder that holds a different run")
    p.set_defaults(func=run)
