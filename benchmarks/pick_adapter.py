"""Which GRACE supervised adapter ships: the shipped one and the final adapter of each seeded
reproduction run (``benchmarks/reproduce.py --seeds ...``), scored on WordNet's validation pool
(capped per task; never the test pool), in one run. Each score is written to
``results/reproduce/pick/NAME.json`` as it finishes and reused on the next run.

    python benchmarks/pick_adapter.py [--limit 40]

The winner is the adapter to pass to ``benchmarks/ship_adapter.py`` when it is not the shipped one.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from _results import machine, report, resumable_row

from grace.evaluation.cache import RationaleCache
from grace.evaluation.mteb_adapter import evaluate, resolve_tasks
from grace.model.backbone import shipped_adapters
from grace.model.settings import EncodeSettings

SHIPPED = "grace-wordnet-sup"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--runs", default="results/reproduce/runs")
    ap.add_argument("--out", default="results/reproduce/pick")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    candidates = {f"shipped: {SHIPPED}": str(shipped_adapters()[SHIPPED])}
    for run in sorted(Path(args.runs).glob("grace-sup*")):
        if (run / "adapter").exists() and "lambda" not in run.name and "temp" not in run.name:
            candidates[run.name] = str(run / "adapter")
    scores = {}
    def score(adapter: str) -> dict:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = evaluate(EncodeSettings(adapter=adapter, device="cpu"),
                         resolve_tasks("offline-validation", limit=args.limit),
                         cache=RationaleCache(out / "rationales.sqlite"))
        return {**r, "measured": machine()}

    for name, adapter in candidates.items():
        scores[name] = resumable_row(out, name, lambda: score(adapter), score="validation average",
                                     file=name.replace(": ", "-"))
    best = max(scores, key=lambda n: scores[n]["average"])
    lines = [f"GRACE supervised adapters on WordNet's validation pool (capped at {args.limit} per task). "
             f"Machine: {machine()}.", "", "| adapter | " + " | ".join(scores[best]["categories"]) + " | Avg. |",
             "|" + "---|" * (len(scores[best]["categories"]) + 2)]
    for name, r in scores.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in r["categories"].values()) +
                     f" | {100 * r['average']:.1f} |")
    lines += ["", f"Best on validation: **{best}**."]
    report("pick_adapter", "Which adapter ships", "\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
