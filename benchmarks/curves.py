"""GRACE supervised and CL as curves: the validation score after 0, 5, 10 and 20 training minutes,
per seed, instead of one point at one budget (issue #27, item 2).

Each (method, seed) trains once for the longest mark with every adapter version kept (GRACE saves
each step, CL every 4), on WordNet's training pool with the defaults. A mark's score is that of the
last version whose cumulative step time is within the mark (model load and saving not counted).
Scored on the validation pool, capped at ``--limit`` per task; GRACE with its rationales, CL on
the direct forward it trains. Resumable: each trained run and each scored point is kept under
``results/curves/`` and not redone. Writes the table to RESULTS.md, a PNG beside it and an
interactive plotly page to docs/.

    python benchmarks/curves.py [--marks 5 10 20] [--seeds 0 1] [--limit 40] [--only grace|cl]
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings
from pathlib import Path

from _results import machine, report
from reproduce import training_data

from grace.evaluation.cache import RationaleCache
from grace.evaluation.mteb_adapter import evaluate, resolve_tasks
from grace.files.run_folder import RunFolder
from grace.model.settings import EncodeSettings
from grace.training.config import GraceConfig
from grace.training.trainer import train

METHODS = {"grace": "GRACE supervised", "cl": "CL (supervised)"}
SAVE_EVERY = {"grace": 1, "cl": 4}
PNG = Path(__file__).with_name("validation_curves.png")
HTML = Path(__file__).parents[1] / "docs" / "validation_curves.html"


def trained_minutes(folder: RunFolder) -> float:
    """The run's cumulative step time so far, in minutes (0 when it has not started)."""
    if not folder.metrics.exists():
        return 0.0
    return sum(json.loads(x)["step_time"] for x in folder.metrics.read_text().splitlines() if x.strip()) / 60


def run_for(method: str, seed: int, minutes: float, out: Path, triplets: Path) -> RunFolder:
    """Train (or find) the run of ``method`` with ``seed`` until ``minutes`` of step time, every
    version kept. A run cut short (a session that ended, a crash) resumes from its last checkpoint
    for the minutes it still lacks; one within a minute of the target counts as done."""
    folder = RunFolder(out / "runs" / f"{method}-seed{seed}")
    lacking = minutes - trained_minutes(folder)
    if lacking > 1.0 or not folder.adapter.exists():
        cfg = GraceConfig(method=method, data=str(triplets), output=str(folder.path), steps=100_000,
                          max_minutes=lacking + 0.5, save_every=SAVE_EVERY[method], keep_adapters=0, sample_every=0,
                          device="cpu", seed=seed)
        train(cfg)  # max_minutes may change on a resume; anything else would be refused
    return folder


def version_at(folder: RunFolder, minute: float) -> tuple[int, Path | None, float]:
    """The last adapter version whose cumulative step time is within ``minute`` (step 0: untrained)."""
    metrics = [json.loads(x) for x in folder.metrics.read_text().splitlines() if x.strip()]
    elapsed, at = 0.0, {0: 0.0}
    for m in metrics:
        elapsed += m["step_time"]
        at[m["step"]] = elapsed / 60
    best = (0, None, 0.0)
    for step, path in folder.adapter_versions():
        if at.get(step, float("inf")) <= minute + 1e-9:
            best = (step, path, at[step])
    return best


def score(method: str, adapter: Path | None, limit: int, out: Path) -> dict:
    settings = EncodeSettings(adapter=str(adapter) if adapter else None, rationale=method == "grace", device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate(settings, resolve_tasks("offline-validation", limit=limit),
                        cache=RationaleCache(out / "rationales.sqlite"))


def point(method: str, seed: int, mark: float, args, out: Path, triplets: Path) -> dict:
    # the untrained start is one point for every seed (greedy rationales: nothing random)
    path = out / "points" / (f"{method}-min0.json" if mark == 0 else f"{method}-seed{seed}-min{mark:g}.json")
    if path.exists():
        return {**json.loads(path.read_text()), "seed": seed}
    if mark == 0:
        step, adapter, minutes = 0, None, 0.0
    else:
        step, adapter, minutes = version_at(run_for(method, seed, max(args.marks), out, triplets), mark)
    r = score(method, adapter, args.limit, out)
    row = {"method": method, "seed": seed, "mark": mark, "step": step, "minutes": minutes,
           "average": r["average"], "categories": r["categories"], "measured": machine()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=1))
    return row


def _cell(values: list[float]) -> str:
    if not values:
        return "…"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def plot(rows: list[dict], marks: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    fig, ax = plt.subplots(figsize=(6, 3.6))
    pfig = go.Figure()
    for method, label in METHODS.items():
        for seed in sorted({r["seed"] for r in rows if r["method"] == method}):
            pts = sorted((r["mark"], 100 * r["average"]) for r in rows if r["method"] == method and r["seed"] == seed)
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
            style = "-o" if method == "grace" else "--s"
            ax.plot(xs, ys, style, color="C0" if method == "grace" else "C1", alpha=0.8,
                    label=f"{label}, seed {seed}")
            pfig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=f"{label}, seed {seed}"))
    ax.set_xlabel("training minutes (step time)")
    ax.set_ylabel("validation average")
    ax.set_xticks([0, *marks])
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(PNG, dpi=120)
    pfig.update_layout(xaxis_title="training minutes (step time)", yaxis_title="validation average",
                       title="GRACE supervised and CL on the validation pool")
    pfig.write_html(HTML, include_plotlyjs="cdn")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--marks", type=float, nargs="+", default=[5.0, 10.0, 20.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--only", choices=sorted(METHODS), default=None)
    ap.add_argument("--out", default="results/curves")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    triplets, _ = training_data(out)
    marks = [0.0, *sorted(args.marks)]
    rows = []
    for seed in args.seeds:  # seed by seed: a partial run already holds whole curves
        for method in METHODS:
            if args.only and method != args.only:
                continue
            for mark in marks:
                r = point(method, seed, mark, args, out, triplets)
                print(f"{method} seed {seed} at {mark:g} min (step {r['step']}, {r['minutes']:.1f} min): "
                      f"{100 * r['average']:.1f}", flush=True)
                rows.append(r)
    lines = [f"Validation average (capped at {args.limit} per task) after each many minutes of training, per "
             f"method over seeds {', '.join(map(str, args.seeds))} (mean ± sd). A mark's score is the last "
             f"adapter saved within it. This run: {machine()}.", "",
             "| method | " + " | ".join(f"{m:g} min" for m in marks) + " | steps at the last mark |",
             "|" + "---|" * (len(marks) + 2)]
    for method, label in METHODS.items():
        cells = [_cell([r["average"] for r in rows if r["method"] == method and r["mark"] == m]) for m in marks]
        steps = [r["step"] for r in rows if r["method"] == method and r["mark"] == marks[-1]]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {', '.join(map(str, steps)) or '…'} |")
    plot(rows, sorted(args.marks))
    lines += ["", f"![validation curves]({PNG.name}) (interactive: `docs/{HTML.name}`)"]
    report("curves", "GRACE and CL over training minutes", "\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
