"""Which GRACE supervised adapter ships: the shipped one and the final adapter of each seeded
reproduction run (``benchmarks/reproduce.py --seeds ...``), scored on WordNet's validation pool
(capped per task; never the test pool), in one run. Each score is written to
``results/reproduce/pick/NAME.json`` as it finishes and reused on the next run.

    python benchmarks/pick_adapter.py [--limit 40] [--runs results/reproduce/runs] [--test]

The winner is the adapter to pass to ``benchmarks/ship_adapter.py`` when it is not the shipped one;
``--test`` then scores the winner on the test pool (full size, as the reproduction's rows) and writes
``OUT/test-NAME.json`` in a reproduction row's format, for its model card.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from _results import machine, report, resumable_row

from grace.evaluation.cache import RationaleCache
from grace.evaluation.mteb_adapter import evaluate, resolve_tasks
from grace.model.backbone import shipped_adapters
from grace.model.settings import file_fingerprint
from grace.model.settings import EncodeSettings

SHIPPED = "grace-wordnet-sup"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--runs", default="results/reproduce/runs")
    ap.add_argument("--out", default="results/reproduce/pick")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--test", action="store_true", help="score the winner on the test pool for its model card")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shipped = str(shipped_adapters()[SHIPPED])
    # the shipped adapter's score is kept under its weights' hash: a newly shipped one is scored anew
    candidates = {f"shipped: {SHIPPED} ({file_fingerprint(shipped)[:8]})": shipped}
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
                                     file=name.replace(": ", "-").replace(" (", "-").rstrip(")"))
    best = max(scores, key=lambda n: scores[n]["average"])
    lines = [f"GRACE supervised adapters on WordNet's validation pool (capped at {args.limit} per task). "
             f"Machine: {machine()}.", "", "| adapter | " + " | ".join(scores[best]["categories"]) + " | Avg. |",
             "|" + "---|" * (len(scores[best]["categories"]) + 2)]
    for name, r in scores.items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in r["categories"].values()) +
                     f" | {100 * r['average']:.1f} |")
    lines += ["", f"Best on validation: **{best}**."]
    if args.test and not best.startswith("shipped"):
        lines += ["", test_row(best, candidates[best], out)]
    report("pick_adapter", "Which adapter ships", "\n".join(lines), write=not args.no_write)


def test_row(name: str, adapter: str, out: Path) -> str:
    """The winner on the test pool (full size), as a reproduction row (``OUT/test-NAME.json``)."""
    import json

    from grace.files.run_folder import RunFolder

    def score() -> dict:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = evaluate(EncodeSettings(adapter=adapter, device="cpu"), resolve_tasks("offline"),
                         cache=RationaleCache(out / "rationales.sqlite"))
        run = RunFolder(Path(adapter).parent)
        cfg = json.loads(run.config.read_text())
        steps = len(run.metric_rows())
        return {**r, "label": f"GRACE supervised ({name}, picked on validation)", "measured": machine(),
                "training": {"steps": steps, "examples_seen": steps * cfg["batch_size"],
                             "train_minutes": sum(m["step_time"] for m in run.metric_rows()) / 60, "config": cfg}}

    r = resumable_row(out, f"test-{name}", score, score="test average")
    return f"{name} on the test pool (full size): **{100 * r['average']:.1f}**."


if __name__ == "__main__":
    main()
