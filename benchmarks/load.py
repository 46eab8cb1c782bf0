"""Several visitors at once: does the app serve them all, how long does each wait, and does each
see its place in the queue?

Starts the app on 127.0.0.1 (or uses ``--url``, which must be local), waits until its model is
warm, then N simulated visitors (gradio_client, one thread each) press Compare in Explore at the
same moment, each with 1 query and 3 documents of its own. Reports each visitor's latency, its
best queue position while waiting, p50 / p95, and exits non-zero when a visitor was not served.

    python benchmarks/load.py [--visitors 4] [--timeout 300] [--model default]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import machine, write_section  # noqa: E402

MAX_VISITORS = 16
TOPICS = [
    ("Where is Machu Picchu?", ["Machu Picchu is an Inca citadel in the Andes of Peru.",
                                "The stock market fell sharply today.", "Chichen Itza is a Maya city in Mexico."]),
    ("How do vaccines work?", ["Vaccines train the immune system to recognise a pathogen.",
                               "Antibiotics kill bacteria but not viruses.", "The museum opened a new wing."]),
    ("Why is the sky blue?", ["Air molecules scatter blue light more than red light.",
                              "Sunsets look red near the horizon.", "Bread rises because of yeast."]),
    ("What do bees eat?", ["Bees feed on nectar and pollen from flowers.", "Wasps hunt other insects.",
                           "The train to Lyon leaves at noon."]),
]


def visitor(url: str, i: int, start: threading.Barrier, out: list, timeout: float) -> None:
    from gradio_client import Client

    query, docs = TOPICS[i % len(TOPICS)]
    query = f"{query} (visitor {i + 1})"
    row = {"visitor": i + 1, "served": False, "latency": None, "queue": None, "error": ""}
    try:
        client = Client(url, verbose=False)
        start.wait(60)
        t0 = time.perf_counter()
        job = client.submit(query, "\n".join(docs), api_name="/run_compare")
        while not job.done():
            st = job.status()
            if st.rank is not None and st.rank >= 0:
                row["queue"] = st.rank + 1 if row["queue"] is None else max(row["queue"], st.rank + 1)
            if time.perf_counter() - t0 > timeout:
                job.cancel()
                raise TimeoutError(f"not served within {timeout:.0f} s")
            time.sleep(0.1)
        result = job.outputs()[-1]
        row["latency"] = time.perf_counter() - t0
        row["served"] = str(result[0]).startswith("Ranked by GRACE cosine")
        if not row["served"]:
            row["error"] = str(result[0])[:200]
    except Exception as exc:  # reported in the table, and the exit code
        row["error"] = f"{type(exc).__name__}: {exc}"[:200]
    out.append(row)


def wait_warm(url: str, timeout: float) -> float:
    """Send one request (not counted) so that the visitors meet a warm model; its seconds."""
    from gradio_client import Client

    t0 = time.perf_counter()
    Client(url, verbose=False).predict("warm-up", "one document", api_name="/run_compare")
    if time.perf_counter() - t0 > timeout:
        raise SystemExit("the app did not get warm in time")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--visitors", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds a visitor waits before giving up")
    ap.add_argument("--model", default="default")
    ap.add_argument("--url", default=None, help="a running app on this machine (default: start one)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if not 1 <= args.visitors <= MAX_VISITORS:
        raise SystemExit(f"--visitors must be 1 to {MAX_VISITORS}.")
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("--url must be an app on this machine (127.0.0.1): this benchmark never loads a public app.")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from browser import running_app

    with tempfile.TemporaryDirectory() as data:
        ctx = running_app(args.model, data, timeout=300) if not args.url else _given(args.url)
        with ctx as url:
            warm = wait_warm(url, args.timeout)
            print(f"warm-up request: {warm:.1f} s", flush=True)
            rows: list[dict] = []
            barrier = threading.Barrier(args.visitors)
            threads = [threading.Thread(target=visitor, args=(url, i, barrier, rows, args.timeout))
                       for i in range(args.visitors)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    rows.sort(key=lambda r: r["visitor"])
    served = [r for r in rows if r["served"]]
    lat = sorted(r["latency"] for r in served)
    lines = [f"{args.visitors} visitors press Compare in Explore at once (1 query, 3 documents each, rationales on, "
             f"model {args.model}, the app's default settings), after one warm-up request. Machine: {machine()}.", "",
             "| visitor | served | latency | best queue position seen | error |", "|---|---|---|---|---|"]
    for r in rows:
        latency = "–" if r["latency"] is None else f"{r['latency']:.1f} s"
        lines.append(f"| {r['visitor']} | {'yes' if r['served'] else 'NO'} | {latency} | {r['queue'] or '–'} | "
                     f"{r['error']} |")
    if lat:
        p50 = statistics.median(lat)
        p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
        lines += ["", f"{len(served)} of {len(rows)} served; p50 {p50:.1f} s, p95 {p95:.1f} s (target: all served, "
                      f"p95 under 25 s). The queue position is what gradio_client saw; the page shows the same."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("load", "## Several visitors at once (`benchmarks/load.py`)\n\n" + body)
    if len(served) < len(rows):
        raise SystemExit(1)


class _given:
    def __init__(self, url: str):
        self.url = url

    def __enter__(self) -> str:
        return self.url

    def __exit__(self, *exc) -> None:
        return None


if __name__ == "__main__":
    main()
