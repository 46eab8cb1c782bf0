"""The validation score over a GRACE run: train with every adapter version kept, then score the
untrained start and each saved adapter on WordNet's validation pool (resumable: a scored step is
not scored again). Writes the validation scores into the run folder (the app's Train tab and
``plot_run.py`` draw it) and a PNG of the rewards and the score against training minutes.

    python benchmarks/checkpoint_curve.py [--minutes 5] [--every 4] [--limit 40] [--set lr=3e-4 ...]
    python benchmarks/checkpoint_curve.py --run results/reproduce/runs/grace-sup   (an existing run)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings
from pathlib import Path

from reproduce import training_data

from grace.evaluation.cache import RationaleCache
from grace.evaluation.mteb_adapter import evaluate, resolve_tasks
from grace.files.run_folder import RunFolder
from grace.training.config import GraceConfig
from grace.training.trainer import train


def parse_sets(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        default = getattr(GraceConfig(data="-"), key)
        out[key] = type(default)(value) if not isinstance(default, bool) else value.lower() in ("1", "true")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--every", type=int, default=4, help="save (and later score) an adapter every N steps")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--set", nargs="*", default=[], help="GraceConfig overrides, key=value")
    ap.add_argument("--out", default="results/curve")
    ap.add_argument("--run", default=None, help="score this existing run's adapters instead of training one")
    ap.add_argument("--png", default="benchmarks/grace_validation_curve.png")
    args = ap.parse_args()
    out = Path(args.out)
    run = Path(args.run) if args.run else out / "run"
    out.mkdir(parents=True, exist_ok=True)
    if not args.run and not RunFolder(run).adapter.exists():
        triplets, _ = training_data(out)
        cfg = GraceConfig(data=str(triplets), output=str(run), steps=100_000, max_minutes=args.minutes,
                          save_every=args.every, keep_adapters=0, sample_every=0, device="cpu", seed=0,
                          **parse_sets(args.set))
        train(cfg)
    metrics = [json.loads(x) for x in RunFolder(run).metrics.read_text().splitlines() if x.strip()]
    minutes, acc = {0: 0.0}, 0.0
    for m in metrics:
        acc += m["step_time"]
        minutes[m["step"]] = acc / 60
    vpath = RunFolder(run).validation
    done = {json.loads(x)["step"] for x in vpath.read_text().splitlines() if x.strip()} if vpath.exists() else set()
    versions = [(0, None)] + RunFolder(run).adapter_versions()
    cfg = GraceConfig.load(RunFolder(run).config)
    for step, folder in versions:
        if step in done:
            continue
        settings = cfg.encode_settings().with_(adapter=str(folder) if folder else None, device="cpu")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = evaluate(settings, resolve_tasks("offline-validation", limit=args.limit),
                         cache=RationaleCache(out / "rationales.sqlite"))
        row = {"step": step, "minutes": minutes.get(step, 0.0), "average": r["average"], "categories": r["categories"]}
        with open(vpath, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        print(f"step {step} ({row['minutes']:.1f} min): validation average {100 * r['average']:.1f}", flush=True)
    subprocess.run([sys.executable, str(Path(__file__).with_name("plot_run.py")), str(run), args.png], check=True)


if __name__ == "__main__":
    main()
