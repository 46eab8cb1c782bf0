"""Bounded input, bounded disk (#26 §5, and the public limits of §3 and §4): encode settings
bounded on the server, uploads stopped at their row limit while they are read, nothing stored by a
failed start, per-owner eviction only, capped annotation store, messages without server paths,
and a training clock and cooldown. Fast unit tests; the same through the running app are at the end
of tests/test_public_space.py."""

from __future__ import annotations

import json
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from grace.files.textio import InputError

ALICE = {"id": "hf:1001", "name": "alice", "signed_in": True}
BOB = {"id": "hf:1002", "name": "bob", "signed_in": True}


@pytest.fixture
def public(tmp_path, monkeypatch):
    """A public app's data folder and Gradio upload folder; returns the upload folder."""
    monkeypatch.setenv("GRACE_PUBLIC", "1")
    monkeypatch.setenv("GRACE_DATA_DIR", str(tmp_path / "data"))
    uploads = tmp_path / "gradio"
    uploads.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    return uploads


# -- encode settings ---------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,words", [
    ("max_new_tokens", 512, "Max rationale tokens must be from 1 to 128"),
    ("temperature", 1e300, "Temperature must be from 0.05 to 2"),
    ("temperature", float("nan"), "Temperature must be a finite number"),
    ("top_p", 0.0, "Top-p must be from 0.05 to 1"),
    ("repetition_penalty", 50.0, "Repetition penalty must be from 1 to 2"),
    ("no_repeat_ngram", 10**9, "No-repeat n-gram must be from 0 to 8"),
    ("layer", -10**6, "Layer must be from -65 to 64"),
    ("dtype", "bfloat16", "Precision must be one of float32, auto"),
    ("dtype", None, "Precision must be one of float32, auto"),
])
def test_public_encode_settings_are_bounded_on_the_server(monkeypatch, field, value, words):
    from grace.ui.common import APP_DEFAULTS, _panel_fields, panel_values, settings_from

    values = panel_values(APP_DEFAULTS)
    values[_panel_fields().index(field)] = value
    monkeypatch.delenv("GRACE_PUBLIC", raising=False)
    if field in ("max_new_tokens", "dtype") and value is not None:
        settings_from(*values)  # one's own machine allows what the library allows
    monkeypatch.setenv("GRACE_PUBLIC", "1")
    with pytest.raises(ValueError) as err:
        settings_from(*values)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert settings_from(*panel_values(APP_DEFAULTS)) == APP_DEFAULTS.with_(seed=None)  # the page's own values pass


def test_a_sampled_seed_is_bounded_too(monkeypatch):
    from grace.ui.common import APP_DEFAULTS, panel_values, settings_from

    monkeypatch.setenv("GRACE_PUBLIC", "1")
    with pytest.raises(ValueError, match="Seed must be from 0"):
        settings_from(*panel_values(APP_DEFAULTS.with_(sample=True, seed=10**30)))
    assert settings_from(*panel_values(APP_DEFAULTS.with_(sample=True, seed=7))).seed == 7


# -- uploads stop at their row limit while they are read ---------------------------------------

def _past_the_limit(path: Path, rows: list[str]) -> Path:
    """``rows``, then a binary line: a reader that parses the whole file first says "binary"; one
    that stops at the row limit never reaches it."""
    path.write_bytes(("\n".join(rows) + "\n").encode() + b"\x00\x01 binary tail\n")
    return path


def test_readers_stop_at_the_first_row_past_the_limit(tmp_path):
    from analysis.annotation_io import read_rows
    from analysis.annotations import AnnotationError
    from grace.files.textio import count_lines, read_corpus, read_lines, read_texts

    txt = _past_the_limit(tmp_path / "big.txt", [f"text {i}" for i in range(11)])
    jsonl = _past_the_limit(tmp_path / "big.jsonl", [json.dumps({"text": f"t {i}", "rationale": "r"}) for i in range(11)])
    csv = _past_the_limit(tmp_path / "big.csv", ["text,label"] + [f"t {i},x" for i in range(11)])
    for path in (txt, jsonl, csv):
        with pytest.raises(InputError, match=f"{path.name} has more than 10 texts; the limit is 10"):
            read_corpus(path, max_texts=10)
    with pytest.raises(InputError, match="more than 10 texts"):
        read_texts(txt, max_texts=10)
    with pytest.raises(InputError, match="more than 10 lines"):
        read_lines(txt, max_lines=10)
    with pytest.raises(InputError, match="more than 10 records"):
        count_lines(jsonl, 10, "records")
    with pytest.raises(AnnotationError, match="more than 10 rows; an import takes at most 10 rows"):
        read_rows(jsonl, max_rows=10)
    with pytest.raises(AnnotationError, match="more than 10 rows"):
        read_rows(csv, max_rows=10)
    # within the limit the same files read as before (the binary tail is then reached, and refused)
    with pytest.raises(InputError, match="binary"):
        read_corpus(txt, max_texts=100)
    ok = tmp_path / "ok.csv"
    ok.write_text('text,label\n"two\nlines",a\nb,\n')
    assert read_corpus(ok) == (["two\nlines", "b"], {"label": ["a", ""]})


def test_a_huge_upload_costs_no_more_memory_than_its_limit(tmp_path):
    big = tmp_path / "ten-million.txt"
    with open(big, "w") as f:  # 2,000,000 short lines (~14 MB): a whole-file parse holds ~200 MB
        f.write("a text\n" * 2_000_000)
    from grace.files.textio import read_corpus

    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="more than 2,000 texts"):
            read_corpus(big, max_texts=2000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, peak


# -- a training upload: counted, stored only by a start that succeeds ---------------------------

def _upload(folder: Path, name: str, lines: list[str]) -> str:
    d = folder / "0123456789abcdef0123456789abcdef01234567"
    d.mkdir(exist_ok=True)
    (d / name).write_text("\n".join(lines) + "\n")
    return str(d / name)


TRAIN_FORM = ("grace / supervised", 2, 2, 2, 0.2, 0.2, 0.1, 4, 4, "default")


def _start(name, upload, who=ALICE):
    from grace.ui import train_tab

    method, steps, batch, rollouts, lam1, lam2, tau, tokens, rank, model = TRAIN_FORM
    return train_tab.start(name, method, upload, steps, batch, rollouts, lam1, lam2, tau, tokens, rank, model, who)[0]


def test_a_failed_start_leaves_no_upload_and_no_path(public):
    from grace.files.paths import data_dir

    one = json.dumps({"query": "q", "positive": "p", "negative": "n"})
    msg = _start("too-small", _upload(public, "mine.jsonl", [one]))  # 1 record, batch 2: Trainer refuses it
    assert msg.startswith("⚠️") and "fewer than" in msg, msg
    assert "the uploaded file has 1 records" in msg and "/" not in msg  # no server path, no upload hash
    assert not list((data_dir() / "uploads").glob("*"))  # the stored copy was removed


def test_a_training_upload_stops_at_its_row_limit(public, monkeypatch):
    from grace.files.paths import data_dir
    from grace.ui import train_tab

    monkeypatch.setattr(train_tab, "PUBLIC_MAX_TRAIN_ROWS", 5)
    rows = [json.dumps({"query": f"q{i}", "positive": "p", "negative": "n"}) for i in range(6)]
    msg = _start("too-long", _upload(public, "long.jsonl", rows))
    assert msg == "⚠️ long.jsonl has more than 5 records; the limit is 5."
    assert not (data_dir() / "uploads").exists() or not list((data_dir() / "uploads").glob("*"))


# -- per-owner eviction only -------------------------------------------------------------------

def test_exports_never_push_out_another_visitors(public, monkeypatch):
    from grace.ui import storage

    monkeypatch.setattr(storage, "MAX_EXPORTS_TOTAL", 3)
    alices = []
    for _ in range(3):
        p = storage.export_path("hf:alice", "x")
        p.write_text("a")
        alices.append(p)
        time.sleep(0.01)
    with pytest.raises(storage.StorageFull, match="limit of 3 exports"):
        storage.export_path("hf:bob", "x")
    assert all(p.exists() for p in alices)
    mine = storage.export_path("hf:alice", "x")  # Alice makes room from her own oldest
    assert not alices[0].exists() and alices[1].exists() and alices[2].exists()
    mine.write_text("a")
    old = time.time() - storage.EXPORT_TTL_S - 10
    for p in alices[1:] + [mine]:
        os.utime(p, (old, old))
    storage.export_path("hf:bob", "x")  # exports past their day are gone, whoever asks
    assert not any(p.exists() for p in alices[1:] + [mine])


def test_a_full_runs_folder_refuses_and_removes_nobodys_run(public, monkeypatch):
    from grace.files.run_folder import RunFolder
    from grace.ui import train_tab
    from grace.ui.common import jobs
    from grace.ui.identity import visitor_from

    monkeypatch.setattr(train_tab, "MAX_RUNS_TOTAL", 2)
    jm = jobs()
    for name in ("alice-1", "alice-2"):
        run = RunFolder(jm.runs_dir / name)
        run.create()
        run.write_config({"method": "grace", "mode": "supervised", "steps": 2})
        run.write_status({"state": "finished", "ended": 1.0})
        run.write_owner({"owner": ALICE["id"], "name": "alice", "uploaded": False})
    with pytest.raises(train_tab.StorageFull, match="limit of 2 runs from all visitors; try again later"):
        train_tab._check_quota(jm, visitor_from(BOB), "bobs")
    assert (jm.runs_dir / "alice-1").is_dir() and (jm.runs_dir / "alice-2").is_dir()
    with pytest.raises(train_tab.StorageFull, match="remove one of yours"):
        train_tab._check_quota(jm, visitor_from(ALICE), "alice-3")


# -- the annotation store's caps ---------------------------------------------------------------

def test_the_annotation_store_caps_each_visitor_and_the_total(tmp_path):
    from analysis.annotation_io import import_file
    from analysis.annotations import AnnotationError, AnnotationStore

    s = AnnotationStore(tmp_path / "a.sqlite")
    caps = {"max_total": 5, "max_per_owner": 3}
    s.add_items([{"text": f"a{i}", "rationale": "r"} for i in range(3)], owner="hf:a", **caps)
    with pytest.raises(AnnotationError, match="Your queue keeps at most 3 items and these 1 new item"):
        s.add_items([{"text": "a3", "rationale": "r"}], owner="hf:a", **caps)
    assert s.add_items([{"text": "a0", "rationale": "r"}], owner="hf:a", **caps) == [(1, False)]  # already there
    f = tmp_path / "in.jsonl"
    f.write_text("".join(json.dumps({"text": f"b{i}", "rationale": "r"}) + "\n" for i in range(3)))
    with pytest.raises(AnnotationError, match="holds its limit of 5 items: 3 new item"):
        import_file(s, f, owner="hf:b", **caps)  # all or nothing
    assert s.count_items() == 3
    assert import_file(s, f, owner="hf:b", max_total=6, max_per_owner=3)["items_added"] == 3
    s.add_items([{"text": "c", "rationale": "r"}])  # the CLI and the local app: no caps


# -- labels and removal by key -----------------------------------------------------------------

def test_a_run_adapter_is_labelled_by_its_run_and_rows_are_removed_by_key(public):
    from grace.model.settings import EncodeSettings
    from grace.ui import evaluate_tab
    from grace.ui.common import jobs

    for name in ("run-a", "run-b"):
        run = jobs().runs_dir / name
        (run / "adapters" / "step-2").mkdir(parents=True)
        (run / "adapter").symlink_to(Path("adapters") / "step-2")
    labels = [EncodeSettings(adapter=str(jobs().runs_dir / n / "adapter")).label() for n in ("run-a", "run-b")]
    assert labels == ["Base + run-a w/ reasoning", "Base + run-b w/ reasoning"]
    # two rows with one label (saved before this fix): each owner removes their own, by its file's key
    folder = evaluate_tab.results_dir()
    row = {"label": "Base + adapters w/ reasoning", "suite": "quick", "settings": {}, "average": 0.5,
           "tasks": {"T": {"score": 0.5, "category": "STS"}}, "categories": {"STS": 0.5}, "wall_seconds": 6.0}
    (folder / "aaaa.json").write_text(json.dumps({**row, "owner": BOB["id"]}))
    (folder / "bbbb.json").write_text(json.dumps({**row, "owner": ALICE["id"]}))
    choices = evaluate_tab.saved()[2]["choices"]
    assert sorted(v for _, v in choices) == ["aaaa", "bbbb"]
    msg = evaluate_tab.remove("bbbb", ALICE)[0]
    assert msg.startswith("Removed Base + adapters"), msg
    assert not (folder / "bbbb.json").exists() and (folder / "aaaa.json").exists()
    assert "belongs to another visitor" in evaluate_tab.remove("aaaa", ALICE)[0]
    assert evaluate_tab.remove("../../etc/passwd", ALICE)[0] == "That row is no longer saved."


# -- messages ----------------------------------------------------------------------------------

def test_messages_show_no_server_paths_or_hashes(public):
    from grace.ui.common import one_line

    cases = {
        "/tmp/gradio/0123456789abcdef0123456789abcdef01234567/corpus.txt: not UTF-8 text.":
            "corpus.txt: not UTF-8 text.",
        "/data/grace/uploads/0123456789abcdef01234567.jsonl has 1 records, fewer than Batch size B 2.":
            "the uploaded file has 1 records, fewer than Batch size B 2.",
        "[Errno 28] No space left on device: '/data/grace/runs/x/metrics.jsonl'":
            "[Errno 28] No space left on device: 'metrics.jsonl'",
        "see https://huggingface.co/spaces/a/b": "see https://huggingface.co/spaces/a/b",
        "Run 'demo' belongs to another visitor.": "Run 'demo' belongs to another visitor.",
    }
    for raw, shown in cases.items():
        assert one_line(OSError(raw)) == shown


def test_on_ones_own_machine_messages_keep_the_users_paths(monkeypatch):
    from grace.ui.common import one_line

    monkeypatch.delenv("GRACE_PUBLIC", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    raw = "Model '/home/me/models/x' is not a local folder."
    assert one_line(ValueError(raw)) == raw


# -- training: the clock counts the model load; a cooldown between a visitor's jobs ---------------

def test_the_cooldown_between_a_visitors_jobs(public, monkeypatch):
    from grace.files.run_folder import RunFolder
    from grace.ui import train_tab
    from grace.ui.common import jobs
    from grace.ui.identity import visitor_from

    jm = jobs()
    run = RunFolder(jm.runs_dir / "alices")
    run.create()
    run.write_config({"method": "grace", "mode": "supervised", "steps": 2})
    run.write_status({"state": "cancelled", "ended": time.time() - 20})
    run.write_owner({"owner": ALICE["id"], "name": "alice", "uploaded": False})
    monkeypatch.delenv("GRACE_JOB_COOLDOWN", raising=False)
    with pytest.raises(ValueError, match=r"ended 20 s ago; each visitor waits 60 s between jobs here: start "
                                         r"again in (40|41) s"):
        train_tab._check_cooldown(jm, visitor_from(ALICE))
    train_tab._check_cooldown(jm, visitor_from(BOB))  # Bob's own clock
    assert _start("alices", None).startswith("⚠️ Your previous job ended")
    monkeypatch.setenv("GRACE_JOB_COOLDOWN", "5")
    train_tab._check_cooldown(jm, visitor_from(ALICE))


def test_the_training_clock_counts_from_the_jobs_start(tiny_model_dir, tmp_path):
    """A job whose model load took 2 minutes, under a 2-minute limit, stops (and saves) after the
    one step every invocation makes; ``train`` counts from ``started``."""
    from grace.training.config import GraceConfig
    from grace.training.data import SAMPLE_TRIPLETS
    from grace.training.trainer import train

    cfg = GraceConfig(method="grace", mode="supervised", data=str(SAMPLE_TRIPLETS), output=str(tmp_path / "run"),
                      model=str(tiny_model_dir), steps=50, batch_size=2, rollouts=2, max_new_tokens=4,
                      sample_every=0, save_every=10, device="cpu", max_minutes=2.0)
    res = train(cfg, started=time.time() - 121)
    assert res.stopped_early and res.steps_done == 1


def test_a_jobs_clock_starts_when_its_process_starts(tmp_path, monkeypatch):
    import logging
    import warnings
    from types import SimpleNamespace

    from grace.training import jobs, trainer
    from grace.training.config import GraceConfig
    from grace.training.data import SAMPLE_TRIPLETS

    seen = {}

    def fake_train(cfg, **kw):
        seen.update(kw, now=time.time())
        return SimpleNamespace(stopped_early=False, steps_done=cfg.steps)

    monkeypatch.setattr(trainer, "train", fake_train)
    cfg = GraceConfig(data=str(SAMPLE_TRIPLETS), output=str(tmp_path / "run"), steps=1, max_minutes=15.0)
    before = time.time()
    with warnings.catch_warnings():
        try:
            jobs._child(cfg.to_dict(), False)
        finally:
            logging.disable(logging.NOTSET)
    assert before <= seen["started"] <= seen["now"]
    assert json.loads((tmp_path / "run" / "status.json").read_text())["started"] == seen["started"]
