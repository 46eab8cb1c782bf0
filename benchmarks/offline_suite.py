"""The offline WordNet suite for Base (direct forward), Base w/ reasoning and MiniLM, with wall times.

Each configuration starts from an empty rationale cache, so the wall times include every
generation. Run from the repository root (needs Debian's wordnet-base):

    python benchmarks/offline_suite.py [--quick] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

from _results import machine, report

from grace.evaluation.cache import RationaleCache
from grace.model.settings import EncodeSettings
from grace.evaluation.mteb_adapter import compare_table, evaluate, resolve_tasks
from grace.evaluation.offline_tasks import SIZES, build_task_data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--results-dir", default="results")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    size = "quick" if args.quick else "full"
    configs = [EncodeSettings(model="default", rationale=False),
               EncodeSettings(model="default", rationale=True, max_new_tokens=args.max_new_tokens),
               EncodeSettings(model="minilm", rationale=False)]
    results = []
    for s in configs:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tasks = resolve_tasks("offline", quick=args.quick)
            r = evaluate(s, tasks, cache=RationaleCache(Path(tmp) / "r.sqlite"),
                         on_task=lambda n, sc, t: print(f"  {n}: {100 * sc:.1f} ({t:.0f} s)", flush=True))
        print(f"{r['label']}: average {100 * r['average']:.1f}, {r['wall_seconds'] / 60:.1f} min", flush=True)
        results.append(r)
        out = Path(args.results_dir) / f"offline-{size}-{s.label().split()[0].lower()}-{'rat' if s.rationale else 'direct'}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(r, indent=1))
    d = build_task_data(size)
    sz = SIZES[size]
    sizes = (f"retrieval {len(d['retrieval']['queries'])} queries / {len(d['retrieval']['corpus'])} sentences, "
             f"clustering {len(d['clustering']['sentences'])} definitions, classification "
             f"{len(d['classification']['train'])} train / {len(d['classification']['test'])} test, "
             f"pair classification {len(d['pairs'])} pairs (asked: {sz})")
    body = (f"Offline WordNet suite ({size}), rationales of up to {args.max_new_tokens} tokens, greedy, "
            f"`fewshot` prompt, each row from an empty rationale cache. Machine: {machine()}.\n\n"
            f"Sizes: {sizes}.\n\n" + compare_table(results))
    report(f"offline_suite_{size}", f"Offline evaluation suite, {size}", body, write=not args.no_write)


if __name__ == "__main__":
    main()
