"""The paper's other claims, checked at this scale on the runs of ``benchmarks/reproduce.py``.

- ``pooling`` (its Figure 6): mean over the last layer vs the penultimate layer vs the last token
  vs max pooling, untrained and with the GRACE supervised adapter, on the validation pool.
- ``length`` (its Figure 5): the rationale length over the GRACE run (first vs last steps).
- ``perplexity`` (generation preserved): perplexity of each trained model on held-out WordNet
  example sentences (the validation pool's), against the base model; the paper says CL collapses.
- ``probes`` (its Table 6): the rationales of a few validation texts, base vs trained.

Each finished measurement goes to ``results/claims/NAME.json`` and is skipped on the next run.

    python benchmarks/claims.py [pooling length perplexity probes] [--limit 40]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import warnings
from pathlib import Path

from _results import machine, report

from grace.evaluation.cache import RationaleCache
from grace.evaluation.mteb_adapter import evaluate, resolve_tasks
from grace.files.run_folder import RunFolder
from grace.model.settings import EncodeSettings

RUNS = Path("results/reproduce/runs")
OUT = Path("results/claims")
POOLINGS = {"mean, last layer": ("mean", -1), "mean, penultimate layer": ("mean", -2),
            "last token": ("last", -1), "max": ("max", -1)}
MODELS = {"Base": None, "GRACE supervised": "grace-sup", "GRACE unsupervised": "grace-unsup",
          "CL (equal minutes)": "cl-time", "SimCSE (equal minutes)": "simcse-time"}


def adapter(run: str | None) -> str | None:
    if run is None:
        return None
    path = RunFolder(RUNS / run).adapter
    if not path.exists():
        raise SystemExit(f"{path} is missing: run benchmarks/reproduce.py first.")
    return str(path)


def pooling(args) -> dict:
    rows = {}
    for who, run in (("untrained", None), ("GRACE supervised", "grace-sup")):
        for name, (pool, layer) in POOLINGS.items():
            s = EncodeSettings(adapter=adapter(run), pooling=pool, layer=layer, device="cpu")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = evaluate(s, resolve_tasks("offline-validation", limit=args.limit),
                             cache=RationaleCache(OUT / "rationales.sqlite"))
            rows[f"{who} | {name}"] = r["average"]
            print(f"  {who}, {name}: {100 * r['average']:.1f}", flush=True)
    return rows


def length(args) -> dict:
    metrics = [json.loads(x) for x in RunFolder(RUNS / "grace-sup").metrics.read_text().splitlines() if x.strip()]
    n = max(1, len(metrics) // 3)
    return {"steps": len(metrics), "first_third": statistics.mean(m["rationale_length"] for m in metrics[:n]),
            "last_third": statistics.mean(m["rationale_length"] for m in metrics[-n:]),
            "truncation_first": statistics.mean(m["truncation_rate"] for m in metrics[:n]),
            "truncation_last": statistics.mean(m["truncation_rate"] for m in metrics[-n:])}


def held_out_sentences(n: int) -> list[str]:
    from grace.evaluation.offline_tasks import _pool, _wordnet

    out = []
    for s in _pool(_wordnet(), "validation"):
        out += s.examples
    return sorted(set(out))[:n]


def perplexity(args) -> dict:
    import torch

    from grace.model.backbone import load_backbone

    sentences = held_out_sentences(args.sentences)
    rows = {}
    for who, run in MODELS.items():
        bb = load_backbone("default", adapter=adapter(run), device="cpu")
        tok, model = bb.tokenizer, bb.model.eval()
        nll, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(sentences), 16):
                batch = tok(sentences[start:start + 16], return_tensors="pt", padding=True)
                logits = model(**batch).logits[:, :-1].float()
                target = batch["input_ids"][:, 1:]
                mask = batch["attention_mask"][:, 1:].bool()
                lp = torch.log_softmax(logits, -1).gather(-1, target[..., None])[..., 0]
                nll -= float(lp[mask].sum())
                count += int(mask.sum())
        rows[who] = math.exp(nll / count)
        print(f"  {who}: perplexity {rows[who]:.2f} on {len(sentences)} sentences ({count} tokens)", flush=True)
    return {"sentences": len(sentences), "perplexity": rows}


def probes(args) -> dict:
    from grace.evaluation.offline_tasks import _pool, _wordnet
    from grace.model.loading import load_encoder

    pool = _pool(_wordnet(), "validation")
    texts = [pool[i].definition for i in (3, 300, 1200)]
    out = {"texts": texts}
    for who, run in (("Base", None), ("GRACE supervised", "grace-sup")):
        s = EncodeSettings(adapter=adapter(run), device="cpu")
        res = load_encoder(s).encode(texts, s, return_details=True)
        out[who] = [r.rationale for r in res]
    return out


STEPS = {"pooling": pooling, "length": length, "perplexity": perplexity, "probes": probes}


def render(done: dict, args) -> str:
    parts = [f"On the runs of `benchmarks/reproduce.py` (5 training minutes each). Machine: {machine()}."]
    if "pooling" in done:
        p = done["pooling"]
        parts += ["", f"**Pooling** (Figure 6), validation pool capped at {args.limit} per task, average x100:", "",
                  "| pooling | untrained | GRACE supervised |", "|---|---|---|"]
        for name in POOLINGS:
            parts.append(f"| {name} | {100 * p[f'untrained | {name}']:.1f} | {100 * p[f'GRACE supervised | {name}']:.1f} |")
    if "length" in done:
        d = done["length"]
        parts += ["", f"**Rationale length over training** (Figure 5), GRACE supervised, {d['steps']} steps: "
                      f"{d['first_third']:.1f} tokens in the first third of the steps, {d['last_third']:.1f} in the "
                      f"last; truncated rollouts {100 * d['truncation_first']:.0f} % → {100 * d['truncation_last']:.0f} %."]
    if "perplexity" in done:
        d = done["perplexity"]
        parts += ["", f"**Generation preserved**: perplexity on {d['sentences']} held-out WordNet example sentences "
                      "(validation pool; lower is better):", "", "| model | perplexity | vs Base |", "|---|---|---|"]
        base = d["perplexity"]["Base"]
        for who, v in d["perplexity"].items():
            parts.append(f"| {who} | {v:.2f} | {100 * (v / base - 1):+.1f} % |")
    if "probes" in done:
        d = done["probes"]
        parts += ["", "**Probe rationales** (Table 6), greedy, base vs GRACE supervised:", "",
                  "| text | Base | GRACE supervised |", "|---|---|---|"]
        for i, t in enumerate(d["texts"]):
            cells = [" ".join(x.split()).replace("|", "/") for x in (t, d["Base"][i], d["GRACE supervised"][i])]
            parts.append("| " + " | ".join(cells) + " |")
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("steps", nargs="*", help=f"some of: {', '.join(STEPS)} (default: all)")
    ap.add_argument("--limit", type=int, default=40, help="cap on each validation task (pooling)")
    ap.add_argument("--sentences", type=int, default=300, help="held-out sentences for the perplexity")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    unknown = [x for x in args.steps if x not in STEPS]
    if unknown:
        ap.error(f"unknown step(s) {', '.join(unknown)}: use {', '.join(STEPS)}")
    OUT.mkdir(parents=True, exist_ok=True)
    done = {p.stem: json.loads(p.read_text()) for p in OUT.glob("*.json")}
    for name in args.steps or list(STEPS):
        if name in done:
            print(f"{name}: done before", flush=True)
            continue
        print(f"{name}: running", flush=True)
        done[name] = STEPS[name](args)
        (OUT / f"{name}.json").write_text(json.dumps(done[name], indent=1))
    body = render(done, args)
    report("claims", "The paper's other claims at this scale", body, write=not args.no_write)


if __name__ == "__main__":
    main()
