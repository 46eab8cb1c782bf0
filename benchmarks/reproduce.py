"""The paper's Table 1 at this scale: does GRACE training make the embeddings better?

Trains and evaluates every row from scratch on the offline WordNet suite (the test pool; training
uses WordNet's training pool only), with a time budget per trained method:

  Base (direct forward) · Base w/ reasoning · CL (supervised) · GRACE supervised ·
  SimCSE (unsupervised) · GRACE unsupervised · MiniLM

CL and SimCSE are shown twice: with the same wall-clock minutes as GRACE, and with the same number
of training examples as GRACE saw (CL sees many more examples per minute than a method that
generates). With ``--seeds 0 1 2`` GRACE supervised and CL at equal minutes are trained once per
seed (``ROW-seedN.json`` beyond seed 0) and the table shows their mean ± standard deviation. Each finished row is written to ``results/reproduce/ROW.json`` at once; a row whose
file exists is not recomputed, so an interrupted run resumes where it stopped. The table goes to
``benchmarks/RESULTS.md`` and ``results/reproduce/TABLE.md``.

    python benchmarks/reproduce.py [--minutes 5] [--seeds 0 1 2] [--model default] [--dtype auto] [--limit N]

A GPU user runs the same command with a larger ``--minutes`` and another ``--model``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from _results import machine, report, resumable_row

from grace.evaluation.cache import RationaleCache
from grace.evaluation.mteb_adapter import CATEGORY_ORDER, evaluate, resolve_tasks
from grace.evaluation.offline_tasks import training_split
from grace.model.settings import EncodeSettings
from grace.training.config import GraceConfig
from grace.training.trainer import train


@dataclass
class Row:
    slug: str
    label: str
    method: str | None = None  # None: untrained
    mode: str = "supervised"
    rationale: bool = True
    model: str | None = None  # "minilm"
    equal_examples_of: str | None = None  # train for as many examples as this row saw
    train: dict = field(default_factory=dict)


ROWS = [
    Row("base", "Base (direct forward)", rationale=False),
    Row("base-reasoning", "Base w/ reasoning"),
    Row("grace-sup", "GRACE supervised", method="grace"),
    Row("cl-time", "CL (supervised), equal minutes", method="cl", rationale=False),
    Row("cl-examples", "CL (supervised), equal examples", method="cl", rationale=False,
        equal_examples_of="grace-sup"),
    Row("grace-unsup", "GRACE unsupervised", method="grace", mode="unsupervised"),
    Row("simcse-time", "SimCSE (unsupervised), equal minutes", method="simcse", mode="unsupervised",
        rationale=False),
    Row("simcse-examples", "SimCSE (unsupervised), equal examples", method="simcse", mode="unsupervised",
        rationale=False, equal_examples_of="grace-unsup"),
    Row("minilm", "MiniLM (all-MiniLM-L6-v2)", rationale=False, model="minilm"),
]


def training_data(out: Path) -> tuple[Path, Path]:
    """WordNet's training pool as triplets and passages (never the test or validation pools)."""
    triplets, passages = training_split()
    passages = list(dict.fromkeys(x.replace("\n", " ").strip() for x in passages))  # a passage once
    t, p = out / "data" / "triplets.jsonl", out / "data" / "passages.txt"
    t.parent.mkdir(parents=True, exist_ok=True)
    t.write_text("".join(json.dumps(x) + "\n" for x in triplets), encoding="utf-8")
    p.write_text("".join(x + "\n" for x in passages), encoding="utf-8")
    return t, p


SEEDED = ("grace-sup", "cl-time")  # the comparison the README reports: trained once per --seeds


def slug_of(row: Row, seed: int) -> str:
    return row.slug if seed == 0 else f"{row.slug}-seed{seed}"


def train_row(row: Row, args, out: Path, data: tuple[Path, Path], done: dict, seed: int = 0) -> tuple[str, dict]:
    cfg = GraceConfig(method=row.method, mode=row.mode, data=str(data[0] if row.mode == "supervised" else data[1]),
                      output=str(out / "runs" / slug_of(row, seed)), model=args.model, dtype=args.dtype,
                      device="cpu", sample_every=0, save_every=2 if row.method == "grace" else 25, seed=seed,
                      keep_adapters=0 if row.method == "grace" else 2)  # every 2 steps: the validation curve
    if row.method != "grace":
        cfg.batch_size = args.cl_batch_size
    if row.equal_examples_of:
        seen = done[row.equal_examples_of]["training"]["examples_seen"]
        cfg.steps = max(1, round(seen / cfg.batch_size))
    else:
        cfg.steps, cfg.max_minutes = 100_000, args.minutes
    t0 = time.perf_counter()
    res = train(cfg)
    wall = time.perf_counter() - t0
    return str(res.adapter), {"method": row.method, "mode": row.mode, "steps": res.steps_done,
                              "batch_size": cfg.batch_size, "examples_seen": res.steps_done * cfg.batch_size,
                              "train_minutes": wall / 60, "config": cfg.to_dict()}


def run_row(row: Row, args, out: Path, data, done: dict, seed: int = 0) -> dict:
    training, adapter = None, None
    if row.method:
        adapter, training = train_row(row, args, out, data, done, seed)
    settings = EncodeSettings(model=row.model or args.model, adapter=adapter, rationale=row.rationale,
                              dtype=args.dtype, device="cpu")
    tasks = resolve_tasks("offline", limit=args.limit)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = evaluate(settings, tasks, cache=RationaleCache(out / "rationales.sqlite"),
                     on_task=lambda n, s, t: print(f"  {row.slug} {n}: {100 * s:.1f} ({t:.0f} s)", flush=True))
    r["label"], r["training"] = row.label, training
    return r


def table(results: dict, args) -> str:
    base = results.get("base", {}).get("average")
    cats_all = [c for c in CATEGORY_ORDER if any(c in r["categories"] for r in results.values())]
    lines = ["| row | " + " | ".join(cats_all) + " | Avg. | vs Base | train min | steps | examples | "
             "eval min |", "|" + "---|" * (len(cats_all) + 7)]
    for row in ROWS:
        r = results.get(row.slug)
        if r is None:
            lines.append(f"| {row.label} | " + " | ".join(["…"] * (len(cats_all) + 6)) + " |")
            continue
        runs = [results[k] for k in [row.slug] + [f"{row.slug}-seed{s}" for s in range(1, 10)] if k in results]
        cats = [_mean_sd([x["categories"][c] for x in runs]) if c in r["categories"] else "–" for c in cats_all]
        t = r.get("training") or {}
        avg = statistics.mean(x["average"] for x in runs)
        gain = f"{100 * (avg / base - 1):+.1f} %" if base else "–"
        label = row.label + (f" ({len(runs)} seeds)" if len(runs) > 1 else "")
        lines.append(f"| {label} | " + " | ".join(cats) + f" | {_mean_sd([x['average'] for x in runs])} | {gain} | "
                     f"{t.get('train_minutes', 0):.1f} | {t.get('steps', '–')} | {t.get('examples_seen', '–')} | "
                     f"{r['wall_seconds'] / 60:.1f} |")
    return "\n".join(lines)


def _mean_sd(values: list[float]) -> str:
    """x100, and with several values their mean ± sample standard deviation."""
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0, help="training budget of each method (wall clock)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--dtype", default=None, help="float32 (default on CPU), bfloat16 or auto")
    ap.add_argument("--limit", type=int, default=None, help="cap every offline task (a rougher, faster table)")
    ap.add_argument("--cl-batch-size", type=int, default=8, help="batch of the CL and SimCSE baselines")
    ap.add_argument("--out", default="results/reproduce")
    ap.add_argument("--rows", nargs="*", default=None, help="only these rows (slugs)")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0], help=f"training seeds of {', '.join(SEEDED)}")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = training_data(out)
    results = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    for row in ROWS:
        if args.rows and row.slug not in args.rows:
            continue
        if row.equal_examples_of and row.equal_examples_of not in results:
            print(f"{row.slug}: waits for {row.equal_examples_of}", flush=True)
            continue
        for seed in (args.seeds if row.slug in SEEDED else [0]):
            slug = slug_of(row, seed)
            results[slug] = resumable_row(out, slug, lambda: run_row(row, args, out, data, results, seed))
    body = (f"Offline WordNet suite (test pool{f', capped at {args.limit} per task' if args.limit else ', full size'}), "
            f"training on WordNet's training pool, {args.minutes:g} training minutes per method, model "
            f"{args.model}, dtype {args.dtype or 'float32'}. Machine: {machine()}.\n\n" + table(results, args) +
            "\n\nRows marked … have not run yet (the command resumes). CL and SimCSE are evaluated on the "
            "direct-forward embedding they train; GRACE rows with their rationales.")
    (out / "TABLE.md").write_text(body + "\n")
    report("reproduce", "GRACE vs the baselines", body, write=not args.no_write)


if __name__ == "__main__":
    main()
