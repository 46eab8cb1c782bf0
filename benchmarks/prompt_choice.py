"""Which prompt template makes rationales help? The offline WordNet suite for every registered
template (with rationales) and the direct forward pass, on the same tasks. Run from the root:

    python benchmarks/prompt_choice.py [--limit 40] [--max-new-tokens 48]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

from _results import machine, report

from grace.evaluation.cache import RationaleCache
from grace.model.settings import EncodeSettings
from grace.evaluation.mteb_adapter import compare_table, evaluate, resolve_tasks
from grace.model.encoder import GraceEncoder
from grace.model.loading import load_encoder
from grace.model.prompts import TEMPLATES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=40, help="cap on each offline task's size")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    results = []
    base = load_encoder("default")
    for name in [None] + list(TEMPLATES):
        s = EncodeSettings(model="default", rationale=name is not None, prompt=name or "fewshot",
                         max_new_tokens=args.max_new_tokens)
        enc = GraceEncoder(base.backbone, prompt=name or "fewshot")  # one model, each template
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = evaluate(s, resolve_tasks("offline", limit=args.limit), encoder=enc,
                         cache=RationaleCache(Path(tmp) / "r.sqlite"))
        r["label"] = f"prompt `{name}` w/ reasoning" if name else "direct forward (`fewshot` prompt, no rationale)"
        print(f"{r['label']}: average {100 * r['average']:.1f} ({r['wall_seconds'] / 60:.1f} min)", flush=True)
        results.append(r)
    best = max(results[1:], key=lambda r: r["average"])
    body = (f"Offline WordNet suite capped at {args.limit} per task, rationales of up to {args.max_new_tokens} "
            f"tokens, greedy, default model. Machine: {machine()}.\n\n" + compare_table(results) +
            f"\nBest template here: {best['label']} (the default is `fewshot`).")
    report("prompt_choice", "Prompt choice", body, write=not args.no_write)


if __name__ == "__main__":
    main()
