"""The Map at 100,000 texts, measured in Chromium: a grace encode output of ``--rows`` texts with
``--dim``-number embeddings (640: the default model's; written as grace encode writes them) is
uploaded to the running app (with its default model loaded, as a visitor meets it), and we time
upload-to-first-paint (the WebGL canvas drawn), click-to-neighbours (a point clicked until its
neighbours are shown; the median of ``--clicks``), and read the app process's memory (resident
before the upload, after the map, and its peak).

    python benchmarks/map_scale.py [--rows 100000] [--dim 640] [--clicks 3] [--model default]

Run it alone: anything else on the cores slows every figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from _results import machine, report

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from browser import browser_page, click_point, running_app  # noqa: E402

WORDS = ["lava", "violin", "tax", "orbit", "pasta", "glacier", "sonnet", "enzyme"]


def write_file(path: Path, rows: int, dim: int) -> float:
    """Clustered unit embeddings with texts, rationales and shifts, as grace encode writes them."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(len(WORDS), dim))
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, rows, 1000):
            n = min(1000, rows - start)
            k = (np.arange(start, start + n) % len(WORDS))
            e = centres[k] + rng.normal(size=(n, dim)) * 0.8
            e /= np.linalg.norm(e, axis=1, keepdims=True)
            for i in range(n):
                w = WORDS[k[i]]
                f.write(json.dumps({"text": f"text {start + i} about {w}", "rationale": f"{w}, and what it is",
                                    "embedding": [round(float(x), 7) for x in e[i]],
                                    "shift": round(float(rng.uniform(0, 0.3)), 7)}) + "\n")
    return path.stat().st_size / 1e6


def _wait(page, selector: str, text: str, timeout: float) -> None:
    page.wait_for_function("([s, t]) => document.querySelector(s)?.innerText.includes(t)", arg=[selector, text],
                           timeout=timeout * 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=640)
    ap.add_argument("--clicks", type=int, default=3)
    ap.add_argument("--model", default="default")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        f = tmp / "encoded.jsonl"
        mb = write_file(f, args.rows, args.dim)
        print(f"wrote {args.rows:,} rows x {args.dim} ({mb:.0f} MB)", flush=True)
        pid: list = []
        with running_app(args.model, str(tmp / "data"), timeout=600, pid=pid) as url, browser_page() as page:
            app = psutil.Process(pid[0])
            page.goto(url)
            _wait(page, "#model-status", "Model ready", 900)
            rss_before = app.memory_info().rss / 2**20
            page.click("button[role=tab]:has-text('Map')")
            page.click("text=uploaded grace encode output")
            t0 = time.perf_counter()
            page.set_input_files("#map-upload input[type=file]", str(f))
            page.wait_for_function("() => document.querySelector('#map-upload')?.innerText.includes('encoded.jsonl')",
                                   timeout=600_000)
            page.click("#map-go")  # Map it waits for the upload to finish
            _wait(page, "#map-note", f"{args.rows} texts mapped", 1800)
            page.wait_for_selector("#map-left .js-plotly-plot .gl-container canvas", timeout=120_000)
            page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            t_paint = time.perf_counter() - t0
            rss_map = app.memory_info().rss / 2**20
            page.wait_for_timeout(1000)  # the click handler attaches within half a second
            latencies = []
            for c in range(args.clicks):
                before = page.inner_text("#map-detail")
                t1 = time.perf_counter()
                click_point(page, "#map-left", 1000 + 7919 * c)
                page.wait_for_function("b => { const t = document.querySelector('#map-detail')?.innerText || '';"
                                       " return t.includes(' about ') && t !== b; }", arg=before, timeout=300_000)
                page.wait_for_function("() => document.querySelector('#map-neighbours')?.innerText.includes('about')",
                                       timeout=60_000)
                latencies.append(time.perf_counter() - t1)
            with open(f"/proc/{pid[0]}/status") as s:
                peak = next(int(line.split()[1]) for line in s if line.startswith("VmHWM")) / 1024
    lines = [f"The Map with a grace encode output of {args.rows:,} texts x {args.dim} numbers ({mb:.0f} MB), in "
             f"headless Chromium (Debian's, WebGL by SwiftShader), the app with model '{args.model}' loaded. "
             f"Machine: {machine()}.", "",
             "| measure | value |", "|---|---|",
             f"| upload to first paint (read, PCA, clusters, WebGL drawn) | {t_paint:.1f} s |",
             f"| click to neighbours (median of {len(latencies)}) | {statistics.median(latencies):.1f} s "
             f"({', '.join(f'{x:.1f}' for x in latencies)}) |",
             f"| app memory, resident: before the upload / with the map / peak | {rss_before:,.0f} / "
             f"{rss_map:,.0f} / {peak:,.0f} MiB |"]
    report("map_scale", "The Map at 100,000 texts", "\n".join(lines), write=not args.no_write)


if __name__ == "__main__":
    main()
