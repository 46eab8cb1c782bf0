"""Float32 vs bfloat16 at inference: the Base w/ reasoning and GRACE supervised rows of
``benchmarks/reproduce.py`` evaluated again with ``--dtype auto`` (bfloat16 on a CPU with native
bf16 matmuls), on the same full test pool, with the same adapter. Resumable per row. Speed is
measured elsewhere (train_speed, generation benchmarks); this compares scores only.

    python benchmarks/precision.py [--rows base-reasoning grace-sup]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

from _results import machine, report

from grace.evaluation.cache import RationaleCache
from grace.evaluation.mteb_adapter import evaluate, resolve_tasks
from grace.files.run_folder import RunFolder
from grace.model.backbone import cpu_has_native_bf16
from grace.model.settings import EncodeSettings

REPRO = Path("results/reproduce")
OUT = Path("results/precision")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", nargs="*", default=["base-reasoning", "grace-sup"])
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if not cpu_has_native_bf16():
        raise SystemExit("This CPU has no native bf16 matmuls: 'auto' would run float32; nothing to compare.")
    OUT.mkdir(parents=True, exist_ok=True)
    lines = [f"The same rows evaluated in float32 (from `results/reproduce/`) and with `--dtype auto` (bfloat16 "
             f"here), full test pool, greedy rationales. Machine: {machine()}.", "",
             "| row | float32 avg. | bfloat16 avg. | difference |", "|---|---|---|---|"]
    for slug in args.rows:
        f32 = json.loads((REPRO / f"{slug}.json").read_text())
        path = OUT / f"{slug}.json"
        if not path.exists():
            adapter = RunFolder(REPRO / "runs" / slug).adapter
            s = EncodeSettings(adapter=str(adapter) if adapter.exists() else None, dtype="auto", device="cpu")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = evaluate(s, resolve_tasks("offline"), cache=RationaleCache(OUT / "rationales.sqlite"))
            path.write_text(json.dumps(r, indent=1))
        b16 = json.loads(path.read_text())
        lines.append(f"| {f32['label']} | {100 * f32['average']:.1f} | {100 * b16['average']:.1f} | "
                     f"{100 * (b16['average'] - f32['average']):+.1f} |")
        print(lines[-1], flush=True)
    body = "\n".join(lines)
    report("precision", "Float32 vs bfloat16", body, write=not args.no_write)


if __name__ == "__main__":
    main()
