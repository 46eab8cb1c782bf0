"""Files that survive a crash or a full disk, and the job process's faults (tiny random models)."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from grace.training.config import GraceConfig
from grace.training.data import SAMPLE_TRIPLETS


def _cfg(tiny_model_dir, out, **kw):
    base = dict(method="cl", mode="supervised", data=str(SAMPLE_TRIPLETS), output=str(out),
                model=str(tiny_model_dir), steps=2, batch_size=2, rollouts=3, max_new_tokens=4,
                truncation="none", sample_every=1, save_every=1, device="cpu", lr=1e-2)
    base.update(kw)
    return GraceConfig(**base)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().decode("utf-8").split("\n") if line]


def _proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


# -- the active-job claim ----------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b'{"name": "old", "pi', b"\x00\x00\x00\x00", b"\xff\xfe not utf-8",
                                     b"[1, 2]", b'{"name": "../x", "pid": 1}', b'{"name": "old", "pid": "12"}'])
def test_an_unreadable_claim_never_blocks(tmp_path, content):
    from grace.files.run_folder import ACTIVE
    from grace.training.jobs import JobManager

    jm = JobManager(tmp_path / "runs")
    (jm.runs_dir / ACTIVE).write_bytes(content)
    assert jm.active() is None and not (jm.runs_dir / ACTIVE).exists()  # stale: removed
    (jm.runs_dir / ACTIVE).write_bytes(content)
    jm._claim("new")  # replaced by a full claim
    info = json.loads((jm.runs_dir / ACTIVE).read_text())
    assert info["name"] == "new" and info["pid"] == os.getpid()
    assert sorted(p.name for p in jm.runs_dir.iterdir()) == [ACTIVE]  # no temp file left


def test_a_claim_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    from grace.files.run_folder import ACTIVE
    from grace.training.jobs import JobError, JobManager

    jm = JobManager(tmp_path / "runs")
    with monkeypatch.context() as m:
        m.setattr(os, "fsync", _disk_full)
        with pytest.raises(JobError, match="No space left on device"):
            jm._claim("one")
    assert list(jm.runs_dir.iterdir()) == []  # neither a claim nor its temp file
    jm._claim("one")
    assert json.loads((jm.runs_dir / ACTIVE).read_text())["name"] == "one"
    with pytest.raises(JobError, match="'one' is still running"):
        jm._claim("two")  # a live claim still blocks


def test_a_stale_claim_is_removed_only_while_unchanged(tmp_path):
    from grace.files.run_folder import RunsFolder

    runs = RunsFolder(tmp_path)
    path = tmp_path / ".active.json"
    path.write_bytes(b"fresh claim")
    runs.remove_active_if(b"")  # judged stale when it was empty; another start has claimed since
    assert path.read_bytes() == b"fresh claim" and sorted(tmp_path.iterdir()) == [path]
    runs.remove_active_if(b"fresh claim")
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_run_names_are_matched_whole(tmp_path):
    from grace.training.jobs import JobError, JobManager

    jm = JobManager(tmp_path / "runs")
    assert jm.run_dir("demo-1.b_2").name == "demo-1.b_2"
    assert jm.run_dir("a" * 64).name == "a" * 64
    for bad in ("demo\n", "demo\n\n", "\ndemo", "demo ", "a" * 65, "../x", ".hidden", "", None):
        with pytest.raises(JobError, match="A run name uses"):
            jm.run_dir(bad)


def test_finished_job_is_reaped_and_a_cut_claim_does_not_block_its_start(tiny_model_dir, tmp_path):
    from grace.files.run_folder import ACTIVE
    from grace.training.jobs import JobManager

    jm = JobManager(tmp_path / "runs")
    (jm.runs_dir / ACTIVE).write_bytes(b"")  # a start killed between creating the claim and writing it
    jm.start(_cfg(tiny_model_dir, tmp_path, steps=1, sample_every=0), "one")
    pid = json.loads((jm.runs_dir / ACTIVE).read_text())["pid"]
    assert pid != os.getpid()
    deadline = time.time() + 300
    while jm.active() is not None and time.time() < deadline:
        time.sleep(0.5)
    assert jm.status("one")["state"] == "finished", jm.status("one")
    while _proc_state(pid) is not None and time.time() < deadline:  # gone once it exits and is reaped
        time.sleep(0.2)
    assert _proc_state(pid) is None, f"the finished job's process is still there (state {_proc_state(pid)})"


# -- JSONL rows: partial lines and U+2028 --------------------------------------------------------

def test_job_rows_split_on_line_feeds_only(tmp_path):
    from grace.training.jobs import JobManager

    jm = JobManager(tmp_path / "runs")
    run = jm.run_dir("r")
    run.mkdir()
    rows = [{"step": 1, "text": "a\u2028b\u0085c\u2029d", "rationale": "x\x1cy"}, {"step": 2, "text": "plain"}]
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (run / "samples.jsonl").write_text(body + '{"step": 3, "te', encoding="utf-8")  # a line being written
    (run / "metrics.jsonl").write_bytes(body.encode("utf-8") + b"\x00\x00\x00\n\xff\n[1]\n")
    assert jm.samples("r") == rows
    assert jm.metrics("r") == rows
    assert jm.metrics("missing") == [] and jm.validation("r") == []


def test_truncation_drops_cut_lines_and_keeps_the_rest(tmp_path):
    from grace.files.run_folder import truncate_jsonl

    path = tmp_path / "metrics.jsonl"
    good = [{"step": 1, "text": "a\u2028b"}, {"step": 2, "text": "c\u0085d"}, {"step": 3, "text": "late"}]
    path.write_bytes(b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in good)
                     + b'{"step": 2, "lo\x00\x00\xff\n{"no step": 1}\n{"step": 4, "lo')
    truncate_jsonl(path, 2)
    assert _rows(path) == good[:2]
    truncate_jsonl(tmp_path / "missing.jsonl", 2)  # nothing to truncate
    assert not (tmp_path / "missing.jsonl").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_resume_survives_a_cut_metrics_line_leftover_temp_folders_and_a_full_disk(tiny_model_dir, tmp_path,
                                                                                monkeypatch):
    import torch

    from grace.files.run_folder import RunFolder
    from grace.training.trainer import train

    run = tmp_path / "run"
    first = train(_cfg(tiny_model_dir, run, steps=2))
    probes = len([s for s in _rows(run / "samples.jsonl") if s["step"] == 0])
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 3, "lo')  # power loss in the middle of step 3's row
    with open(run / "samples.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": 3, "text": "t", "rationale": "written after the last checkpoint"}) + "\n")
        f.write('{"step": 3, "te')
    # what a kill during a save leaves: the temp folders of a checkpoint and an adapter, a link
    (run / "checkpoints" / ".step-000003-abc123").mkdir()
    (run / "checkpoints" / ".step-000003-abc123" / "optimizer.pt").write_bytes(b"half")
    (run / "adapters" / ".step-000003-def456").mkdir()
    os.symlink("adapters/step-000002", run / ".adapter-link-99999")
    assert RunFolder(first.output).latest_checkpoint().name == "step-000002"

    # a full disk while the checkpoint is written: the run fails, and the save leaves no temp folder
    with monkeypatch.context() as m:
        m.setattr(torch, "save", _disk_full)
        with pytest.raises(OSError, match="No space left"):
            train(_cfg(tiny_model_dir, run, steps=3))
    assert not list((run / "checkpoints").glob(".step-*")) and not list((run / "adapters").glob(".step-*"))
    assert not list(run.glob(".adapter-link-*")) and RunFolder(run).latest_checkpoint().name == "step-000002"

    second = train(_cfg(tiny_model_dir, run, steps=3))
    assert second.steps_done == 3 and not second.stopped_early
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and [json.loads(line)["step"] for line in lines[:-1]] == [1, 2, 3]
    samples = _rows(run / "samples.jsonl")  # every line valid JSON; step 3's early row dropped
    assert [s["step"] for s in samples] == [k for k in range(4) for _ in range(probes)]
    assert "written after the last checkpoint" not in {s["rationale"] for s in samples}
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002", "step-000003"]
    assert not list((run / "adapters").glob(".*")) and not [p for p in run.iterdir() if p.name.startswith(".")]
    assert (run / "adapter").resolve() == (run / "adapters" / "step-000003").resolve()


# -- result files --------------------------------------------------------------------------------

def test_atomic_output_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    import csv

    from grace.files.textio import atomic_output

    out = tmp_path / "exports" / "table.csv"
    with atomic_output(out, newline="") as f:  # what a CSV export needs
        csv.writer(f).writerows([["a", "b\nc"], ["1", "2"]])
    assert out.read_bytes() == b'a,"b\nc"\r\n1,2\r\n'
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()  # like open(), not mkstemp's 0600
    with pytest.raises(RuntimeError):
        with atomic_output(out) as f:
            f.write("partial")
            raise RuntimeError("failed half-way")
    with monkeypatch.context() as m:  # a full disk when the data is flushed
        m.setattr(os, "fsync", _disk_full)
        with pytest.raises(OSError, match="No space left"):
            with atomic_output(out, "wb") as f:
                f.write(b"new")
    assert out.read_bytes() == b'a,"b\nc"\r\n1,2\r\n'
    assert [p.name for p in out.parent.iterdir()] == ["table.csv"]  # no temp file left


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _result(label: str) -> dict:
    return {"label": label, "suite": "quick", "settings": {}, "tasks": {"T": {"score": 0.5, "category": "STS"}},
            "categories": {"STS": 0.5}, "average": 0.5, "wall_seconds": 60.0}


def test_load_results_skips_bad_files(tmp_path):
    from grace.evaluation.mteb_adapter import load_results

    good = tmp_path / "good.json"
    good.write_text(json.dumps(_result("A")))
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps(_result("B"))[:40])
    no_label = tmp_path / "nolabel.json"
    no_label.write_text(json.dumps({**_result("C"), "label": None}))
    other = tmp_path / "other.json"
    other.write_text("[1, 2]")
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00")
    res = load_results([str(p) for p in (good, cut, no_label, other, binary, tmp_path / "missing.json")])
    assert [r["label"] for r in res] == ["A"] and isinstance(res, list)
    assert [Path(p).name for p, _ in res.skipped] == ["cut.json", "nolabel.json", "other.json", "binary.json",
                                                      "missing.json"]
    assert "JSONDecodeError" in res.skipped[0][1]


def test_compare_cli_still_refuses_a_bad_file(tmp_path, capsys):
    from grace.cli import main

    good, cut = tmp_path / "a.json", tmp_path / "b.json"
    good.write_text(json.dumps(_result("A")))
    cut.write_text(json.dumps(_result("B"))[:30])
    assert main(["compare", str(good)]) == 0
    assert "| A |" in capsys.readouterr().out
    assert main(["compare", str(good), str(cut)]) == 2
    assert "b.json: not a results file (JSONDecodeError)" in capsys.readouterr().err


def test_saved_results_show_the_good_rows_and_name_a_bad_file(tmp_path, monkeypatch):
    monkeypatch.setenv("GRACE_DATA_DIR", str(tmp_path / "data"))
    from grace.ui import evaluate_tab

    folder = evaluate_tab.results_dir()
    assert evaluate_tab.saved()[0] == "No saved results yet."
    (folder / "a.json").write_text(json.dumps(_result("first")))
    (folder / "b.json").write_text(json.dumps(_result("second")))
    (folder / "c.json").write_text(json.dumps(_result("third"), indent=1)[:50])  # cut by a crash
    table, bars, rows = evaluate_tab.saved()
    assert "| first |" in table and "| second |" in table and "third" not in table
    assert table.count("Skipped 1 unreadable result file(s)") == 1 and "`c.json`" in table
    assert bars is not None and len(rows["choices"]) == 2
    for name in ("a.json", "b.json"):
        (folder / name).unlink()
    table, bars, rows = evaluate_tab.saved()
    assert table.startswith("No saved results yet.") and "`c.json`" in table and rows["choices"] == []


def test_run_eval_writes_its_result_atomically(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("GRACE_DATA_DIR", str(tmp_path / "data"))
    from grace.files import textio
    from grace.ui import evaluate_tab
    from grace.ui.common import APP_DEFAULTS, panel_values

    used = []

    def spy(path, *a, **k):
        used.append(Path(path).name)
        return textio.atomic_output(path, *a, **k)

    task = SimpleNamespace(metadata=SimpleNamespace(name="WordNetRetrieval"))
    monkeypatch.setattr(evaluate_tab, "atomic_output", spy)
    monkeypatch.setattr(evaluate_tab, "resolve_tasks", lambda names, quick: [task])
    monkeypatch.setattr(evaluate_tab, "encoder_for", lambda s: None)
    monkeypatch.setattr(evaluate_tab, "evaluate", lambda s, picked, **k: {**_result("mine"), "suite": None})
    values = panel_values(APP_DEFAULTS.with_(model=str(tiny_model_dir), max_new_tokens=4))
    status, table, bars, rows = evaluate_tab.run_eval(None, "quick", ["WordNetRetrieval"], *values,
                                                      progress=lambda *a, **k: None)
    assert "average 50.0" in status and "| mine |" in table
    files = list(evaluate_tab.results_dir().iterdir())
    assert [f.name for f in files] == used and json.loads(files[0].read_text())["suite"] == "quick"
