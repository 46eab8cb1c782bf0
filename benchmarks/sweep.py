"""Short GRACE sweeps on the validation split: train a few minutes per setting, score on WordNet's
validation pool (never the test pool the table reports).

Each setting is a name and GraceConfig overrides; each finished setting is written to
``results/sweep/NAME.json`` at once and skipped on the next run (resumable). The untrained
reference (Base w/ reasoning) is scored on the same validation tasks.

    python benchmarks/sweep.py [--minutes 5] [--limit 40] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import machine, write_section  # noqa: E402
from reproduce import training_data  # noqa: E402

from grace.evaluation.cache import RationaleCache  # noqa: E402
from grace.evaluation.mteb_adapter import CATEGORY_ORDER, evaluate, resolve_tasks  # noqa: E402
from grace.model.settings import EncodeSettings  # noqa: E402
from grace.training.config import GraceConfig  # noqa: E402
from grace.training.trainer import train  # noqa: E402

# name -> GraceConfig overrides (None: the untrained reference)
SETTINGS = {
    "untrained": None,
    "lambda_hard=0.2": {"lambda_hard": 0.2},  # the released script's value (the default before this sweep)
    "lambda_hard=1": {"lambda_hard": 1.0},  # the default since
    "lambda_hard=1,lambda_cons=0": {"lambda_hard": 1.0, "lambda_consistency": 0.0},
    "lambda_hard=1,lr=3e-5": {"lambda_hard": 1.0, "lr": 3e-5},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--limit", type=int, default=40, help="cap on each validation task")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", default="results/sweep")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    triplets, _ = training_data(out)
    results = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    for name, over in SETTINGS.items():
        if (args.only and name not in args.only) or name in results:
            continue
        adapter, training = None, None
        if over is not None:
            cfg = GraceConfig(data=str(triplets), output=str(out / "runs" / name), steps=100_000,
                              max_minutes=args.minutes, sample_every=0, save_every=25, device="cpu", **over)
            t0 = time.perf_counter()
            res = train(cfg)
            adapter = str(res.adapter)
            training = {"steps": res.steps_done, "minutes": (time.perf_counter() - t0) / 60, "overrides": over}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = evaluate(EncodeSettings(adapter=adapter, device="cpu"),
                         resolve_tasks("offline-validation", limit=args.limit),
                         cache=RationaleCache(out / "rationales.sqlite"))
        r["training"], r["label"] = training, name
        (out / f"{name}.json").write_text(json.dumps(r, indent=1))
        results[name] = r
        print(f"{name}: validation average {100 * r['average']:.1f}", flush=True)
    cats = [c for c in CATEGORY_ORDER if any(c in r["categories"] for r in results.values())]
    lines = [f"GRACE supervised, {args.minutes:g} training minutes per setting on WordNet's training pool, scored "
             f"on the validation pool (capped at {args.limit} per task). Machine: {machine()}.", "",
             "| setting | " + " | ".join(cats) + " | Avg. | steps |", "|" + "---|" * (len(cats) + 3)]
    for name in SETTINGS:
        r = results.get(name)
        if r:
            t = r.get("training") or {}
            lines.append(f"| {name} | " + " | ".join(f"{100 * r['categories'][c]:.1f}" for c in cats) +
                         f" | {100 * r['average']:.1f} | {t.get('steps', '–')} |")
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("sweep", "## GRACE settings on the validation split (`benchmarks/sweep.py`)\n\n" + body)


if __name__ == "__main__":
    main()
