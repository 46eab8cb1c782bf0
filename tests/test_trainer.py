import json

import pytest
import torch
from safetensors.torch import load_file

from grace.training.config import GraceConfig
from grace.training.data import SAMPLE_PASSAGES, SAMPLE_TRIPLETS
from grace.files.run_folder import RunFolder
from grace.training.trainer import RunExistsError, train


def _cfg(tiny_model_dir, tmp_path, **kw):
    base = dict(method="grace", mode="supervised", data=str(SAMPLE_TRIPLETS), output=str(tmp_path / "run"),
                model=str(tiny_model_dir), steps=2, batch_size=2, rollouts=3, max_new_tokens=6,
                truncation="none", sample_every=1, save_every=1, device="cpu", lr=1e-2)
    base.update(kw)
    return GraceConfig(**base)


def _lora_b(run):
    w = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    return {k: v for k, v in w.items() if "lora_B" in k}


@pytest.mark.parametrize("method,mode,data", [
    ("grace", "supervised", SAMPLE_TRIPLETS), ("grace", "unsupervised", SAMPLE_PASSAGES),
    ("cl", "supervised", SAMPLE_TRIPLETS), ("simcse", "unsupervised", SAMPLE_PASSAGES)])
def test_two_steps_change_the_lora_weights(tiny_model_dir, tmp_path, method, mode, data):
    cfg = _cfg(tiny_model_dir, tmp_path, method=method, mode=mode, data=str(data))
    events = []
    res = train(cfg, callback=events.append)
    assert res.steps_done == 2 and not res.stopped_early
    lora_b = _lora_b(res.output)
    assert lora_b and any(v.abs().max() > 0 for v in lora_b.values())  # LoRA B starts at zero
    rows = [json.loads(line) for line in (res.output / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    if method == "grace":
        main = "reward/positive" if mode == "supervised" else "reward/self"
        for key in (main, "reward/consistency", "reward/hard_negative", "reward/length_penalty", "reward/total",
                    "advantage_std", "loss", "rationale_length", "truncation_rate", "step_time"):
            assert key in rows[0], key
        samples = [json.loads(line) for line in (res.output / "samples.jsonl").read_text().splitlines()]
        assert {s["step"] for s in samples} == {0, 1, 2} and all("rationale" in s for s in samples)
    assert [e["event"] for e in events].count("step") == 2
    cfg_saved = json.loads((res.output / "adapter" / "grace_config.json").read_text())
    assert cfg_saved["method"] == method


def test_adapter_loads_in_the_encoder(tiny_model_dir, tmp_path):
    from grace.model.encoder import GraceEncoder

    res = train(_cfg(tiny_model_dir, tmp_path, steps=1))
    base = GraceEncoder.from_pretrained(str(tiny_model_dir), device="cpu")
    tuned = GraceEncoder.from_pretrained(str(tiny_model_dir), adapter=str(res.output), device="cpu")  # run folder
    x = ["Machu Picchu is in Peru."]
    assert not torch.allclose(torch.tensor(base.encode(x, rationale=False)),
                              torch.tensor(tuned.encode(x, rationale=False)), atol=1e-6)


def test_resume_after_interruption(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path, steps=3)
    seen = []

    def stop_after_one():
        return len([e for e in seen if e.get("event") == "step"]) >= 1

    first = train(cfg, callback=seen.append, should_stop=stop_after_one)
    assert first.stopped_early and first.steps_done == 1
    assert RunFolder(first.output).latest_checkpoint().name == "step-000001"
    second = train(_cfg(tiny_model_dir, tmp_path, steps=3))
    assert second.steps_done == 3 and not second.stopped_early
    rows = [json.loads(line) for line in (second.output / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


def test_crash_mid_run_leaves_the_last_checkpoint_loadable(tiny_model_dir, tmp_path):
    from grace.model.backbone import load_backbone

    def crash(e):
        if e.get("event") == "step" and e["step"] == 2:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        train(_cfg(tiny_model_dir, tmp_path, steps=3), callback=crash)
    run = tmp_path / "run"
    (run / "checkpoints" / ".step-000002-tmp").mkdir()  # a half-written checkpoint is ignored
    ckpt = RunFolder(run).latest_checkpoint()
    assert ckpt.name == "step-000001"
    b = load_backbone(str(tiny_model_dir), adapter=str(ckpt / "adapter"), device="cpu")
    assert b.adapter.endswith("adapter")


def test_refusals(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="at least 2"):
        _cfg(tiny_model_dir, tmp_path, rollouts=1).validate()
    with pytest.raises(ValueError, match="in-batch negatives"):
        _cfg(tiny_model_dir, tmp_path, batch_size=1).validate()
    _cfg(tiny_model_dir, tmp_path, batch_size=1, lambda_hard=0).validate()
    with pytest.raises(ValueError, match="needs --mode supervised"):
        _cfg(tiny_model_dir, tmp_path, method="cl", mode="unsupervised").validate()
    train(_cfg(tiny_model_dir, tmp_path, steps=1))
    with pytest.raises(RunExistsError, match="--overwrite"):
        train(_cfg(tiny_model_dir, tmp_path, steps=1, lambda_hard=0.7))
    res = train(_cfg(tiny_model_dir, tmp_path, steps=1, lambda_hard=0.7), overwrite=True)
    assert json.loads((res.output / "grace_config.json").read_text())["lambda_hard"] == 0.7


def test_train_cli_bad_data_refused_before_loading(tmp_path, capsys):
    from grace.cli import main

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q"}\n')
    code = main(["train", "--data", str(bad), "--output", str(tmp_path / "r"), "--model", "no/such-model"])
    err = capsys.readouterr().err
    assert code == 2 and "line 1: missing field 'positive'" in err
    code = main(["train", "--data", str(SAMPLE_TRIPLETS), "--rollouts", "1", "--output", str(tmp_path / "r")])
    assert code == 2 and "--rollouts must be at least 2" in capsys.readouterr().err


def test_max_minutes_stops_cleanly_and_saves(tiny_model_dir, tmp_path):
    res = train(_cfg(tiny_model_dir, tmp_path, steps=50, max_minutes=0.0001))
    assert res.stopped_early and 1 <= res.steps_done < 50
    assert (res.output / "adapter" / "adapter_model.safetensors").exists()
    assert RunFolder(res.output).latest_checkpoint().name == f"step-{res.steps_done:06d}"


def test_kl_term_is_logged_when_used(tiny_model_dir, tmp_path):
    res = train(_cfg(tiny_model_dir, tmp_path, steps=1, kl_beta=0.1, updates_per_batch=2))
    row = json.loads((res.output / "metrics.jsonl").read_text().splitlines()[0])
    assert "kl" in row and row["kl"] > 0.0  # the second update of the step already differs from the base


def test_job_runner_claims_atomically_and_sees_through_reused_pids(tmp_path):
    import os
    import subprocess

    from grace.files.run_folder import ACTIVE
    from grace.training.jobs import JobError, JobManager, _start_time

    jm = JobManager(tmp_path / "runs")
    jm._claim("one")
    with pytest.raises(JobError, match="'one' is still running"):
        jm._claim("two")  # the exclusive create loses: one start at a time
    (jm.runs_dir / ACTIVE).unlink()
    # a live PID that belongs to another process (its start time differs): not our job
    other = subprocess.Popen(["sleep", "30"])
    try:
        (jm.runs_dir / ACTIVE).write_text(json.dumps({"name": "old", "pid": other.pid, "started": "1"}))
        jm.run_dir("old").mkdir()
        (jm.run_dir("old") / "status.json").write_text(json.dumps({"state": "running", "step": 3}))
        assert _start_time(other.pid) not in (None, "1")
        assert jm.active() is None
        assert jm.status("old")["state"] == "failed" and not (jm.runs_dir / ACTIVE).exists()
        # the same PID with its real start time is a live job, whatever its status file says
        (jm.runs_dir / ACTIVE).write_text(json.dumps({"name": "old", "pid": other.pid,
                                                       "started": _start_time(other.pid)}))
        (jm.run_dir("old") / "status.json").unlink()
        assert jm.active()["name"] == "old"
    finally:
        other.kill()
        other.wait()
    assert jm.active() is None
    jm._claim("three")  # a dead job's file is replaced
    assert json.loads((jm.runs_dir / ACTIVE).read_text())["pid"] == os.getpid()


@pytest.mark.parametrize("keep,expected", [(2, ["step-000002", "step-000003"]),
                                           (0, ["step-000001", "step-000002", "step-000003"])])
def test_adapter_versions_kept(tiny_model_dir, tmp_path, keep, expected):
    res = train(_cfg(tiny_model_dir, tmp_path, method="cl", steps=3, keep_adapters=keep))
    assert sorted(p.name for p in (res.output / "adapters").glob("step-*")) == expected
    assert (res.output / "adapter").resolve().name == "step-000003"
