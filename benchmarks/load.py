"""Several visitors at once: does the app serve them all, how long does each wait, and does each
see its place in the queue?

Starts the app on 127.0.0.1 (or uses ``--url``, which must be local), waits until its model is
warm, then N simulated visitors (gradio_client, one thread each) press Compare in Explore at the
same moment, each with 1 query and 3 documents of its own. Reports each visitor's latency, its
best queue position while waiting, p50 / p95, and exits non-zero when a visitor was not served.

``--mixed``: a mixed crowd as a public Space sees it (the app in public mode): 4 Explore visitors
(2 Compare presses each), 2 small Maps (12 uploaded lines each), 1 visitor watching a 2-step
training job, 1 annotator (import, start, 5 saves) and 24 idle tabs whose 2-second timers refresh
the Train status, all at once. Reports a table per kind of visitor and exits non-zero unless every
visitor was served, with 0 errors and Explore's p95 under 30 s. ``--timeout`` bounds the whole run.

    python benchmarks/load.py [--visitors 4] [--timeout 300] [--model default]
    python benchmarks/load.py --mixed [--timeout 900] [--model default]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

from _results import machine, report

# tests/browser.py starts the app (running_app); tests/ is not a package and not installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

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


# --- --mixed: a mixed crowd on a public Space --------------------------------------------------

EXPLORE_VISITORS, EXPLORE_PRESSES = 4, 2
MAP_VISITORS, MAP_LINES = 2, 12
ANNOTATE_ITEMS, ANNOTATE_SAVES = 2, 5
IDLE_TABS = 24
TICK = 2.0  # seconds between a page's timer ticks (the Train tab's gr.Timer)
EXPLORE_P95_TARGET = 30.0
KINDS = ["explore", "map", "train-watch", "annotate", "idle"]
MAP_SENTENCES = ["Bees feed on nectar and pollen.", "The train to Lyon leaves at noon.",
                 "Vaccines train the immune system.", "Air scatters blue light more than red.",
                 "Machu Picchu is an Inca citadel.", "The stock market fell sharply today.",
                 "Bread rises because of yeast.", "Wasps hunt other insects.",
                 "Sunsets look red near the horizon.", "Antibiotics kill bacteria.",
                 "The museum opened a new wing.", "Chichen Itza is a Maya city in Mexico."]


class Crowd:
    """What the visitors share: the app, one deadline, a start line, a stop flag for the idle
    tabs, and the log of every request and every visitor."""

    def __init__(self, url: str, model: str, folder: Path, deadline: float, parties: int):
        self.url, self.model, self.folder, self.deadline = url, model, folder, deadline
        self.start_line = threading.Barrier(parties)
        self.stop = threading.Event()  # set when the active visitors are done: the idle tabs close
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.visitors: list[dict] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def record(self, **row) -> None:
        with self.lock:
            self.requests.append(row)


def _text(out, i: int = 0) -> str:
    """Output ``i`` of an answer as text (an endpoint with one output answers it bare)."""
    if isinstance(out, (tuple, list)):
        out = out[i] if len(out) > i else ""
    return "" if out is None else str(out)


def call(crowd: Crowd, client, kind: str, who: int, api_name: str, *args, ok=lambda out: True):
    """One request, timed and logged, bounded by the crowd's deadline: its answer when it was
    served (``ok``), else None."""
    t0, job = time.monotonic(), None
    try:
        if crowd.left() <= 0:
            raise TimeoutError("the run's --timeout was spent")
        job = client.submit(*args, api_name=api_name)
        out = job.result(timeout=crowd.left())
        served = bool(ok(out))
        error = "" if served else f"{api_name} answered: {_text(out)[:150]}"
    except Exception as exc:  # reported in the table, and the exit code
        if job is not None and not job.done():
            job.cancel()
        out, served = None, False
        error = f"{api_name}: {type(exc).__name__}: {exc}"[:200] if str(exc) else f"{api_name}: {type(exc).__name__}"
    crowd.record(kind=kind, who=who, api=api_name, latency=time.monotonic() - t0, served=served, error=error)
    return out if served else None


def ticks(crowd: Crowd):
    """Yields every TICK seconds, as a page's timer fires, until the crowd stops or its deadline;
    a call that took longer than a tick skips the ticks it missed."""
    due = time.monotonic()
    while not crowd.stop.is_set() and crowd.left() > 0:
        if due > time.monotonic() and crowd.stop.wait(min(due - time.monotonic(), max(0.0, crowd.left()))):
            return
        if crowd.left() <= 0:
            return
        yield
        while due <= time.monotonic():
            due += TICK


def status_ok(out) -> bool:
    """A Train status refresh: its status line came back."""
    line = _text(out)
    return bool(line) and not line.startswith("⚠️")


def explore_visitor(crowd: Crowd, client, i: int, v: dict) -> bool:
    """Presses Compare EXPLORE_PRESSES times in a row, 1 query and 3 documents of its own."""
    query, docs = TOPICS[i % len(TOPICS)]
    served = [call(crowd, client, "explore", i, "/run_compare", f"{query} (visitor {i + 1}, press {k + 1})",
                   "\n".join(docs), ok=lambda out: _text(out).startswith("Ranked by GRACE cosine")) is not None
              for k in range(EXPLORE_PRESSES)]
    return all(served)


def map_visitor(crowd: Crowd, client, i: int, v: dict) -> bool:
    """Maps a .txt file of its own (MAP_LINES lines) with rationales, PCA."""
    from gradio_client import handle_file

    path = crowd.folder / f"map-{i + 1}.txt"
    path.write_text("\n".join(f"{s} (map {i + 1})" for s in MAP_SENTENCES[:MAP_LINES]) + "\n", encoding="utf-8")
    out = call(crowd, client, "map", i, "/make_map", "uploaded file", handle_file(str(path)), "with rationale",
               "PCA", "", ok=lambda out: _text(out).startswith(f"{MAP_LINES} texts mapped"))
    return out is not None


def train_watcher(crowd: Crowd, client, i: int, v: dict) -> bool:
    """Starts a 2-step GRACE job, then refreshes its status every TICK seconds until it says
    finished; presses Cancel when the deadline comes first (no job outlives the run)."""
    name = f"mixed-{secrets.token_hex(3)}"
    t0 = time.monotonic()
    started = call(crowd, client, "train-watch", i, "/start", name, "grace / supervised", None, 2, 2, 2, 0.2, 1.0,
                   0.1, 16, 8, crowd.model, ok=lambda out: _text(out).startswith("Started"))
    if started is None:
        return False
    for _ in ticks(crowd):
        line = _text(call(crowd, client, "train-watch", i, "/refresh_2", ok=status_ok))
        if "finished" in line:
            v["finished"] = time.monotonic() - t0
            return True
        if "failed" in line or "cancelled" in line:
            v["note"] = f"the job ended: {line[:150]}"
            return False
    v["note"] = "the job had not finished at the deadline (cancelled)"
    try:
        client.submit(api_name="/cancel").result(timeout=30)
    except Exception:
        pass
    return False


def annotator(crowd: Crowd, client, i: int, v: dict) -> bool:
    """Imports ANNOTATE_ITEMS items, presses Start, then Save ANNOTATE_SAVES times (4/4/4)."""
    from gradio_client import handle_file

    path = crowd.folder / "annotate.jsonl"
    path.write_text("".join(json.dumps({"text": f"Mixed-crowd text {n + 1}: bees feed on nectar.",
                                        "rationale": f"Rationale {n + 1}: about bees and what they eat."}) + "\n"
                            for n in range(ANNOTATE_ITEMS)), encoding="utf-8")
    imported = call(crowd, client, "annotate", i, "/import_items", handle_file(str(path)),
                    ok=lambda out: _text(out).startswith(f"Imported {ANNOTATE_ITEMS} new item"))
    shown = call(crowd, client, "annotate", i, "/start_1", "", False, ok=lambda out: bool(_text(out)))
    notes = [_text(call(crowd, client, "annotate", i, "/save", 4, 4, 4, False, "", False,
                        ok=lambda out: "⚠️" not in _text(out, 8)), 8) for _ in range(ANNOTATE_SAVES)]
    saved = sum("Saved item" in n for n in notes)
    v["note"] = f"{saved} of {ANNOTATE_SAVES} saves rated an item (it imported {ANNOTATE_ITEMS})"
    return imported is not None and shown is not None and all(notes)


def idle_tab(crowd: Crowd, client, i: int, v: dict) -> bool:
    """An open page doing nothing: its timer refreshes the Train status every TICK seconds, from
    a moment of its own within the first tick (open tabs' timers are not in step)."""
    if crowd.stop.wait(TICK * i / IDLE_TABS):
        return False
    served = [call(crowd, client, "idle", i, "/refresh_2", ok=status_ok) is not None for _ in ticks(crowd)]
    return bool(served) and all(served)


SCRIPTS = {"explore": explore_visitor, "map": map_visitor, "train-watch": train_watcher, "annotate": annotator,
           "idle": idle_tab}


def visit(crowd: Crowd, kind: str, i: int) -> None:
    """One visitor: opens the page (its own client, ``/identify`` as the page does on load),
    waits at the start line for everyone, then follows the script of its kind."""
    from gradio_client import Client

    v = {"kind": kind, "visitor": i, "done": False, "note": ""}
    with crowd.lock:
        crowd.visitors.append(v)
    client = None
    try:
        client = Client(crowd.url, verbose=False, download_files=False)
        if call(crowd, client, kind, i, "/identify", secrets.token_hex(24)) is None:
            client = None
    except Exception as exc:
        crowd.record(kind=kind, who=i, api="/identify", latency=0.0, served=False,
                     error=f"connect: {type(exc).__name__}: {exc}"[:200])
    try:
        crowd.start_line.wait(timeout=max(1.0, crowd.left()))
    except threading.BrokenBarrierError:
        pass  # someone never came: go anyway
    if client is not None:
        v["done"] = SCRIPTS[kind](crowd, client, i, v)


def crowd_plan() -> list[tuple[str, int]]:
    counts = {"explore": EXPLORE_VISITORS, "map": MAP_VISITORS, "train-watch": 1, "annotate": 1, "idle": IDLE_TABS}
    return [(kind, i) for kind in KINDS for i in range(counts[kind])]


def run_crowd(crowd: Crowd, plan: list[tuple[str, int]]) -> None:
    """Everyone at once; the idle tabs close when the active visitors are done (or at the deadline)."""
    threads = [(kind, threading.Thread(target=visit, args=(crowd, kind, i), daemon=True)) for kind, i in plan]
    for _, t in threads:
        t.start()
    for kind, t in threads:
        if kind != "idle":
            t.join(max(0.0, crowd.left()) + 5)
    crowd.stop.set()
    for kind, t in threads:
        if kind == "idle":
            t.join(max(0.0, crowd.left()) + 10)


def warm_up(url: str, crowd_deadline: float) -> float:
    """One Compare (not counted) so that the crowd meets a warm model; its seconds."""
    from gradio_client import Client

    t0 = time.monotonic()
    job = Client(url, verbose=False, download_files=False).submit("warm-up", "one document", api_name="/run_compare")
    try:
        job.result(timeout=max(1.0, crowd_deadline - t0))
    except Exception as exc:
        job.cancel()
        raise SystemExit(f"the warm-up request did not come back in time: {type(exc).__name__}: {exc}")
    return time.monotonic() - t0


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def spread(lat: list[float]) -> tuple[str, str]:
    """p50 and p95 as the table shows them."""
    if not lat:
        return "–", "–"
    return f"{statistics.median(lat):.2f} s", f"{percentile(lat, 0.95):.2f} s"


def kind_row(crowd: Crowd, kind: str) -> tuple[str, list[float]]:
    """The table row of one kind of visitor, and the latencies its p50 / p95 are of."""
    reqs = [r for r in crowd.requests if r["kind"] == kind and r["api"] != "/identify"]
    visitors = [v for v in crowd.visitors if v["kind"] == kind]
    timed = [r for r in reqs if r["served"] and (kind != "train-watch" or r["api"] == "/refresh_2")]
    lat = [r["latency"] for r in timed]
    served = sum(r["served"] for r in reqs)
    p50, p95 = spread(lat)
    notes = [n for n in (_kind_note(crowd, kind, reqs, visitors),) if n]
    notes += [v["note"] for v in visitors if v["note"] and kind != "annotate"]
    errors = [r["error"] for r in reqs if not r["served"]]
    if errors:
        notes.append(f"first error: {errors[0]}")
    row = (f"| {kind} | {sum(v['done'] for v in visitors)} of {len(visitors)} | {len(reqs)} | {served} | "
           f"{len(reqs) - served} | {p50} | {p95} | {'; '.join(notes).replace('|', '/')} |")
    return row, lat


def _kind_note(crowd: Crowd, kind: str, reqs: list[dict], visitors: list[dict]) -> str:
    if kind == "explore":
        return f"{EXPLORE_PRESSES} Compare presses each (1 query, 3 documents)"
    if kind == "map":
        return f"{MAP_LINES} uploaded lines each, with rationale, PCA"
    if kind == "train-watch":
        start = [r["latency"] for r in reqs if r["api"] == "/start"]
        finished = [v["finished"] for v in visitors if "finished" in v]
        return ((f"Start answered in {start[0]:.2f} s; " if start else "") +
                (f"the job finished {finished[0]:.1f} s after Start" if finished else "the job did not finish") +
                "; p50 / p95 are of its /refresh_2 calls")
    if kind == "annotate":
        parts = [f"{r['api']} {r['latency']:.2f} s" for r in reqs]
        return "; ".join(parts) + "".join(f"; {v['note']}" for v in visitors if v["note"])
    return f"/refresh_2 every {TICK:.0f} s for the whole run"


def cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds (user + system) a process has used so far, from /proc; None where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, TypeError):
        return None


def cpu_note(cpu: dict, wall: float) -> str:
    """Who used the cores during the crowd: the visitors' clients share the machine with the app."""
    app = "" if cpu.get("app") is None else f", the app's process {cpu['app']:.0f} s (its training job not counted)"
    return (f"CPU used during the {wall:.0f} s: the visitors' clients (this process, at nice 19) "
            f"{cpu['clients']:.0f} s{app}.")


def mixed_report(crowd: Crowd, args, warm: float, wall: float, cpu: dict) -> tuple[str, bool]:
    """The table (Markdown) and whether the target was met."""
    lines = [f"A mixed crowd on the app in public mode, all at once, each visitor its own gradio_client "
             f"(model {args.model}, after one warm-up Compare of {warm:.1f} s): {EXPLORE_VISITORS} Explore, "
             f"{MAP_VISITORS} Map, 1 watching a training job (grace / supervised, 2 steps, B 2, K 2, 16 new tokens), "
             f"1 annotator and {IDLE_TABS} idle tabs. {wall:.0f} s in all. Machine: {machine()}. "
             + cpu_note(cpu, wall), "",
             "| visitor | completed | requests | served | errors | p50 | p95 | notes |",
             "|---|---|---|---|---|---|---|---|"]
    latencies = {}
    for kind in KINDS:
        row, latencies[kind] = kind_row(crowd, kind)
        lines.append(row)
    explore_lat = latencies["explore"]
    loads = [r["latency"] for r in crowd.requests if r["api"] == "/identify" and r["served"]]
    p50, p95 = spread(loads)
    lines += ["", f"Page loads (/identify): {len(loads)} of {len(crowd.visitors)} served, p50 {p50}, p95 {p95}."]
    errors = sum(not r["served"] for r in crowd.requests)
    everyone = all(v["done"] for v in crowd.visitors) and len(crowd.visitors) == len(crowd_plan())
    explore_p95 = percentile(explore_lat, 0.95) if explore_lat else float("inf")
    met = everyone and errors == 0 and explore_p95 < EXPLORE_P95_TARGET
    lines += ["", f"target: every visitor served, 0 errors, Explore p95 under {EXPLORE_P95_TARGET:.0f} s: "
                  f"{'met' if met else 'NOT met'} ({sum(v['done'] for v in crowd.visitors)} of {len(crowd_plan())} "
                  f"visitors completed, {errors} errors, Explore p95 "
                  f"{'–' if not explore_lat else f'{explore_p95:.1f} s'})."]
    return "\n".join(lines), met


def mixed_main(args) -> None:
    from browser import running_app

    t_begin = time.monotonic()
    deadline = t_begin + args.timeout
    env = {"GRACE_PUBLIC": "1"}
    if args.model not in ("default", "minilm"):
        env["GRACE_ALLOW_ANY_MODEL"] = "1"
    plan = crowd_plan()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        data, files = Path(tmp) / "data", Path(tmp) / "visitors"
        files.mkdir()
        pid: list[int] = []
        ctx = (running_app(args.model, str(data), timeout=min(300.0, args.timeout), env=env, pid=pid)
               if not args.url else _given(args.url))
        with ctx as url:
            # the app (started above) keeps its priority; the 32 clients in this process take the
            # lowest: on a Space they run on the visitors' own machines, not on its 2 cores
            os.nice(19)
            warm = warm_up(url, deadline)
            print(f"warm-up request: {warm:.1f} s; {len(plan)} visitors arrive", flush=True)
            crowd = Crowd(url, args.model, files, deadline, parties=len(plan))
            t0, clients0, app0 = time.monotonic(), time.process_time(), cpu_seconds(pid[0] if pid else None)
            run_crowd(crowd, plan)
            wall, app1 = time.monotonic() - t0, cpu_seconds(pid[0] if pid else None)
            cpu = {"clients": time.process_time() - clients0, "app": None if None in (app0, app1) else app1 - app0}
    body, met = mixed_report(crowd, args, warm, wall, cpu)
    report("load-mixed", "A mixed crowd at once", body, write=not args.no_write,
           command="benchmarks/load.py --mixed")
    if not met:
        raise SystemExit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--visitors", type=int, default=4)
    ap.add_argument("--mixed", action="store_true", help="a mixed crowd as a public Space sees it (see above)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds a visitor waits before giving up (default 300); with --mixed, the bound on the "
                         "whole run (default 900)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--url", default=None, help="a running app on this machine (default: start one)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.timeout is None:
        args.timeout = 900.0 if args.mixed else 300.0
    if not 1 <= args.visitors <= MAX_VISITORS:
        raise SystemExit(f"--visitors must be 1 to {MAX_VISITORS}.")
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("--url must be an app on this machine (127.0.0.1): this benchmark never loads a public app.")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.mixed:
        return mixed_main(args)
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
    report("load", "Several visitors at once", body, write=not args.no_write)
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
