"""Sweeps on the validation split: score untrained encoder settings and short GRACE runs on WordNet's
validation pool (never the test pool the table reports).

Each setting is a name, GraceConfig overrides (None: untrained) and EncodeSettings overrides. The
untrained rows search for the strongest "Base w/ reasoning" (prompt, length, decoding, pooling
split, layer); the trained rows tune the trainer. Each finished setting is written to
``results/sweep/NAME.json`` at once and skipped on the next run (resumable).

    python benchmarks/sweep.py [--minutes 4] [--limit 40] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

from _results import machine, report, resumable_row
from reproduce import training_data

from grace.evaluation.cache import RationaleCache
from grace.evaluation.mteb_adapter import CATEGORY_ORDER, evaluate, resolve_tasks
from grace.model.settings import EncodeSettings
from grace.training.config import GraceConfig
from grace.training.trainer import train

# name -> (GraceConfig overrides or None for an untrained row, EncodeSettings overrides).
# Encode overrides apply to the training run as well (its rollouts use the same prompt, length,
# pooling and layer), so a trained row is scored the way it was trained.
TRAIN_OF_ENCODE = ("prompt", "max_new_tokens", "pooling", "layer")
SETTINGS: dict[str, tuple[dict | None, dict]] = {
    # -- untrained: the search for the strongest "Base w/ reasoning" (issue #12, item 3)
    "untrained": (None, {}),
    "untrained,prompt=think,len=96": (None, {"prompt": "think", "max_new_tokens": 96}),
    "untrained,prompt=paper": (None, {"prompt": "paper"}),
    "untrained,prompt=keywords": (None, {"prompt": "keywords"}),
    "untrained,len=24": (None, {"max_new_tokens": 24}),
    "untrained,len=96": (None, {"max_new_tokens": 96}),
    "untrained,sampled": (None, {"sample": True, "seed": 0}),
    "untrained,repetition=1.0": (None, {"repetition_penalty": 1.0}),
    "untrained,no-repeat-3gram": (None, {"no_repeat_ngram": 3}),
    "untrained,pooling=text-mean": (None, {"pooling": "text-mean"}),
    "untrained,pooling=rationale-mean": (None, {"pooling": "rationale-mean"}),
    "untrained,layer=-2": (None, {"layer": -2}),
    # -- GRACE supervised (items 4 and 6)
    "lambda_hard=0.2": ({"lambda_hard": 0.2}, {}),  # the released script's value (the default before)
    "lambda_hard=1": ({"lambda_hard": 1.0}, {}),  # the default since
    "lambda_hard=1,lambda_cons=0": ({"lambda_hard": 1.0, "lambda_consistency": 0.0}, {}),
    "lambda_hard=1,lr=3e-4": ({"lambda_hard": 1.0, "lr": 3e-4}, {}),
    "lambda_hard=1,rollout_temp=0.7": ({"lambda_hard": 1.0, "sampling_temperature": 0.7}, {}),
    "lambda_hard=1,K=8": ({"lambda_hard": 1.0, "rollouts": 8}, {}),
    "lambda_hard=1,reward_temp=0.05": ({"lambda_hard": 1.0, "reward_temperature": 0.05}, {}),
    "lambda_hard=1,rollout_temp=0.7,lambda_cons=0": ({"lambda_hard": 1.0, "sampling_temperature": 0.7,
                                                     "lambda_consistency": 0.0}, {}),
    # -- the batch shape of #19 (B=8, mini-batches of 2, each rollout once) and what a rollout that
    # hits the length limit does to its group; every other setting is GraceConfig's default
    "B=8,truncation=penalty": ({"truncation": "penalty"}, {}),  # the reference's rule
    "B=8,truncation=finished-mean": ({"truncation": "finished-mean"}, {}),
    "B=8,truncation=mask": ({"truncation": "mask"}, {}),
    "B=8,truncation=penalty,len=96": ({"truncation": "penalty"}, {"max_new_tokens": 96}),
    # -- an objective that keeps learning (#27, item 3): each against the defaults, 2 seeds each
    **{f"#27 {name},seed={seed}": ({**over, "seed": seed}, enc) for seed in (0, 1) for name, (over, enc) in {
        "defaults": ({}, {}),
        "lambda_hard=0": ({"lambda_hard": 0.0}, {}),  # the reference's effective supervised reward
        "advantage=group-std": ({"advantage_scale": "group-std"}, {}),
        # a method beside the paper's, never reported as GRACE
        "GRACE + InfoNCE weight=0.1": ({"contrastive_weight": 0.1}, {}),
        "epochs=2": ({"updates_per_batch": 2}, {}),
        "rollout_temp=0.5": ({"sampling_temperature": 0.5}, {}),  # closer to greedy inference
        "cut=sequence-mean": ({"cut_rollout_loss": "sequence-mean"}, {}),
        "lora=attention+mlp": ({"lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"]}, {}),
        "len=32": ({}, {"max_new_tokens": 32}),  # the decode tail: trained and scored at 32 tokens
        "GRACE + InfoNCE weight=0.01": ({"contrastive_weight": 0.01}, {}),
    }.items()},
}


def run_setting(name: str, train_over: dict | None, encode_over: dict, args, out: Path, triplets: Path) -> dict:
    adapter, training = None, None
    if train_over is not None:
        shared = {k: v for k, v in encode_over.items() if k in TRAIN_OF_ENCODE}
        cfg = GraceConfig(data=str(triplets), output=str(out / "runs" / name), steps=100_000,
                          max_minutes=args.minutes, sample_every=0, save_every=25, device="cpu",
                          **{**shared, **train_over})
        t0 = time.perf_counter()
        res = train(cfg)
        adapter = str(res.adapter)
        training = {"steps": res.steps_done, "minutes": (time.perf_counter() - t0) / 60, "overrides": train_over}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = evaluate(EncodeSettings(adapter=adapter, device="cpu").with_(**encode_over),
                     resolve_tasks("offline-validation", limit=args.limit),
                     cache=RationaleCache(out / "rationales.sqlite"))
    r["training"], r["label"], r["encode_overrides"] = training, name, encode_over
    r["measured"] = machine()
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=4.0, help="training budget of each trained setting")
    ap.add_argument("--limit", type=int, default=40, help="cap on each validation task")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", default="results/sweep")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    triplets, _ = training_data(out)
    results = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    for name, (train_over, encode_over) in SETTINGS.items():
        if (args.only and name not in args.only) or name in results:
            continue
        results[name] = resumable_row(out, name, lambda: run_setting(name, train_over, encode_over, args, out,
                                                                     triplets), score="validation average")
    cats = [c for c in CATEGORY_ORDER if any(c in r["categories"] for r in results.values())]
    lines = [f"Untrained settings, and GRACE supervised with {args.minutes:g} training minutes per setting on "
             f"WordNet's training pool; all scored on the validation pool (capped at {args.limit} per task). "
             f"Each row says where and when it was measured; rows marked *earlier* were measured before the "
             f"batch shape of #19 (B=2, 4 updates per batch), on the machine and date of the commit that added "
             f"them. This run: {machine()}.", "",
             "| setting | " + " | ".join(cats) + " | Avg. | steps | eval min | measured |",
             "|" + "---|" * (len(cats) + 5)]
    extra = sorted(set(results) - set(SETTINGS))  # kept records of earlier runs, shown as measured
    for name in list(SETTINGS) + extra:
        r = results.get(name)
        if r:
            t = r.get("training") or {}
            lines.append(f"| {name} | " + " | ".join(f"{100 * r['categories'][c]:.1f}" for c in cats) +
                         f" | {100 * r['average']:.1f} | {t.get('steps', '–')} | {r['wall_seconds'] / 60:.1f} | "
                         f"{r.get('measured', '*earlier*')} |")
    body = "\n".join(lines)
    report("sweep", "Settings on the validation split", body, write=not args.no_write)


if __name__ == "__main__":
    main()
