"""RunFolder / RunsFolder without a model (names, atomic writes, checkpoints, the adapter link,
pruning, resume truncation, status, cancel, the active-job claim), one end-to-end adapter swap, and
a check that no other code names a run's files."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

from grace.files.run_folder import RunFolder, RunsFolder
from grace.training.trainer import train
from tiny_model import tiny_config as _cfg

ROOT = Path(__file__).resolve().parents[1]
RUN_FILE_NAMES = ["metrics.jsonl", "samples.jsonl", "validation.jsonl", "grace_config.json", "state.json",
                  "status.json", "owner.json", ".active.json", '"cancel"']


def _fake_weights(tag: str):
    def write(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "adapter_model.safetensors").write_text(tag)
    return write


def _dots(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


def test_only_the_run_folder_names_a_runs_files():
    """grace/, analysis/ and benchmarks/ name a run's files only through RunFolder."""
    offenders = []
    for top in ("grace", "analysis", "benchmarks"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if path.name == "run_folder.py" and path.parent.name == "files":
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if any(name in line for name in RUN_FILE_NAMES):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_config_owner_status_and_cancel(tmp_path):
    run = RunFolder(tmp_path / "r")
    assert not run.has_files() and run.read_config() is None and run.read_status() is None
    run.create()
    run.write_config({"method": "grace", "steps": 3})
    assert run.has_config() and run.read_config() == {"method": "grace", "steps": 3}
    assert run.config.read_text() == json.dumps({"method": "grace", "steps": 3}, indent=1)
    run.write_owner({"owner": "a"})
    run.write_owner({"owner": "b"})  # the first owner is kept
    assert run.read_owner() == {"owner": "a"}
    run.write_status({"state": "running", "step": 1})
    assert run.read_status() == {"state": "running", "step": 1}
    run.status.write_text("[1, 2]")  # not an object: unreadable, never a crash
    assert run.read_status() is None
    assert not run.cancel_requested()
    run.request_cancel()
    assert run.cancel_requested()
    run.clear_cancel()
    run.clear_cancel()
    assert not run.cancel_requested()
    assert _dots(run.path) == []  # every write replaced its file atomically, no temp file left


def test_logs_are_appended_read_and_truncated_on_resume(tmp_path):
    run = RunFolder(tmp_path)
    for step in (1, 2, 3):
        run.append_metrics({"step": step, "loss": 0.5})
    run.append_samples([{"step": s, "text": "t\u2028u", "rationale": "r"} for s in (0, 0, 1, 2, 3)])
    with open(run.metrics, "a", encoding="utf-8") as f:
        f.write('{"step": 4, "lo')  # cut by a crash
    assert [r["step"] for r in run.metric_rows()] == [1, 2, 3]
    assert run.validation_rows() == []
    run.truncate_logs(2)
    assert [r["step"] for r in run.metric_rows()] == [1, 2]
    assert [r["step"] for r in run.sample_rows()] == [0, 0, 1, 2]
    run.truncate_logs(0)  # a fresh start writes the step-0 probes again
    assert run.metric_rows() == [] and run.sample_rows() == []
    run.append_validation({"step": 0, "minutes": 0.0, "average": 0.5})
    assert run.validation_rows()[0]["average"] == 0.5


def test_checkpoints_keep_the_newest_two_and_give_the_resume_step(tmp_path):
    run = RunFolder(tmp_path)
    assert run.latest_checkpoint() is None and run.resume_step() == 0
    for step in (1, 2, 3):
        run.save_checkpoint(step, _fake_weights(f"w{step}"), lambda p: p.write_bytes(b"opt"))
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["step-000002", "step-000003"]
    ckpt = run.latest_checkpoint()
    assert ckpt == run.checkpoint(3) and run.has_checkpoint(3) and not run.has_checkpoint(1)
    assert RunFolder.checkpoint_weights(ckpt).read_text() == "w3"
    assert RunFolder.checkpoint_optimizer(ckpt).read_bytes() == b"opt"
    assert run.resume_step() == 3
    (run.checkpoints / ".step-000004-tmp").mkdir()  # half-written: ignored
    (run.checkpoints / "step-000005").mkdir()  # no step recorded: not complete
    assert run.latest_checkpoint() == ckpt


def test_a_failed_checkpoint_leaves_no_temp_folder(tmp_path):
    run = RunFolder(tmp_path)

    def disk_full(path: Path) -> None:
        raise OSError(28, "No space left on device")

    try:
        run.save_checkpoint(1, _fake_weights("w"), disk_full)
    except OSError:
        pass
    assert run.latest_checkpoint() is None and _dots(run.path) == []


def test_adapter_versions_the_link_swap_and_pruning(tmp_path):
    run = RunFolder(tmp_path)
    (run.path / "adapter").mkdir(parents=True)  # a run folder from before adapters/: a plain folder
    meta = dict(config={"method": "grace"}, encode_settings={"max_new_tokens": 6}, tokenizer_info={"vocab_size": 9})
    for step in (1, 2, 3):
        run.publish_adapter(step, _fake_weights(f"w{step}"), keep=2, **meta)
    assert run.adapter.is_symlink() and run.adapter.resolve().name == "step-000003" and run.has_adapter()
    assert os.readlink(run.adapter) == os.path.join("adapters", "step-000003")  # relative: the folder can move
    assert [s for s, _ in run.adapter_versions()] == [2, 3]
    assert (run.adapter / "adapter_model.safetensors").read_text() == "w3"
    assert json.loads((run.adapter / RunFolder.CONFIG).read_text()) == {"method": "grace"}
    assert json.loads((run.adapter / RunFolder.ENCODE_SETTINGS).read_text()) == {"max_new_tokens": 6}
    assert json.loads((run.adapter / RunFolder.TOKENIZER_INFO).read_text()) == {"vocab_size": 9}
    run.publish_adapter(4, _fake_weights("w4"), keep=0, **meta)  # 0: all kept
    assert [s for s, _ in run.adapter_versions()] == [2, 3, 4]
    assert _dots(run.path) == []


def test_leftovers_of_a_kill_are_removed(tmp_path):
    run = RunFolder(tmp_path)
    run.save_checkpoint(1, _fake_weights("w"), lambda p: p.write_bytes(b"o"))
    run.publish_adapter(1, _fake_weights("w"), config={}, encode_settings={}, tokenizer_info={}, keep=2)
    (run.checkpoints / ".step-000002-abc").mkdir()
    (run.adapters / ".step-000002-def").mkdir()
    os.symlink("adapters/step-000001", run.path / ".adapter-link-99999")
    for name in (".metrics.jsonl.x1.part", ".samples.jsonl.x2.part", ".grace_config.json.x3.part"):
        (run.path / name).write_text("partial")
    run.remove_leftovers()
    assert _dots(run.path) == []
    assert run.latest_checkpoint() is not None and run.adapter.resolve().name == "step-000001"


def test_runs_newest_first_and_the_active_claim(tmp_path):
    runs = RunsFolder(tmp_path)
    for i, name in enumerate(("old", "new")):
        runs.run(name).create()
        runs.run(name).write_config({"n": i})
        os.utime(runs.run(name).config, (time.time() - 100 + i, time.time() - 100 + i))
    (tmp_path / "not-a-run").mkdir()
    assert [r.path.name for r in runs.runs()] == ["new", "old"]
    assert runs.read_active() is None
    assert runs.claim_active(b'{"name": "one"}')
    assert not runs.claim_active(b'{"name": "two"}')  # one claim at a time
    assert runs.read_active() == b'{"name": "one"}'
    runs.remove_active_if(b"something else")  # changed since it was judged stale: kept
    assert runs.read_active() == b'{"name": "one"}'
    runs.write_active({"name": "one", "pid": 5})
    assert json.loads(runs.read_active()) == {"name": "one", "pid": 5}
    runs.remove_active()
    assert runs.read_active() is None
    assert not [p for p in tmp_path.iterdir() if re.match(r"\.", p.name)]


def test_adapter_is_swapped_atomically_and_old_versions_pruned(tiny_model_dir, tmp_path):
    res = train(_cfg(tiny_model_dir, tmp_path, steps=3, save_every=1))
    link = res.output / "adapter"
    assert link.is_symlink() and link.resolve().name == "step-000003"
    assert sorted(p.name for p in (res.output / "adapters").iterdir() if not p.name.startswith(".")) == \
        ["step-000002", "step-000003"]
    assert json.loads((link / "encode_settings.json").read_text())["max_new_tokens"] == 6
