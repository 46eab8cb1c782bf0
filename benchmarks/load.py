"""Several visitors at once: does the app serve them all, how long does each wait, and does each
see its place in the queue?

Starts the app on 127.0.0.1 (or uses ``--url``, which must be local), waits until its model is
warm, then N simulated visitors (gradio_client, one thread each) press Compare in Explore at the
same moment, each with 1 query and 3 documents of its own. Reports each visitor's latency, its
best queue position while waiting, p50 / p95, and exits non-zero when a visitor was not served.

``--mixed``: a mixed crowd as a public Space sees it (the app in public mode). First one Compare
alone on the quiet app (a fresh page pressing Compare 3 times with an Explore visitor's request;
the median is the lone Compare), then all at once: 4 Explore visitors (2 Compare presses each),
2 small Maps (12 uploaded lines each), 1 visitor watching a 2-step training job, 1 annotator
(import, start, 5 saves) and 24 idle tabs whose 2-second timers refresh the Train status. Reports
a table per kind of visitor and the goals: Explore p95 ÷ lone Compare ≤ 3x, annotation save p95
≤ 1 s, idle refresh p95 ≤ 1 s, each met or not. Exits non-zero unless every visitor was served
with 0 errors. ``--timeout`` bounds the whole run.

``--hostile``: the same (lone Compare, calm crowd), then the crowd again with one flooding visitor
from an address of its own (every client sends the address a Space's proxy would report): 6
threads sending the largest requests the page allows (Compare of 50 documents of 20,000 chars at
128 tokens, greedy and sampled; a Map of 2,000 rows in a 20 MB upload) and ones it refuses
(max_new_tokens 512, temperature 1e300, no_repeat_ngram 10**9, bfloat16), each from a new client
and identity. Goals: the calm Explore p95 within 1.5x of the calm run's, 0 errors for the calm
visitors, the flooder refused with sentences (counted by sentence). Exits non-zero only when a
calm visitor was not served or met an error.

    python benchmarks/load.py [--visitors 4] [--timeout 300] [--model default]
    python benchmarks/load.py --mixed [--timeout 900] [--model default]
    python benchmarks/load.py --hostile [--timeout 1800] [--model default]
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
LONE_PRESSES = 3  # the lone Compare: its median is the yardstick of Explore's p95 in the crowd
GOAL_EXPLORE_RATIO = 3.0  # the crowd's Explore p95 / the lone Compare
GOAL_SAVE_P95 = 1.0  # seconds: an annotation save in the crowd
GOAL_IDLE_P95 = 1.0  # seconds: an idle tab's status refresh in the crowd
GOAL_HOSTILE_RATIO = 1.5  # the calm Explore p95 with the flooder / without it
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

    def __init__(self, url: str, model: str, folder: Path, deadline: float, parties: int, tag: str = "crowd"):
        self.url, self.model, self.folder, self.deadline, self.tag = url, model, folder, deadline, tag
        self.go = threading.Event()  # set as everyone passes the start line (the flooder starts then)
        self.start_line = threading.Barrier(parties, action=self.go.set)
        self.stop = threading.Event()  # set when the active visitors are done: the idle tabs close
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.visitors: list[dict] = []
        self.flood: list[dict] = []  # --hostile: the flooder's requests

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
    served = [call(crowd, client, "explore", i, "/run_compare",
                   f"{query} ({crowd.tag} visitor {i + 1}, press {k + 1})",
                   "\n".join(docs), ok=lambda out: _text(out).startswith("Ranked by GRACE cosine")) is not None
              for k in range(EXPLORE_PRESSES)]
    return all(served)


def map_visitor(crowd: Crowd, client, i: int, v: dict) -> bool:
    """Maps a .txt file of its own (MAP_LINES lines) with rationales, PCA."""
    from gradio_client import handle_file

    path = crowd.folder / f"map-{crowd.tag}-{i + 1}.txt"
    path.write_text("\n".join(f"{s} ({crowd.tag} map {i + 1})" for s in MAP_SENTENCES[:MAP_LINES]) + "\n",
                    encoding="utf-8")
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

    path = crowd.folder / f"annotate-{crowd.tag}.jsonl"
    path.write_text("".join(json.dumps({"text": f"Mixed-crowd text {n + 1} ({crowd.tag}): bees feed on nectar.",
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


def address(kind: str, i: int) -> dict:
    """The X-Forwarded-For header of visitor ``i`` of ``kind``: each visitor its own address, as a
    Space's proxy reports strangers (the app trusts it: GRACE_TRUSTED_PROXY=1 in the crowd runs)."""
    n = KINDS.index(kind) if kind in KINDS else len(KINDS)
    return {"X-Forwarded-For": f"198.51.{100 + n}.{i + 1}"}


def visit(crowd: Crowd, kind: str, i: int) -> None:
    """One visitor: opens the page (its own client, ``/identify`` as the page does on load),
    waits at the start line for everyone, then follows the script of its kind."""
    from gradio_client import Client

    v = {"kind": kind, "visitor": i, "done": False, "note": ""}
    with crowd.lock:
        crowd.visitors.append(v)
    client = None
    try:
        client = Client(crowd.url, verbose=False, download_files=False, headers=address(kind, i))
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


def run_crowd(crowd: Crowd, plan: list[tuple[str, int]], extra=()) -> None:
    """Everyone at once; the idle tabs close when the active visitors are done (or at the deadline).
    ``extra``: functions of the crowd (the flooder's threads) that start as the crowd passes its
    start line and stop with the idle tabs."""
    threads = [(kind, threading.Thread(target=visit, args=(crowd, kind, i), daemon=True)) for kind, i in plan]
    threads += [("extra", threading.Thread(target=fn, args=(crowd,), daemon=True)) for fn in extra]
    for _, t in threads:
        t.start()
    for kind, t in threads:
        if kind not in ("idle", "extra"):
            t.join(max(0.0, crowd.left()) + 5)
    crowd.stop.set()
    for kind, t in threads:
        if kind in ("idle", "extra"):
            t.join(max(0.0, crowd.left()) + 10)


def lone_compare(url: str, model: str, folder: Path, deadline: float) -> tuple[list[float], Crowd]:
    """One visitor alone, before the crowd: a fresh page (``/identify``) pressing Compare
    LONE_PRESSES times in a row with the Explore visitors' request (1 query, 3 documents, the
    page's settings); its latencies (every press served, else the run stops)."""
    from gradio_client import Client

    crowd = Crowd(url, model, folder, deadline, parties=1, tag="alone")
    client = Client(url, verbose=False, download_files=False, headers=address("alone", 0))
    call(crowd, client, "explore", 0, "/identify", secrets.token_hex(24))
    query, docs = TOPICS[0]
    lat = []
    for k in range(LONE_PRESSES):
        t0 = time.monotonic()
        if call(crowd, client, "explore", 0, "/run_compare", f"{query} (alone, press {k + 1})", "\n".join(docs),
                ok=lambda out: _text(out).startswith("Ranked by GRACE cosine")) is None:
            raise SystemExit(f"the lone Compare was not served: {crowd.requests[-1]['error']}")
        lat.append(time.monotonic() - t0)
    return lat, crowd


def warm_up(url: str, crowd_deadline: float) -> float:
    """One Compare (not counted) so that the crowd meets a warm model; its seconds."""
    from gradio_client import Client

    t0 = time.monotonic()
    job = Client(url, verbose=False, download_files=False, headers=address("warm-up", 0)).submit(
        "warm-up", "one document", api_name="/run_compare")
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


# --- --hostile: one visitor flooding the app with the largest requests, fresh identities --------

FLOOD_THREADS = 6  # the flooder's requests in flight at once, each from a new client and identity
FLOOD_ADDRESS = "203.0.113.7"  # one machine: every identity it mints comes from this address
FLOOD_DOCS, FLOOD_CHARS = 50, 20_000  # grace.ui.common.MAX_DOCS / MAX_CHARS: the largest legal Compare
FLOOD_TOKENS = 128  # the page's largest Max rationale tokens (grace.serving.limits)
FLOOD_MAP_ROWS, FLOOD_MAP_BYTES = 2000, 20_000_000  # map_tab.MAX_MAP_TEXTS in common.MAX_UPLOAD_MB (20 MB)
# (name, endpoint, legal, settings by their label on the page)
FLOOD = [
    ("Compare, 50 documents of 20,000 chars, 128 tokens", "/run_compare", True, {"Max rationale tokens": 128}),
    ("Map, 2,000 rows in a 20 MB upload, direct vs with rationale, 128 tokens", "/make_map", True,
     {"Max rationale tokens": 128}),
    ("Compare, sampled, 50 documents of 20,000 chars, 128 tokens", "/run_compare", True,
     {"Max rationale tokens": 128, "Sample (else greedy)": True}),
    ("Compare, max_new_tokens 512", "/run_compare", False, {"Max rationale tokens": 512}),
    ("Compare, sampled at temperature 1e300", "/run_compare", False,
     {"Sample (else greedy)": True, "Temperature": 1e300}),
    ("Compare, no_repeat_ngram 10**9", "/run_compare", False, {"No-repeat n-gram": 10**9}),
    ("Compare, dtype bfloat16", "/run_compare", False, {"Precision": "bfloat16"}),
    ("Map of the 20 MB upload, max_new_tokens 512", "/make_map", False, {"Max rationale tokens": 512}),
]
REFUSED, SERVED, ERROR, UNFINISHED = "refused with a sentence", "served", "error", "still running at the end"


def with_settings(client, api_name: str, fixed: list, by_label: dict) -> list:
    """The endpoint's arguments: ``fixed`` first, then each setting by its label on the page (a
    label given by its start), else the page's default."""
    params = client.view_api(return_format="dict", print_info=False)["named_endpoints"][api_name]["parameters"]
    args = []
    for k, prm in enumerate(params):
        label = str(prm.get("label") or "")
        given = [v for name, v in by_label.items() if label.startswith(name)]
        args.append(fixed[k] if k < len(fixed) else given[0] if given else prm.get("parameter_default"))
    return args


def flood_payload(api_name: str, folder: Path, n: int) -> list:
    """The largest legal input of the endpoint, new each time (no cache answers it)."""
    from gradio_client import handle_file

    tag = secrets.token_hex(4)
    body = "The flooding visitor writes the longest text the page takes, again and again. "
    long = lambda k: (f"{tag} {k} " + body * (FLOOD_CHARS // len(body) + 1))[:FLOOD_CHARS]  # noqa: E731
    if api_name == "/run_compare":
        return [long("query"), "\n".join(long(d) for d in range(FLOOD_DOCS)), "raw cosine"]
    width = FLOOD_MAP_BYTES // FLOOD_MAP_ROWS - 1  # each row and its newline
    path = folder / f"flood-{n}.txt"
    path.write_text("\n".join((f"{tag} {r} " + body * (width // len(body) + 1))[:width]
                              for r in range(FLOOD_MAP_ROWS)) + "\n", encoding="utf-8")
    return ["uploaded file", handle_file(str(path)), "direct forward vs with rationale", "PCA", ""]


def flood_once(crowd: Crowd, name: str, api_name: str, legal: bool, settings: dict, n: int) -> None:
    """One flood request from a new client (a new session) with a new identity (``/identify``),
    followed until it ends or the calm crowd is done (then cancelled)."""
    from gradio_client import Client

    row = {"request": name, "legal": legal, "outcome": ERROR, "sentence": "", "page": ""}
    t0, job = time.monotonic(), None
    try:
        client = Client(crowd.url, verbose=False, download_files=False, headers={"X-Forwarded-For": FLOOD_ADDRESS})
        page = client.predict(secrets.token_hex(24), api_name="/identify")
        refused = [t for t in (page if isinstance(page, (tuple, list)) else [page]) if "⚠️" in str(t)]
        row["page"] = str(refused[0]).replace("⚠️", "").strip()[:160] if refused else "loaded"
        job = client.submit(*with_settings(client, api_name, flood_payload(api_name, crowd.folder, n), settings),
                            api_name=api_name)
        while not job.done():
            if crowd.stop.wait(0.5) or crowd.left() <= 0:
                job.cancel()
                row["outcome"] = UNFINISHED
                break
        else:
            text = _text(job.result(timeout=30))
            if text.startswith("⚠️"):
                row["outcome"], row["sentence"] = REFUSED, text.replace("⚠️", "", 1).strip()[:200]
            elif text.startswith("Ranked by GRACE cosine") or " texts mapped" in text.split("\n")[0]:
                row["outcome"] = SERVED
            else:
                row["sentence"] = f"answered: {text[:200]}"
    except Exception as exc:  # Gradio's own refusal (a value off the component's range) is a sentence too
        if job is not None and not job.done():
            job.cancel()
        said = str(exc).strip()
        if type(exc).__name__ == "AppError" and said and "Traceback" not in said and "raised an exception" not in said:
            row["outcome"], row["sentence"] = REFUSED, f"(Gradio) {said}"[:200]
        else:  # an error or a traceback
            row["sentence"] = f"{type(exc).__name__}: {said}"[:200]
    row["latency"] = time.monotonic() - t0
    with crowd.lock:
        crowd.flood.append(row)


def flooder(crowd: Crowd) -> None:
    """The flooding visitor: FLOOD_THREADS threads, each sending the FLOOD requests in turn (each
    from a fresh client and identity) from the crowd's start until the calm visitors are done."""
    def worker(n: int) -> None:
        k = n
        while not crowd.stop.is_set() and crowd.left() > 0:
            name, api_name, legal, settings = FLOOD[k % len(FLOOD)]
            flood_once(crowd, name, api_name, legal, settings, n)
            k += 1

    while not crowd.go.wait(0.5):
        if crowd.stop.is_set() or crowd.left() <= 0:
            return
    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(FLOOD_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, crowd.left()) + 40)


def flood_report(crowd: Crowd) -> tuple[list[str], bool]:
    """The flooder's table (one row per kind of request), the sentences it got, and whether every
    illegal request was refused with a sentence and no request ended in an error."""
    from collections import Counter

    lines = ["| flood request | sent | served | refused with a sentence | error | still running at the end |",
             "|---|---|---|---|---|---|"]
    for name, _, legal, _ in FLOOD:
        rows = [r for r in crowd.flood if r["request"] == name]
        c = Counter(r["outcome"] for r in rows)
        lines.append(f"| {name}{'' if legal else ' (illegal)'} | {len(rows)} | {c[SERVED]} | {c[REFUSED]} | "
                     f"{c[ERROR]} | {c[UNFINISHED]} |")
    said = Counter((r["outcome"], r["sentence"]) for r in crowd.flood if r["outcome"] in (REFUSED, ERROR))
    lines += ["", "What the flooder was told (count, outcome, sentence):"]
    lines += [f"- {n} × {outcome}: {sentence.replace('|', '/')}" for (outcome, sentence), n in said.most_common()]
    pages = Counter(r["page"] for r in crowd.flood if r["page"])
    lines += ["", "Its page loads (/identify, one per request): "
              + "; ".join(f"{n} × {p}" for p, n in pages.most_common()) + "."]
    illegal_ok = all(r["outcome"] in (REFUSED, UNFINISHED) for r in crowd.flood if not r["legal"]) and \
        any(r["outcome"] == REFUSED for r in crowd.flood if not r["legal"])
    no_error = not any(r["outcome"] == ERROR for r in crowd.flood)
    return lines, illegal_ok and no_error


# --- the reports -------------------------------------------------------------------------------


def goal_line(what: str, value: float | None, goal: float, unit: str) -> str:
    shown = "–" if value is None else f"{value:.2f}{unit}"
    met = value is not None and value <= goal
    return f"- {what}: {shown} (goal ≤ {goal:g}{unit}): {'met' if met else 'NOT met'}"


def crowd_table(crowd: Crowd, plan: list) -> tuple[list[str], dict]:
    """The table per kind of visitor, and the figures the goals are of."""
    lines = ["| visitor | completed | requests | served | errors | p50 | p95 | notes |",
             "|---|---|---|---|---|---|---|---|"]
    latencies = {}
    for kind in KINDS:
        row, latencies[kind] = kind_row(crowd, kind)
        lines.append(row)
    loads = [r["latency"] for r in crowd.requests if r["api"] == "/identify" and r["served"]]
    p50, p95 = spread(loads)
    lines += ["", f"Page loads (/identify): {len(loads)} of {len(crowd.visitors)} served, p50 {p50}, p95 {p95}."]
    saves = [r["latency"] for r in crowd.requests if r["api"] == "/save" and r["served"]]
    fig = {"explore_p95": percentile(latencies["explore"], 0.95) if latencies["explore"] else None,
           "save_p95": percentile(saves, 0.95) if saves else None,
           "idle_p95": percentile(latencies["idle"], 0.95) if latencies["idle"] else None,
           "errors": sum(not r["served"] for r in crowd.requests),
           "completed": sum(v["done"] for v in crowd.visitors), "visitors": len(plan)}
    fig["served"] = fig["completed"] == len(plan) and len(crowd.visitors) == len(plan) and fig["errors"] == 0
    return lines, fig


def mixed_goals(fig: dict, lone: float) -> list[str]:
    p95 = fig["explore_p95"]
    ratio, shown = (None, "–") if p95 is None else (p95 / lone, f"{p95:.2f} s")
    return [goal_line(f"Explore p95 ÷ lone Compare ({shown} ÷ {lone:.2f} s)", ratio, GOAL_EXPLORE_RATIO, "x"),
            goal_line("annotation save p95", fig["save_p95"], GOAL_SAVE_P95, " s"),
            goal_line("idle refresh p95", fig["idle_p95"], GOAL_IDLE_P95, " s"),
            f"- every visitor served, 0 errors: {'met' if fig['served'] else 'NOT met'} ({fig['completed']} of "
            f"{fig['visitors']} visitors completed, {fig['errors']} errors)"]


def crowd_intro(args, warm: float, lone: list[float]) -> str:
    return (f"The app in public mode (model {args.model}, after one warm-up Compare of {warm:.1f} s). The lone "
            f"Compare, measured first on the quiet app: one fresh page pressing Compare {LONE_PRESSES} times "
            f"(1 query, 3 documents, the page's settings, as each Explore visitor does): "
            f"{', '.join(f'{x:.2f}' for x in lone)} s, median {statistics.median(lone):.2f} s. Then the crowd, all at "
            f"once, each visitor its own gradio_client: {EXPLORE_VISITORS} Explore, {MAP_VISITORS} Map, 1 watching a "
            f"training job (grace / supervised, 2 steps, B 2, K 2, 16 new tokens), 1 annotator and {IDLE_TABS} idle "
            f"tabs. Machine: {machine()}.")


def crowd_phase(url: str, args, files: Path, deadline: float, tag: str, pid: list, extra=()) -> tuple:
    """One crowd (and ``extra``), timed: the crowd, its seconds, the CPU each side used."""
    plan = crowd_plan()
    crowd = Crowd(url, args.model, files, deadline, parties=len(plan), tag=tag)
    t0, clients0, app0 = time.monotonic(), time.process_time(), cpu_seconds(pid[0] if pid else None)
    run_crowd(crowd, plan, extra)
    wall, app1 = time.monotonic() - t0, cpu_seconds(pid[0] if pid else None)
    cpu = {"clients": time.process_time() - clients0, "app": None if None in (app0, app1) else app1 - app0}
    return crowd, wall, cpu


def crowd_main(args) -> None:
    """--mixed: the lone Compare, then the crowd. --hostile: the same, then the crowd again with
    the flooder from its own address (each client sends the address a Space's proxy would report)."""
    from browser import running_app

    deadline = time.monotonic() + args.timeout
    env = {"GRACE_PUBLIC": "1", "GRACE_GUEST_TRAINING": "1",  # the crowd's training watcher is a guest
           "GRACE_TRUSTED_PROXY": "1"}  # the clients' X-Forwarded-For names them, as on a Space
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
            # the app (started above) keeps its priority; the clients in this process (the crowd and
            # the flooder) take the lowest: on a Space they run on the visitors' own machines
            os.nice(19)
            warm = warm_up(url, deadline)
            lone, _ = lone_compare(url, args.model, files, deadline)
            print(f"warm-up request: {warm:.1f} s; lone Compare {', '.join(f'{x:.1f}' for x in lone)} s; "
                  f"{len(plan)} visitors arrive", flush=True)
            calm_deadline = deadline if args.mixed else time.monotonic() + 0.45 * (deadline - time.monotonic())
            calm, calm_wall, calm_cpu = crowd_phase(url, args, files, calm_deadline, "calm", pid)
            if args.hostile:
                print(f"calm crowd: {calm_wall:.0f} s; the crowd again with the flooder", flush=True)
                hostile, hostile_wall, hostile_cpu = crowd_phase(url, args, files, deadline, "hostile", pid,
                                                                 extra=[flooder])
    lone_s = statistics.median(lone)
    lines, fig = crowd_table(calm, plan)
    calm_body = "\n".join([crowd_intro(args, warm, lone), f"{calm_wall:.0f} s in all. " + cpu_note(calm_cpu, calm_wall),
                           "", *lines, "", "Goals:", *mixed_goals(fig, lone_s)])
    if args.mixed:
        report("load-mixed", "A mixed crowd at once", calm_body, write=not args.no_write,
               command="benchmarks/load.py --mixed")
        if not fig["served"]:
            raise SystemExit(1)
        return
    h_lines, h_fig = crowd_table(hostile, plan)
    f_lines, flood_ok = flood_report(hostile)
    calm_p95, h_p95 = fig["explore_p95"], h_fig["explore_p95"]
    ratio = None if None in (calm_p95, h_p95) else h_p95 / calm_p95
    shown = "–" if ratio is None else f"{h_p95:.2f} s ÷ {calm_p95:.2f} s"
    goals = [goal_line(f"calm Explore p95 with the flooder ÷ without ({shown})", ratio, GOAL_HOSTILE_RATIO, "x"),
             f"- calm visitors with the flooder: every one served, 0 errors: {'met' if h_fig['served'] else 'NOT met'} "
             f"({h_fig['completed']} of {h_fig['visitors']} completed, {h_fig['errors']} errors)",
             f"- the flooder refused with sentences (every illegal request refused, no request ended in an error): "
             f"{'met' if flood_ok else 'NOT met'}"]
    body = "\n".join([
        "### Calm: the mixed crowd alone", "", calm_body, "",
        "### Hostile: the same crowd again, with one flooding visitor", "",
        f"The flooder: {FLOOD_THREADS} threads, each sending in turn the largest requests the page allows and "
        f"requests it does not ({len(FLOOD)} kinds below), every one from a new gradio_client (a new session) "
        f"with a new identity (/identify), from the crowd's start until the calm visitors are done; then its "
        f"requests in flight are cancelled. {hostile_wall:.0f} s in all. " + cpu_note(hostile_cpu, hostile_wall), "",
        *h_lines, "", *f_lines, "", "Goals:", *goals, "",
        "The crowd's own goals with the flooder:", *mixed_goals(h_fig, lone_s)])
    report("load-hostile", "A flooding visitor in the mixed crowd", body, write=not args.no_write,
           command="benchmarks/load.py --hostile")
    if not (fig["served"] and h_fig["served"]):
        raise SystemExit(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--visitors", type=int, default=4)
    ap.add_argument("--mixed", action="store_true", help="a mixed crowd as a public Space sees it (see above)")
    ap.add_argument("--hostile", action="store_true", help="the mixed crowd, then again with a flooder (see above)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds a visitor waits before giving up (default 300); with --mixed or --hostile, the "
                         "bound on the whole run (default 900, --hostile 1800)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--url", default=None, help="a running app on this machine (default: start one)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.mixed and args.hostile:
        raise SystemExit("--hostile runs the mixed crowd first: give one of --mixed and --hostile.")
    if args.timeout is None:
        args.timeout = 1800.0 if args.hostile else 900.0 if args.mixed else 300.0
    if not 1 <= args.visitors <= MAX_VISITORS:
        raise SystemExit(f"--visitors must be 1 to {MAX_VISITORS}.")
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit("--url must be an app on this machine (127.0.0.1): this benchmark never loads a public app.")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.mixed or args.hostile:
        return crowd_main(args)
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
