"""The rollout log (``rollouts.jsonl``) against the step's own metrics, its bound, its resume, and
the rollout inspector that reads it."""

import pytest
import torch

from analysis.rollouts import HEADERS, pushes, step_table
from grace.files.run_folder import RunFolder
from grace.training.config import GraceConfig
from grace.training.data import SAMPLE_TRIPLETS, load_triplets
from grace.training.rollouts import logs_rollouts
from grace.training.trainer import train


def _cfg(tiny_model_dir, out, **kw):
    base = dict(method="grace", mode="supervised", data=str(SAMPLE_TRIPLETS), output=str(out),
                model=str(tiny_model_dir), steps=2, batch_size=2, rollouts=3, max_new_tokens=6, truncation="none",
                sample_every=0, save_every=1, device="cpu", lr=5e-2, updates_per_batch=2, mini_batch_size=1)
    base.update(kw)
    return GraceConfig(**base)


def test_logged_rollouts_are_the_steps_own(tiny_model_dir, tmp_path):
    res = train(_cfg(tiny_model_dir, tmp_path / "run"))
    run = RunFolder(res.output)
    assert run.rollout_steps() == [1, 2]
    metrics = {m["step"]: m for m in run.metric_rows()}
    texts = {(t.query, t.positive) for t in load_triplets(str(SAMPLE_TRIPLETS)).records}
    for step in (1, 2):
        row, m = run.rollout_row(step), metrics[step]
        assert len(row["examples"]) == 2 and all(len(e["rollouts"]) == 3 for e in row["examples"])
        assert all((e["query"], e["positive"]) in texts and e["anchor"] is not None for e in row["examples"])
        rolls = [r for e in row["examples"] for r in e["rollouts"]]
        total = torch.tensor([[r["total"] for r in e["rollouts"]] for e in row["examples"]])
        adv = torch.tensor([[r["advantage"] for r in e["rollouts"]] for e in row["examples"]])
        # the numbers the step logged as means are the means of the logged rollouts
        assert total.mean().item() == pytest.approx(m["reward/total"], abs=1e-5)
        assert adv.std().item() == pytest.approx(m["advantage_std"], abs=1e-5)
        assert sum(r["main"] for r in rolls) / 6 == pytest.approx(m["reward/positive"], abs=1e-5)
        assert sum(r["length"] for r in rolls) / 6 == pytest.approx(m["rationale_length"])
        # truncation "none": the advantage is the reward minus its group's mean (eq. 18)
        assert torch.allclose(adv, total - total.mean(1, keepdim=True), atol=1e-5)
        # per-rollout clip shares, weighted by the tokens trained, give the step's clip fraction
        trained = [r for r in rolls if r["advantage"] != 0]
        clipped = sum(r["clip_fraction"] * r["length"] for r in trained) / sum(r["length"] for r in trained)
        assert clipped == pytest.approx(m["clip_fraction"], abs=1e-6)
    assert any(m["clip_fraction"] > 0 for m in metrics.values())  # the shares above are not all zero


def test_resume_drops_the_rollouts_past_the_checkpoint(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    seen = []
    first = train(_cfg(tiny_model_dir, out, steps=3, save_every=2), callback=seen.append,
                  should_stop=lambda: sum(e.get("event") == "step" for e in seen) >= 1)
    assert first.steps_done == 1
    run = RunFolder(out)
    run.append_rollouts({"step": 2, "examples": []})  # a step the crash left after the checkpoint
    train(_cfg(tiny_model_dir, out, steps=3, save_every=2))
    assert run.rollout_steps() == [1, 2, 3]
    assert run.rollout_row(2)["examples"]  # the real step 2, not the stale row


def test_the_log_is_bounded():
    logged = [s for s in range(1, 12_001) if logs_rollouts(s)]
    assert logged[:100] == list(range(1, 101))
    assert logged[100:103] == [110, 120, 130] and 1000 in logged and 1010 not in logged and 1100 in logged
    assert len(logged) == 100 + 90 + 90 + 2  # 10,000 and 11,000 past 10,000


def _row():
    def r(text, adv, **kw):
        return {"rationale": text, "main": 0.5, "consistency": 0.9, "hard_negative": -0.3, "length_penalty": 0.0,
                "total": 1.0 + adv, "advantage": adv, "length": 5, "finished": True, "clip_fraction": 0.25, **kw}
    return {"step": 4, "examples": [
        {"query": "q1", "positive": "p1", "anchor": "a1",
         "rollouts": [r("low", -0.4), r("top", 0.6), r("mid", -0.2, finished=False)]},
        {"query": "q2", "positive": "p2", "anchor": "a2", "rollouts": [r("same", 0.0), r("same too", 0.0)]}]}


def test_step_table_sorts_each_example_by_advantage():
    rows = step_table(_row())
    assert all(len(x) == len(HEADERS) for x in rows)
    first = [x for x in rows if x[0] == 1 and x[1] != ""]
    assert [x[-1] for x in first] == ["top", "mid", "low"] and [x[1] for x in first] == [1, 2, 3]
    assert first[1][HEADERS.index("ended")] == "cut" and first[0][HEADERS.index("clipped %")] == 25.0
    lines = pushes(_row())
    assert '"top" (+0.60)' in lines[0] and '"low" (-0.40)' in lines[0]
    assert "no update" in lines[1]


def test_inspector_shows_a_logged_step_and_refuses_others(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("GRACE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("GRACE_PUBLIC", raising=False)
    from grace.ui.common import jobs
    from grace.ui.train_tab import inspect_step

    out = jobs().runs_dir / "mine"
    train(_cfg(tiny_model_dir, out))
    pick, note, table = inspect_step("mine", "", None)
    assert pick["value"] == "2" and pick["choices"] == ["1", "2"] and "Step 2" in note
    logged = RunFolder(out).rollout_row(2)
    shown = sorted(x[HEADERS.index("advantage")] for x in table["value"] if x[1] != "")
    assert shown == sorted(round(r["advantage"], 4) for e in logged["examples"] for r in e["rollouts"])
    _, note, table = inspect_step("mine", "7", None)
    assert note.startswith("⚠️") and "Step 7 was not logged" in note and table["value"] == []
    _, note, _ = inspect_step("mine", "x; rm", None)
    assert note.startswith("⚠️") and "number" in note
    _, note, _ = inspect_step("../etc", "", None)
    assert note.startswith("⚠️")
