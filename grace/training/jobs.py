"""Training jobs in a separate process: one at a time, cancellable, state on disk.

Everything a UI needs lives in the run folder, so a browser refresh or an app restart finds
the job again: ``status.json`` (state, step, error), ``metrics.jsonl``, ``samples.jsonl``,
and a ``cancel`` file the job checks between steps. A crash of the job leaves the app running.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import time
from dataclasses import asdict
from pathlib import Path

from .config import GraceConfig

ACTIVE = ".active.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class JobError(ValueError):
    """A job that cannot start; the message says why."""


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (OSError, ProcessLookupError):
        return False
    try:  # a finished child of ours is a zombie until reaped
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def _child(cfg_dict: dict, overwrite: bool) -> None:
    """Runs in the job's own process."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from .trainer import train

    cfg = GraceConfig(**cfg_dict)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    status = out / "status.json"
    state = {"state": "running", "step": 0, "steps": cfg.steps, "pid": os.getpid(), "started": time.time(),
             "error": None}
    _write_json(status, state)

    def on_event(e: dict) -> None:
        if e["event"] == "step":
            state["step"] = e["step"]
            _write_json(status, state)
        elif e["event"] == "start":
            state["summary"] = e["summary"]
            _write_json(status, state)

    try:
        res = train(cfg, overwrite=overwrite, callback=on_event, should_stop=lambda: (out / "cancel").exists())
        state.update(state="cancelled" if res.stopped_early else "finished", step=res.steps_done)
    except Exception as exc:  # the job's failure is reported, never raised into the app
        state.update(state="failed", error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    state["ended"] = time.time()
    _write_json(status, state)


class JobManager:
    """Starts and watches training jobs under ``runs_dir`` (the app's own folder)."""

    def __init__(self, runs_dir: str | Path):
        self.runs_dir = Path(runs_dir)
        self.runs_dir.mkdir(parents=True, exist_ok=True)

    def run_dir(self, name: str) -> Path:
        if not _NAME.match(name or ""):
            raise JobError("A run name uses letters, digits, '-', '_' or '.', at most 64 characters.")
        return self.runs_dir / name

    def active(self) -> dict | None:
        """The running job, if any (a job whose process died is marked failed)."""
        info = _read_json(self.runs_dir / ACTIVE)
        if not info:
            return None
        status = self.status(info["name"])
        if status.get("state") in ("starting", "running") and not _alive(info["pid"]):
            status.update(state="failed", error=status.get("error") or "the training process stopped unexpectedly")
            _write_json(self.run_dir(info["name"]) / "status.json", status)
        if status.get("state") not in ("starting", "running"):
            (self.runs_dir / ACTIVE).unlink(missing_ok=True)
            return None
        return {"name": info["name"], **status}

    def start(self, cfg: GraceConfig, name: str, *, overwrite: bool = False) -> str:
        """Validate everything, then start the job's process; refuse a second job."""
        running = self.active()
        if running:
            raise JobError(f"Job '{running['name']}' is still running (step {running.get('step', 0)} of "
                           f"{running.get('steps')}); cancel it or wait for it to finish.")
        out = self.run_dir(name)
        cfg.output = str(out)
        cfg.validate()
        from .trainer import Trainer

        Trainer(cfg, overwrite=overwrite)  # data and output checks, in this process, before spawning
        ctx = mp.get_context("spawn")
        proc = ctx.Process(target=_child, args=(asdict(cfg), overwrite), daemon=False)
        (out / "cancel").unlink(missing_ok=True)
        _write_json(out / "status.json", {"state": "starting", "step": 0, "steps": cfg.steps, "error": None,
                                           "started": time.time()})
        proc.start()
        _write_json(self.runs_dir / ACTIVE, {"name": name, "pid": proc.pid})
        return name

    def cancel(self, name: str) -> None:
        (self.run_dir(name) / "cancel").write_text("cancel requested\n")

    def status(self, name: str) -> dict:
        return _read_json(self.run_dir(name) / "status.json") or {"state": "unknown"}

    def metrics(self, name: str) -> list[dict]:
        return _read_jsonl(self.run_dir(name) / "metrics.jsonl")

    def samples(self, name: str) -> list[dict]:
        return _read_jsonl(self.run_dir(name) / "samples.jsonl")

    def runs(self) -> list[dict]:
        """Every run on disk, newest first: name, method, mode, state, steps, adapter folder."""
        out = []
        for cfg_path in self.runs_dir.glob("*/grace_config.json"):
            run = cfg_path.parent
            cfg = _read_json(cfg_path) or {}
            st = self.status(run.name) if (run / "status.json").exists() else {
                "state": "finished" if (run / "adapter").exists() else "unknown"}
            out.append({"name": run.name, "method": cfg.get("method"), "mode": cfg.get("mode"),
                        "model": cfg.get("model"), "state": st.get("state"), "step": st.get("step"),
                        "steps": cfg.get("steps"), "error": st.get("error"),
                        "adapter": str(run / "adapter") if (run / "adapter").exists() else None,
                        "mtime": cfg_path.stat().st_mtime})
        return sorted(out, key=lambda r: -r["mtime"])

    def adapters(self) -> list[str]:
        """Names of runs with a usable adapter (finished or stopped early)."""
        return [r["name"] for r in self.runs() if r["adapter"] and r["state"] in ("finished", "cancelled")]


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written right now
            pass
    return rows


# Measured on 2 CPU cores with the default model (benchmarks/RESULTS.md, train_speed): seconds per
# GRACE step at B=2, K=4, 48 new tokens, float32, 2 updates per batch: 10.9 s. The cost grows with
# B x (K + 1) x tokens (K rollouts and one anchor per example).
_MEASURED_STEP_S, _MEASURED_WORK = 10.9, 2 * (4 + 1) * 48


def estimate_seconds(cfg: GraceConfig) -> float | None:
    """Rough wall time of a job on a 2-core CPU for the default model (None for other models)."""
    if cfg.model != "default":
        return None
    if cfg.method == "grace":
        per_step = _MEASURED_STEP_S * cfg.batch_size * (cfg.rollouts + 1) * cfg.max_new_tokens / _MEASURED_WORK
    else:  # no generation: one or two forward/backward passes over the batch
        per_step = 3.0 * cfg.batch_size / 2
    return 20.0 + cfg.steps * per_step  # + model load
