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

LIMITS_ENV = {"GRACE_PUBLIC": "1", "GRACE_ALLOW_ANY_MODEL": "1"}  # the tiny model stands in for the default


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
        env = {**LIMITS_ENV, "GRACE_SLOT_LOG": str(data / "slot.log")}
        with running_app(str(tiny_model_dir), str(data), env=env, pid=pid) as url:
            yield url, data, pid[0]
    finally:
        shutil.rmtree(data, ignore_errors=True)


def visitor(url: str):
    """A new visitor: their own session and browser token, identified as the page does on load."""
    from gradio_client import Client

    c = Client(url, verbose=False)
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
    assert resumed.startswith("Resuming"), resumed
    alice.predict(api_name="/cancel")
    # Evaluate: Bob cannot remove Alice's row
    status = alice.predict("quick", ["WordNetRetrieval"], *settings(str(tiny_model_dir)), api_name="/run_eval")[0]
    assert "average" in status, status
    rows = [json.loads(f.read_text()) for f in (data / "results").glob("*.json") if f.name != "cut.json"]
    mine = [r for r in rows if r.get("owner", "").startswith("anon:")]
    assert len(mine) == 1
    row = f"{mine[0]['label']} · quick · 1 task(s)"
    bob.predict(api_name="/saved")  # as his page does when it loads: the rows to pick from
    assert "belongs to another visitor" in bob.predict(row, api_name="/remove")[0]
    legacy = json.loads((data / "results" / "legacy.json").read_text())
    legacy_row = f"{legacy['label']} · {legacy.get('suite', '?')} · {len(legacy['tasks'])} task(s)"
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
    holds = [line.split() for line in log.read_text().splitlines()[before:]]
    spans = sorted((float(a), float(b)) for what, a, b in holds if what == "explore")
    assert len(spans) >= 2
    assert all(end <= nxt + 1e-3 for (_, end), (nxt, _) in zip(spans, spans[1:]))  # never two at once
    for (start, end), cancelled in zip(spans, cancels):  # each cancelled one stopped soon after its cancel
        assert end - cancelled < 10, (start, end, cancelled)


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
