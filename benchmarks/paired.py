"""GRACE supervised against CL over paired seeds: the mean difference of the test-pool average and a
paired t-test (scipy), from the rows ``reproduce.py`` wrote (``ROW.json``, ``ROW-seedN.json``).
The verdict is the test's: "beats" or "loses" when p < 0.05, else "ties" (a gap inside the seeds'
spread). Nothing is trained or scored here.

    python benchmarks/paired.py [--out results/reproduce] [--a grace-sup] [--b cl-time]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from _results import report

ALPHA = 0.05


def seeds_of(out: Path, slug: str) -> dict[int, float]:
    found = {}
    for path in out.glob(f"{slug}*.json"):
        rest = path.stem[len(slug):]
        if rest == "":
            found[0] = json.loads(path.read_text())["average"]
        elif rest.startswith("-seed") and rest[5:].isdigit():
            found[int(rest[5:])] = json.loads(path.read_text())["average"]
    return found


def verdict(a: list[float], b: list[float]) -> tuple[str, float, float]:
    """("beats" | "ties" | "loses", mean difference a - b, p of the paired t-test)."""
    from scipy import stats

    diff = statistics.mean(x - y for x, y in zip(a, b))
    p = float(stats.ttest_rel(a, b).pvalue)
    word = "ties" if p >= ALPHA else ("beats" if diff > 0 else "loses")
    return word, diff, p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/reproduce")
    ap.add_argument("--a", default="grace-sup")
    ap.add_argument("--b", default="cl-time")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    a, b = seeds_of(out, args.a), seeds_of(out, args.b)
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        raise SystemExit(f"Need at least 2 seeds of both {args.a} and {args.b} in {out}; found {seeds}.")
    xa, xb = [a[s] for s in seeds], [b[s] for s in seeds]
    word, diff, p = verdict(xa, xb)
    lines = [f"{args.a} against {args.b} on the test pool, paired by training seed ({', '.join(map(str, seeds))}), "
             f"from the rows in `{out}` (their machine and date: the reproduce section).", "",
             "| seed | " + args.a + " | " + args.b + " | difference |", "|---|---|---|---|"]
    lines += [f"| {s} | {100 * a[s]:.1f} | {100 * b[s]:.1f} | {100 * (a[s] - b[s]):+.1f} |" for s in seeds]
    lines += ["", f"Mean {100 * statistics.mean(xa):.1f} ± {100 * statistics.stdev(xa):.1f} against "
              f"{100 * statistics.mean(xb):.1f} ± {100 * statistics.stdev(xb):.1f}; mean difference "
              f"{100 * diff:+.1f} points, paired t-test p = {p:.2f}: **{args.a} {word} {args.b}** (alpha {ALPHA})."]
    report("paired", "GRACE vs CL over paired seeds", "\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
