"""The app as a public Space: strangers (gradio_client scripts and browsers) against one running
app in public mode, with its data folder outside the working and temp folders (as /data/grace
is on a Space). Each check is what a hostile or careless visitor would try."""

from __future__ import annotations

import json
import secrets
import shutil
import time
import uuid
from pathlib import Path

import pytest

from browser import CHROMIUM, CHROMIUM_ARGS, running_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LIMITS_ENV = {"GRACE_PUBLIC": "1", "GRACE_ALLOW_ANY_MODEL": "1", "GRACE_ABANDON_S": "3",  # the tiny model stands in for the default
              "GRACE_GUEST_TRAINING": "1",  # these guests train and export (a Space requires sign-in: see the #26 §4 tests)
              "GRACE_TRUSTED_PROXY": "1"}  # X-Forwarded-For names the visitor, as a Space's proxy writes it
COOLDOWN_S = 10  # a visitor's wait between jobs (60 s on a Space): short, but long enough to be seen


@pytest.fixture(scope="module")
def space(tiny_model_dir):
    """(url, data folder, app pid). The data folder holds what a crash leaves behind: an empty
    training claim and a cut result file beside a good one."""
    data = Path.home() / f".grace-public-test-{uuid.uuid4().hex[:8]}"
    (data / "runs").mkdir(parents=True)
    (data / "runs" / ".active.json").write_text("")  # killed between create and write
    (data / "results").mkdir()
    shipped = Path(__file__).resolve().parents[1] / "results" / "reproduce" / "base-reasoning.json"
    shutil.copyfile(shipped, data / "results" / "legacy.json")  # a row saved before rows had owners
    (data / "results" / "cut.json").write_text('{"label": "half a fi')
    pid: list = []
    try:
        env = {**LIMITS_ENV, "GRACE_SLOT_LOG": str(data / "slot.log"), "GRACE_JOB_COOLDOWN": str(COOLDOWN_S)}
        with running_app(str(tiny_model_dir), str(data), env=env, pid=pid) as url:
            yield url, data, pid[0]
    finally:
        shutil.rmtree(data, ignore_errors=True)


def visitor(url: str, address: str | None = None):
    """A new visitor: their own session and browser token, identified as the page does on load;
    ``address``: the one the proxy reports for them (X-Forwarded-For), else this machine's."""
    from gradio_client import Client

    c = Client(url, verbose=False, headers={"X-Forwarded-For": address} if address else None)
    c.predict(secrets.token_hex(24), api_name="/identify")
    return c


def settings(model: str, **kw) -> list:
    from grace.ui.common import APP_DEFAULTS, panel_values

    return panel_values(APP_DEFAULTS.with_(model=model, max_new_tokens=4, **kw))


def _msg(out) -> str:
    """The first output, as the page shows it (Markdown escapes removed)."""
    return (out[0] if isinstance(out, (list, tuple)) else out).replace("\\", "")


def _status(client) -> str:
    return _msg(client.predict(api_name="/refresh_2"))


def _picked(compare_out) -> str:
    """The document Compare selected for inspection (its dropdown's value; States are not outputs)."""
    pick = compare_out[6]
    return pick["value"] if isinstance(pick, dict) else pick


TRAIN = ("grace / supervised", None, 40, 2, 2, 0.2, 0.2, 0.1, 4, 4)


def test_train_fields_are_bounded_on_the_server(space, tiny_model_dir):
    url, data, _ = space
    c = visitor(url)
    bad = {2: 10**9, 3: 64, 4: 100, 8: 2048, 9: 10**5, 5: -1.0, 6: 50.0, 7: 0.0}  # position in TRAIN -> value
    before = set((data / "runs").iterdir())
    for pos, value in bad.items():
        args = list(TRAIN)
        args[pos] = value
        msg = _msg(c.predict(f"bounded-{pos}", *args, str(tiny_model_dir), api_name="/start"))
        assert msg.startswith("⚠️") and "\n" not in msg, (pos, msg)
    assert set((data / "runs").iterdir()) == before  # nothing created
    # the form says the bounds and the wall-clock limit
    largest = c.predict("grace / supervised", 40, 8, 8, 64, "default", api_name="/estimate")
    assert "It will stop and save after 15 minutes" in largest


def test_a_second_visitor_cannot_cancel_resume_or_remove(space, tiny_model_dir):
    url, data, _ = space
    alice, bob = visitor(url), visitor(url)
    # the empty claim a crash left does not block the first start
    msg = _msg(alice.predict("alices-run", *TRAIN, str(tiny_model_dir), api_name="/start"))
    assert msg.startswith("Started"), msg
    owner = json.loads((data / "runs" / "alices-run" / "owner.json").read_text())
    assert owner["owner"].startswith("anon:") and owner["uploaded"] is False
    # Bob's page is not pointed at Alice's job: his status says the slot is busy, names nothing
    line = _status(bob)
    assert "another visitor's job" in line and "alices-run" not in line
    assert _msg(bob.predict(api_name="/cancel")) == "No job selected."
    # Bob starting the same name with the same settings (a resume) is refused
    refused = _msg(bob.predict("alices-run", *TRAIN, str(tiny_model_dir), api_name="/start"))
    assert "belongs to another visitor" in refused
    # Alice's own page follows her job; she cancels it
    assert "alices-run" in _status(alice)
    assert "Cancelling" in _msg(alice.predict(api_name="/cancel"))
    deadline = time.time() + 120
    while time.time() < deadline and "cancelled" not in _status(alice):
        time.sleep(1)
    # a partial last line in metrics.jsonl (power loss) does not block her resume
    with open(data / "runs" / "alices-run" / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "lo')
    resumed = _msg(alice.predict("alices-run", *TRAIN, str(tiny_model_dir), api_name="/start"))
    if "start again in" in resumed:  # her cooldown after the cancelled job
        time.sleep(COOLDOWN_S)
        resumed = _msg(alice.predict("alices-run", *TRAIN, str(tiny_model_dir), api_name="/start"))
    assert resumed.startswith("Resuming"), resumed
    alice.predict(api_name="/cancel")
    # Evaluate: Bob cannot remove Alice's row
    status = alice.predict("quick", ["WordNetRetrieval"], *settings(str(tiny_model_dir)), api_name="/run_eval")[0]
    assert "average" in status, status
    rows = {f.stem: json.loads(f.read_text()) for f in (data / "results").glob("*.json") if f.name != "cut.json"}
    mine = [key for key, r in rows.items() if r.get("owner", "").startswith("anon:")]
    assert len(mine) == 1
    row = mine[0]  # a row is removed by its file's key (the Saved row list's value), not by its label
    bob.predict(api_name="/saved")  # as his page does when it loads: the rows to pick from
    assert "belongs to another visitor" in bob.predict(row, api_name="/remove")[0]
    legacy_row = "legacy"
    assert "belongs to another visitor" in bob.predict(legacy_row, api_name="/remove")[0]  # nobody's: kept
    assert alice.predict(row, api_name="/remove")[0].startswith("Removed")


def test_a_cut_result_file_does_not_hide_the_others(space):
    url, _, _ = space
    table = visitor(url).predict(api_name="/saved")[0]
    assert "Base w/ reasoning" in table and "cut.json" in table  # the good row, and a note naming the cut file


def test_two_browsers_see_each_others_runs_read_only(space, tiny_model_dir):
    """Bob opens Alice's run from the runs table: he sees it, and his Cancel and Remove are refused."""
    from playwright.sync_api import sync_playwright

    url, data, _ = space
    alice = visitor(url)
    deadline = time.time() + 120
    while time.time() < deadline:
        msg = _msg(alice.predict("alices-second", *TRAIN[:2], 2, *TRAIN[3:], str(tiny_model_dir), api_name="/start"))
        if msg.startswith("Started"):
            break
        time.sleep(2)  # the earlier test's job is still ending
    assert msg.startswith("Started"), msg
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            bob = browser.new_context(viewport={"width": 1300, "height": 1000}).new_page()
            bob.goto(url)
            bob.click("button[role=tab]:has-text('Train')")
            bob.wait_for_function("() => document.querySelector('#train-runs') && "
                                  "document.querySelector('#train-runs').innerText.includes('alices-second')",
                                  timeout=60_000)
            assert "another visitor" in bob.inner_text("#train-runs")
            bob.locator("#train-runs .cell-wrap:has-text('alices-second') >> visible=true").first.click()
            bob.wait_for_function("() => document.querySelector('#train-msg').innerText.includes('alices-second')",
                                  timeout=30_000)
            bob.click("#train-cancel")
            bob.wait_for_function("() => document.querySelector('#train-msg').innerText.includes('another visitor')",
                                  timeout=30_000)
            bob.click("#train-remove")
            bob.wait_for_function("() => document.querySelector('#train-msg').innerText.includes('another visitor')",
                                  timeout=30_000)
            assert not (data / "runs" / "alices-second" / "cancel").exists()
            assert (data / "runs" / "alices-second").is_dir()
        finally:
            browser.close()
    alice.predict(api_name="/refresh_2")
    alice.predict(api_name="/cancel")


def test_explore_what_if_is_bounded_and_downloads_work_outside_tmp(space, tiny_model_dir):
    url, data, _ = space
    c = visitor(url)
    s = settings(str(tiny_model_dir))
    out = c.predict("Where is Machu Picchu?", "Machu Picchu is in Peru.\nStocks fell.", "raw cosine", *s,
                    api_name="/run_compare")
    assert out[0].startswith("Ranked by GRACE cosine"), out[0]
    choice = _picked(out)
    huge = "Peru " * 40_000  # 200,000 characters
    t0 = time.time()
    msg = c.predict(choice, "a query rationale", huge, *s, api_name="/what_if")[0]
    assert msg.startswith("⚠️") and "at most 256 tokens" in msg and time.time() - t0 < 30
    long = "Peru Andes Inca " * 200  # within the character bound: cut at the token limit, said on the page
    msg = c.predict(choice, "a query rationale", long, *s, api_name="/what_if")[0]
    assert "cut to its first 256 tokens" in msg, msg
    # the Explore export downloads although the data folder is outside the working and temp folders
    path = c.predict(api_name="/export_table")[1]
    path = path["value"] if isinstance(path, dict) else path  # the file, shown once there is one
    assert Path(path).read_text(encoding="utf-8").startswith("query,rank")
    # exports stay under the per-visitor bound
    for _ in range(12):
        c.predict(api_name="/export_table")
    folders = [d for d in (data / "exports").iterdir() if d.is_dir()]
    assert max(len(list(d.iterdir())) for d in folders) <= 10
    # a Map download too
    out = c.predict("sample: 100 passages", None, "with rationale", "PCA", "", *s, api_name="/make_map")
    assert out[0].startswith("100 texts mapped"), out[0]
    assert Path(out[3]).read_text(encoding="utf-8").startswith("panel,text")


def test_start_cancel_start_never_runs_two_generations(space, tiny_model_dir):
    """Start, cancel, start again (three times): the model slot's log shows one holder at a time,
    and each cancelled generation stopped within a few seconds of its cancel (the slot is freed by
    the stopped work, not by Gradio's event)."""
    url, data, _ = space
    log = data / "slot.log"
    c = visitor(url)
    s = settings(str(tiny_model_dir))
    from grace.ui.common import _panel_fields

    s[_panel_fields().index("max_new_tokens")] = 128
    docs = "\n".join(f"Document number {i} about the mountains of Peru." for i in range(50))
    before = len(log.read_text().splitlines()) if log.exists() else 0
    cancels = []
    for _ in range(3):
        job = c.submit("q", docs, "raw cosine", *s, api_name="/run_compare")
        time.sleep(1.5)
        job.cancel()
        cancels.append(time.time())
    final = c.predict("q", "one short document", "raw cosine", *settings(str(tiny_model_dir)),
                      api_name="/run_compare")
    assert final[0].startswith("Ranked by GRACE cosine"), final[0]
    spans = _request_spans(log, before, "explore")
    assert len(spans) >= 2
    assert all(end <= nxt + 1e-3 for (_, end), (nxt, _) in zip(spans, spans[1:]))  # never two at once
    for (start, end), cancelled in zip(spans, cancels):  # each cancelled one stopped soon after its cancel
        assert end - cancelled < 10, (start, end, cancelled)


def _request_spans(log: Path, before: int, what: str) -> list[tuple[float, float]]:
    """(first start, last end) of each request of kind ``what`` in the engine's log (a line per
    request per turn: what, start, end, request id), in order of start."""
    spans: dict[str, list[float]] = {}
    for line in (log.read_text().splitlines() if log.exists() else [])[before:]:
        kind, start, end, rid = line.split()
        if kind == what:
            s = spans.setdefault(rid, [float(start), float(end)])
            s[0], s[1] = min(s[0], float(start)), max(s[1], float(end))
    return sorted(tuple(v) for v in spans.values())


def test_an_api_client_that_disconnects_is_cancelled(space, tiny_model_dir, tmp_path):
    """A script starts a 2,000-text Map and dies without cancelling: Gradio stops iterating its
    handler, its session's unload cancels it (or, failing that, its heartbeat stops and the engine
    drops it as abandoned: GRACE_ABANDON_S, 3 s here) instead of embedding the rest of the corpus."""
    STOPS = ("map:cancelled", "map:abandoned")
    import subprocess
    import sys

    url, data, _ = space
    log = data / "slot.log"
    before = len(log.read_text().splitlines()) if log.exists() else 0
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"Passage {i} about the rivers and mountains of Peru.\n" for i in range(2000)))
    script = f"""
import sys, time
sys.path[:0] = {[str(Path(__file__).parent), str(Path(__file__).parents[1])]!r}
from gradio_client import handle_file
from test_public_space import settings, visitor
from grace.ui.common import _panel_fields
c = visitor({url!r})
s = settings({str(tiny_model_dir)!r})
s[_panel_fields().index("max_new_tokens")] = 128
c.submit("uploaded file", handle_file({str(corpus)!r}), "with rationale", "PCA", "", *s, api_name="/make_map")
time.sleep(600)
"""
    child = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not _request_spans(log, before, "map"):
            time.sleep(0.5)
        assert _request_spans(log, before, "map"), "the map never reached the model"
    finally:
        child.kill()  # the client dies: its connection drops, nobody cancels
        child.wait()
    died = time.time()
    lines = []
    while time.time() < died + 60:
        lines = [line.split() for line in log.read_text().splitlines()[before:]]
        if any(what == "map:abandoned" for what, *_ in lines):
            break
        time.sleep(1)
    stopped = [float(start) for what, start, _, _ in lines if what in STOPS]
    assert stopped and stopped[0] - died < 30, lines[-3:]
    time.sleep(2)
    last_end = max(float(end) for what, _, end, _ in (line.split() for line in log.read_text().splitlines()[before:])
                   if what == "map")
    assert last_end <= stopped[0] + 15  # no map turns after the drop but the one running


def test_annotations_are_the_visitors_own_and_imports_are_checked(space, tmp_path):
    url, _, _ = space
    c = visitor(url)
    out = c.predict("alice", False, api_name="/start_1")
    assert "guest:" in json.dumps(out) and "alice" not in json.dumps(out)  # the typed name is not who you are
    bad = tmp_path / "items.jsonl"
    bad.write_text('{"text": "a", "rationale": "b"}\n{"text": "c", "rationale": "d", "similarity": "abc"}\n')
    from gradio_client import handle_file

    msg = c.predict(handle_file(str(bad)), api_name="/import_items")[0]
    assert msg.startswith("⚠️") and "line 2" in msg and "\n" not in msg
    good = tmp_path / "one.jsonl"
    good.write_text('{"text": "a text to rate", "rationale": "its rationale"}\n')
    assert "Imported 1 new item" in c.predict(handle_file(str(good)), api_name="/import_items")[0]
    out = c.predict("alice", False, api_name="/start_1")
    item_panel = json.dumps(out)
    assert "a text to rate" in item_panel
    saved = c.predict(4, 4, 4, False, "x" * 5000, False, api_name="/save")
    assert any(isinstance(v, str) and "2,000" in v for v in saved)


def test_the_server_keeps_a_bounded_number_of_comparisons(space, tiny_model_dir):
    """A script that opens many sessions piles up keys, not hidden states: after 8 newer
    comparisons the oldest is gone, and its page says so in one line instead of failing."""
    url, _, _ = space
    s = settings(str(tiny_model_dir))
    first = visitor(url)
    out = first.predict("q", "doc one\ndoc two", "raw cosine", *s, api_name="/run_compare")
    assert out[0].startswith("Ranked")
    choice = _picked(out)
    for _ in range(8):
        visitor(url).predict("q", "another doc", "raw cosine", *s, api_name="/run_compare")
    msg = first.predict(choice, "a", "b", *s, api_name="/what_if")[0]
    assert "no longer kept on the server" in msg


# --- bounded input and disk (#26 §5) ---


def _start_when_free(client, name: str, tiny_model_dir, upload=None) -> str:
    """Start a job once no other test's job holds the training slot (it may still be ending)."""
    args = list(TRAIN)
    args[1] = upload
    deadline = time.time() + 120
    while True:
        msg = _msg(client.predict(name, *args, str(tiny_model_dir), api_name="/start"))
        if "is still running" not in msg or time.time() > deadline:
            return msg
        time.sleep(2)


def test_encode_settings_are_bounded_on_the_server(space, tiny_model_dir):
    """What the page's controls cannot send, a script cannot either: each refused in one sentence
    naming the control, before any model work. (Gradio's sliders refuse an out-of-range value
    themselves; numbers and an empty list choice reach the handler, which refuses them.)"""
    from gradio_client.exceptions import AppError

    from grace.ui.common import _panel_fields

    url, _, _ = space
    c = visitor(url)
    for field, value, words in [("max_new_tokens", 512, "128"), ("temperature", 1e300, "2"),
                                ("no_repeat_ngram", 10**9, "No-repeat n-gram must be from 0 to 8 on this public app"),
                                ("dtype", None, "Precision must be one of float32, auto on this public app"),
                                ("layer", -10**6, "Layer must be from -65 to 64 on this public app")]:
        s = settings(str(tiny_model_dir))
        s[_panel_fields().index(field)] = value
        t0 = time.time()
        try:
            msg = _msg(c.predict("q", "one document", "raw cosine", *s, api_name="/run_compare"))
            assert msg.startswith("⚠️"), (field, msg)
        except AppError as exc:  # refused by the component before the handler
            msg = str(exc)
        assert words in msg and "\n" not in msg, (field, msg)
        assert time.time() - t0 < 30


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_a_huge_map_upload_is_stopped_at_the_row_limit(space, tiny_model_dir, tmp_path):
    """A legal 18 MB upload of 900,000 lines is refused at its 2,001st text, by its own name, without
    the app's memory growing by the whole file's parse."""
    from gradio_client import handle_file

    from grace.ui.map_tab import MAX_MAP_TEXTS, MODES, SOURCES

    url, _, pid = space
    big = tmp_path / "corpus.txt"
    big.write_text("a short text to map\n" * 900_000)
    c = visitor(url)
    before = _rss_mb(pid)
    out = c.predict(SOURCES[2], handle_file(str(big)), MODES[0], "PCA", "", *settings(str(tiny_model_dir)),
                    api_name="/make_map")
    assert _msg(out) == f"⚠️ corpus.txt has more than {MAX_MAP_TEXTS:,} texts; the limit is {MAX_MAP_TEXTS:,}."
    assert _rss_mb(pid) - before < 100, (before, _rss_mb(pid))


def test_a_visitors_annotation_queue_is_capped(space, tmp_path):
    from gradio_client import handle_file

    from analysis.annotations import MAX_ITEMS_PER_OWNER

    url, _, _ = space
    c = visitor(url)
    many = tmp_path / "many.jsonl"
    many.write_text("".join(json.dumps({"text": f"my text {i}", "rationale": "r"}) + "\n"
                            for i in range(MAX_ITEMS_PER_OWNER + 1)))
    msg = _msg(c.predict(handle_file(str(many)), api_name="/import_items"))
    assert msg.startswith("⚠️") and f"at most {MAX_ITEMS_PER_OWNER:,} items" in msg and "\n" not in msg, msg
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps({"text": "my text 0", "rationale": "r"}) + "\n")
    assert "Imported 1 new item" in _msg(c.predict(handle_file(str(one)), api_name="/import_items"))  # none kept


def test_a_failed_training_start_stores_no_upload_and_names_no_path(space, tiny_model_dir, tmp_path):
    from gradio_client import handle_file

    url, data, _ = space
    one = tmp_path / "mine.jsonl"
    one.write_text(json.dumps({"query": "q", "positive": "p", "negative": "n"}) + "\n")  # 1 record; batch 2
    uploads = data / "uploads"
    before = set(uploads.iterdir()) if uploads.is_dir() else set()
    msg = _start_when_free(visitor(url), "one-record", tiny_model_dir, handle_file(str(one)))
    assert msg.startswith("⚠️") and "the uploaded file has 1 records" in msg, msg
    assert "/" not in msg and "gradio" not in msg  # no server path, no upload hash
    assert (set(uploads.iterdir()) if uploads.is_dir() else set()) == before


def test_a_full_runs_folder_refuses_and_evicts_nobody(space, tiny_model_dir):
    """60 runs of another visitor fill the folder: a new start is refused in a sentence, and none of
    theirs is removed to make room."""
    from grace.files.run_folder import RunFolder
    from grace.ui.storage import MAX_RUNS_TOTAL

    url, data, _ = space
    present = len(list((data / "runs").glob("*/config.json")))
    theirs = []
    for i in range(max(0, MAX_RUNS_TOTAL - present)):
        run = RunFolder(data / "runs" / f"someone-elses-{i}")
        run.create()
        run.write_config({"method": "grace", "mode": "supervised", "steps": 2})
        run.write_status({"state": "finished", "step": 2, "steps": 2, "ended": 1.0})
        run.write_owner({"owner": "anon:" + "0" * 20, "name": "guest:00000000", "uploaded": False})
        theirs.append(run.path)
    try:
        msg = _start_when_free(visitor(url), "one-more", tiny_model_dir)
        assert msg.startswith("⚠️") and f"limit of {MAX_RUNS_TOTAL} runs" in msg, msg
        assert all(p.is_dir() for p in theirs)
        assert not (data / "runs" / "one-more").exists()
    finally:
        for p in theirs:
            shutil.rmtree(p, ignore_errors=True)


def test_a_visitor_waits_between_jobs(space, tiny_model_dir):
    url, _, _ = space
    c = visitor(url)
    msg = _start_when_free(c, "cooldown-first", tiny_model_dir)
    assert msg.startswith("Started"), msg
    c.predict(api_name="/cancel")
    deadline = time.time() + 120
    while time.time() < deadline and "cancelled" not in _status(c):
        time.sleep(0.5)
    msg = _msg(c.predict("cooldown-second", *TRAIN, str(tiny_model_dir), api_name="/start"))
    assert msg.startswith("⚠️ Your previous job ended") and f"waits {COOLDOWN_S} s between jobs" in msg, msg
    assert "start again in" in msg and "\n" not in msg


# --- identity and ownership (#26 §4) ---

def _shown_name(out) -> str:
    """The display name a page shows its visitor (``guest:`` + 8 hex)."""
    import re

    found = re.search(r"guest:[0-9a-f]{8}", json.dumps(out))
    assert found, out
    return found.group(0)


def _annotators(data: Path) -> dict:
    """The annotation store's annotators: key -> display name."""
    import sqlite3

    with sqlite3.connect(data / "annotations.sqlite") as conn:
        return dict(conn.execute("SELECT name, display FROM annotators").fetchall())


def test_annotators_are_keyed_by_the_full_id_and_an_import_changes_only_your_own(space, tmp_path):
    from gradio_client import handle_file

    url, data, _ = space
    alice, mallory = visitor(url), visitor(url)
    text = f"alice's private text {uuid.uuid4().hex[:6]}"
    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"text": text, "rationale": "its rationale"}) + "\n")
    assert "your own queue" in alice.predict(handle_file(str(mine)), api_name="/import_items")[0]
    name = _shown_name(alice.predict(None, False, api_name="/start_1"))
    saved = alice.predict(5, 5, 5, False, "alice's secret", False, api_name="/save")
    assert any(isinstance(v, str) and "Saved" in v for v in saved), saved
    keys = [k for k, shown in _annotators(data).items() if shown == name]
    assert len(keys) == 1 and keys[0].startswith("anon:") and len(keys[0]) == 25  # 80 bits, not the 32 shown
    # Mallory's file names Alice (by the name shown, and by her full id): refused whole, nothing changed
    theirs = tmp_path / "theirs.jsonl"
    for who in (name, keys[0]):
        theirs.write_text(json.dumps({"kind": "rating", "text": text, "rationale": "its rationale", "annotator": who,
                                      "faithfulness": 1, "informativeness": 1, "fluency": 1,
                                      "comment": "overwritten"}) + "\n")
        msg = _msg(mallory.predict(handle_file(str(theirs)), api_name="/import_items"))
        assert "only your own ratings" in msg and "\n" not in msg
    import sqlite3

    with sqlite3.connect(data / "annotations.sqlite") as conn:
        comments = [r[0] for r in conn.execute("SELECT comment FROM ratings r JOIN annotators a ON a.id = r.annotator_id "
                                               "WHERE a.name = ?", (keys[0],))]
    assert comments == ["alice's secret"]


def test_texts_sent_to_annotation_stay_in_the_senders_queue(space, tiny_model_dir):
    url, _, _ = space
    alice, bob = visitor(url), visitor(url)
    secret = f"Alice's confidential memo {uuid.uuid4().hex[:6]} about Peru."
    out = alice.predict("Where is Machu Picchu?", secret, "raw cosine", *settings(str(tiny_model_dir)),
                        api_name="/run_compare")
    assert out[0].startswith("Ranked"), out[0]
    sent = _msg(alice.predict(api_name="/send_to_annotation"))
    assert sent.startswith("Sent") and "your own annotation queue" in sent, sent
    seen = [json.dumps(bob.predict(None, False, api_name="/start_1"))]
    for _ in range(40):  # Bob walks his whole queue
        seen.append(json.dumps(bob.predict(False, api_name="/skip")))
        if "No other unrated item" in seen[-1] or "Nothing left" in seen[-1]:
            break
    assert not any(secret in s for s in seen)
    walked = [json.dumps(alice.predict(None, False, api_name="/start_1"))]
    for _ in range(40):
        if any(secret in s for s in walked):
            break
        walked.append(json.dumps(alice.predict(False, api_name="/skip")))
    assert any(secret in s for s in walked)  # in her own queue


def test_identity_survives_a_flood_of_fresh_sessions(space):
    """~2,100 calls to a queue=False endpoint, each with a fresh session, evict every page's
    Gradio State (2,000 kept in public mode); the visitor is still who they were."""
    import httpx
    from concurrent.futures import ThreadPoolExecutor

    url, _, _ = space
    alice = visitor(url)
    name = _shown_name(alice.predict(None, False, api_name="/start_1"))
    config = httpx.get(url + "config", timeout=30).json()
    dep = next(d for d in config["dependencies"] if d.get("api_name") == "cancel_compare")

    with httpx.Client(base_url=url, timeout=30) as http:
        def call(_):
            return http.post("gradio_api/run/predict", json={"fn_index": dep["id"], "data": [None] * len(dep["inputs"]),
                                                             "session_hash": uuid.uuid4().hex}).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(call, range(2_100)))
    assert codes.count(200) >= 2_050, codes[:5]
    out = alice.predict(None, False, api_name="/start_1")
    assert "no visitor identity" not in json.dumps(out) and _shown_name(out) == name


def test_a_guest_cannot_train_or_export_without_the_switch_and_page_loads_are_limited(tiny_model_dir):
    """A second small public app without GRACE_GUEST_TRAINING: a guest's Start and Export are refused
    with a sentence, and a fourth page load from one address within a minute is refused."""
    data = Path.home() / f".grace-public-guest-{uuid.uuid4().hex[:8]}"
    env = {"GRACE_PUBLIC": "1", "GRACE_ALLOW_ANY_MODEL": "1", "GRACE_PAGE_LOADS_PER_MINUTE": "3"}
    try:
        with running_app(str(tiny_model_dir), str(data), env=env) as url:
            guest = visitor(url)
            msg = _msg(guest.predict("guest-run", *TRAIN, str(tiny_model_dir), api_name="/start"))
            assert msg.startswith("⚠️") and "needs a signed-in account" in msg and "\n" not in msg
            assert not (data / "runs" / "guest-run").exists()
            out = guest.predict("Where is Machu Picchu?", "Machu Picchu is in Peru.", "raw cosine",
                                *settings(str(tiny_model_dir)), api_name="/run_compare")
            assert out[0].startswith("Ranked"), out[0]
            msg, file = guest.predict(api_name="/export_table")
            assert "needs a signed-in account" in _msg(msg) and "\n" not in msg
            assert not any((data / "exports").glob("*/*")) if (data / "exports").exists() else True
            visitor(url), visitor(url)  # the second and third page loads from this address
            from gradio_client import Client

            late = Client(url, verbose=False)
            shown = _msg(late.predict(secrets.token_hex(24), api_name="/identify")[-1])
            assert shown.startswith("⚠️ Too many new pages") and "\n" not in shown
            assert "no visitor identity" in json.dumps(late.predict(None, False, api_name="/start_1"))
    finally:
        shutil.rmtree(data, ignore_errors=True)


# --- the model engine (#26 §1-3) ---

def test_the_queue_cannot_be_bypassed_with_direct_posts(space, tiny_model_dir):
    """With GRACE_PUBLIC=1 off a Space, Gradio used to leave its REST routes open: a direct POST
    ran a model event outside every concurrency limit. Now only the queue serves it."""
    import urllib.error
    import urllib.request

    url, _, _ = space
    body = json.dumps({"data": [None, "q", "a document", "raw cosine", *settings(str(tiny_model_dir))]}).encode()
    req = urllib.request.Request(url + "gradio_api/run/run_compare", data=body,
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code in (400, 403, 404)
    assert "queue" in err.value.read().decode("utf-8", "replace").lower()


def test_a_crowd_of_visitors_is_decoded_in_shared_batches(space, tiny_model_dir):
    """Four visitors press Compare at once: their rows meet in the engine's batches (the log shows
    turns that served several requests at the same moment), and each gets its own ranking."""
    url, data, _ = space
    log = data / "slot.log"
    before = len(log.read_text().splitlines()) if log.exists() else 0
    clients = [visitor(url) for _ in range(4)]
    s = settings(str(tiny_model_dir))
    from grace.ui.common import _panel_fields

    s[_panel_fields().index("max_new_tokens")] = 128  # long enough that the four requests overlap
    jobs = [c.submit(f"query of visitor {i}", "\n".join(f"document {j} of visitor {i}" for j in range(40)),
                     "raw cosine", *s, api_name="/run_compare") for i, c in enumerate(clients)]
    outs = [j.result(timeout=180) for j in jobs]
    assert all(o[0].startswith("Ranked by GRACE cosine") for o in outs), [o[0] for o in outs]
    turns: dict[tuple[str, str], set[str]] = {}
    for line in log.read_text().splitlines()[before:]:
        what, start, end, rid = line.split()
        if what == "explore":
            turns.setdefault((start, end), set()).add(rid)
    assert max(len(r) for r in turns.values()) >= 2  # at least one batch held two visitors' rows


def test_fresh_identities_from_one_address_are_capped_and_share_one_turn(space, tiny_model_dir):
    """A flooder behind one address opens a new identity per request: past REQUESTS_PER_ADDRESS
    waiting requests it is refused with a sentence, while a visitor at another address is served
    (charged less model time, before the flood's long rows)."""
    from grace.ui.common import MAX_CHARS, MAX_DOCS, _panel_fields
    from grace.ui.requests import REQUESTS_PER_ADDRESS

    url, data, _ = space
    log = data / "slot.log"
    before = len(log.read_text().splitlines()) if log.exists() else 0
    s = settings(str(tiny_model_dir))
    s[_panel_fields().index("max_new_tokens")] = 128
    long = ("The rivers and mountains of Peru, described at the greatest length the page allows. " * 300)[:MAX_CHARS]
    docs = "\n".join(f"{j} {long}" for j in range(MAX_DOCS))  # the page's largest: minutes of model work
    flood = [visitor(url, "203.0.113.7").submit(f"flood query {i}", docs, "raw cosine", *s, api_name="/run_compare")
             for i in range(REQUESTS_PER_ADDRESS)]
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # every flood request has reached the model
            lines = log.read_text().splitlines()[before:] if log.exists() else []
            ids = {line.split()[3] for line in lines if line.startswith("explore ")}
            if len(ids) >= REQUESTS_PER_ADDRESS:
                break
            time.sleep(0.1)
        extra = visitor(url, "203.0.113.7").predict("one more", docs, "raw cosine", *s, api_name="/run_compare")
        calm = visitor(url, "198.51.100.1").predict("a calm query", "a calm document", "raw cosine", *s,
                                                    api_name="/run_compare")
        assert "already has" in _msg(extra) and "requests waiting" in _msg(extra), _msg(extra)
        assert calm[0].startswith("Ranked by GRACE cosine"), calm[0]
        assert not any(j.done() for j in flood)  # served while the flood still waited
    finally:
        for j in flood:
            j.cancel()
