"""Training under ``accelerate launch`` with several processes (CPU, gloo): the processes stay in
sync, the run folder is written once, and two processes take the steps one process takes on the
same batches (rewards and InfoNCE over the whole batch, the whole batch's gradient)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tiny_model import tiny_config as _cfg


SCRIPT = r"""
import json, sys, torch
from grace.training.config import GraceConfig
from grace.training.trainer import Trainer
cfg = GraceConfig(**json.loads(sys.argv[1]))
t = Trainer(cfg)
t.run()
from safetensors.torch import save_file
rank = t.accelerator.process_index
save_file({n: p.detach().contiguous() for n, p in t.policy.named_parameters() if p.requires_grad},
          f"{sys.argv[2]}/rank{rank}.safetensors")
"""


@pytest.mark.slow  # two accelerate launches of 2 processes each
@pytest.mark.parametrize("method,batch,mini", [("grace", 2, 2), ("cl", 2, 2), ("grace", 3, 1)])
def test_two_processes_stay_in_sync(tiny_model_dir, tmp_path, method, batch, mini):
    """accelerate launch --num_processes 2 on the CPU (gloo): both processes end with the same adapter
    weights, which moved from the start, and the run folder is written once. Each process holds one
    of the B = 2 examples (or, B = 3 in mini-batches of 1, two and one: a process sits out some
    optimizer steps), yet every logged value equals a one-process run's: the hard-negative term
    (0 if each process scored only its own example), InfoNCE's loss (in-batch negatives from the
    other process) and the gradient norm (half if the gradients were averaged, not summed)."""
    from safetensors.torch import load_file

    from grace.training.trainer import train

    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    cfg = _cfg(tiny_model_dir, tmp_path, method=method, steps=2, sample_every=1, save_every=1,
               truncation="none", lora_dropout=0.0, lr=1e-3, batch_size=batch, mini_batch_size=mini,
               log_negatives_every=1 if method == "grace" else 0).to_dict()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    # accelerate's torchrun launcher (--multi_gpu); the job itself runs on the CPU (device="cpu"
    # -> Accelerator(cpu=True) -> gloo). accelerate's --cpu flag alone would need MPI for 2 processes.
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           str(script), json.dumps(cfg), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0, w1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[n], w1[n]) for n in w0)
    assert any(float(w0[n].abs().max()) > 0 for n in w0 if "lora_B" in n)  # B starts at 0: it moved
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2]  # one writer
    if method == "grace":
        samples = (tmp_path / "run" / "samples.jsonl").read_text().splitlines()
        assert len(samples) == 3 * 3  # probes at steps 0, 1, 2, written once
    one = train(_cfg(tiny_model_dir, tmp_path / "one", **{k: v for k, v in cfg.items() if k != "output"}))
    single = [json.loads(r) for r in (one.output / "metrics.jsonl").read_text().splitlines()]
    double = [json.loads(r) for r in rows]
    keys = (["reward/hard_negative", "reward/total", "advantage_std", "grad_norm", "rationale_length",
             "reward/contrastive"]  # the contrastive log: every process's rollouts, not the main one's
            if method == "grace" else ["loss", "in_batch_accuracy", "grad_norm"])
    if method == "grace":
        assert all(abs(r["reward/hard_negative"]) > 1e-3 for r in double)
    # the advantages are differences of nearly equal rewards (~5e-4 on the tiny model), so batches
    # split differently move them (and the loss and gradient they scale) by ~0.3 %; averaged instead
    # of summed gradients would halve the norm
    for a, b in zip(single, double):
        for key in keys:
            assert b[key] == pytest.approx(a[key], rel=2e-2, abs=1e-7), (key, a[key], b[key])
        for key in ("reward/hard_negative", "reward/total"):
            assert b.get(key) == pytest.approx(a.get(key), rel=1e-4)
    if method == "grace":  # the rollout log: written once, every process's examples, the same rollouts
        def logged(run):
            rows = [json.loads(r) for r in (run / "rollouts.jsonl").read_text().splitlines()]
            return [(r["step"], [(e["query"], [x["rationale"] for x in e["rollouts"]],
                                  [x["total"] for x in e["rollouts"]]) for e in r["examples"]])
                    for r in rows]  # in batch order, whatever the number of processes
        two, alone = logged(tmp_path / "run"), logged(one.output)
        assert [s for s, _ in two] == [1, 2] and all(len(ex) == batch for _, ex in two)
        for (s2, ex2), (s1, ex1) in zip(two, alone):
            assert s2 == s1 and [e[:2] for e in ex2] == [e[:2] for e in ex1]
            assert [e[2] for e in ex2] == [pytest.approx(e[2], rel=1e-4) for e in ex1]


@pytest.mark.slow
def test_a_refused_output_folder_stops_every_process(tiny_model_dir, tmp_path):
    """The main process finds the output folder holding another run: every process raises
    RunExistsError (the others do not wait for it in a collective) and the launch ends at once."""
    import time

    from grace.training.trainer import train

    train(_cfg(tiny_model_dir, tmp_path, steps=1, save_every=1, sample_every=0))  # another run in the folder
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    cfg = _cfg(tiny_model_dir, tmp_path, steps=1, lr=5e-4, sample_every=0).to_dict()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                           str(script), json.dumps(cfg), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert (proc.stdout + proc.stderr).count("already holds a different run") >= 2, proc.stderr[-3000:]
    assert time.time() - t0 < 120
