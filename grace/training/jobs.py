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


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, started: str | None = None) -> bool:
    """Whether the job's process still runs: the PID exists and, when known, started when ours did."""
    try:
        os.kill(pid, 0)
    except (OSError, ProcessLookupError):
        return False
    if started is not None and _start_time(pid) not in (None, started):
        return False  # the PID was reused by another process
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
        """The running job, if any. Whether it runs is decided by its process (PID and start
        time), not by its status file; a job whose process died is marked failed."""
        info = _read_json(self.runs_dir / ACTIVE)
        if not info:
            return None
        status = self.status(info["name"])
        # a job's final status ends it even while its process exits; during a start's claim the
        # run folder may still hold an older run's status, so only the claiming process counts
        finished = (not info.get("claimed") and status.get("state") in ("finished", "cancelled", "failed")
                    and status.get("ended"))
        if not finished and _alive(info["pid"], info.get("started")):
            return {"name": info["name"], **status, "state": status.get("state") if status.get("state") in
                    ("starting", "running") else "running"}
        if not finished:
            status.update(state="failed", error=status.get("error") or "the training process stopped unexpectedly")
            _write_json(self.run_dir(info["name"]) / "status.json", status)
        (self.runs_dir / ACTIVE).unlink(missing_ok=True)
        return None

    def _claim(self, name: str) -> None:
        """Create the active-job file exclusively (O_EXCL): of two simultaneous starts one wins."""
        path = self.runs_dir / ACTIVE
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self.active() is None:  # a stale file of a dead job was just removed
                    continue
                running = self.active() or {"name": "?"}
                raise JobError(f"Job '{running['name']}' is still running (step {running.get('step', 0)} of "
                               f"{running.get('steps')}); cancel it or wait for it to finish.") from None
            with os.fdopen(fd, "w") as f:
                json.dump({"name": name, "pid": os.getpid(), "started": _start_time(os.getpid()),
                           "claimed": True}, f)
            return
        raise JobError("Could not start the job: another start is in progress; try again.")

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

        self._claim(name)
        try:
            # data and output checks (and an overwrite) happen here, before spawning; the child
            # then finds the prepared folder and never deletes it (nor the status written below)
            Trainer(cfg, overwrite=overwrite)
            ctx = mp.get_context("spawn")
            proc = ctx.Process(target=_child, args=(asdict(cfg), False), daemon=False)
            (out / "cancel").unlink(missing_ok=True)
            _write_json(out / "status.json", {"state": "starting", "step": 0, "steps": cfg.steps, "error": None,
                                               "started": time.time()})
            proc.start()
        except BaseException:
            (self.runs_dir / ACTIVE).unlink(missing_ok=True)
            raise
        _write_json(self.runs_dir / ACTIVE, {"name": name, "pid": proc.pid, "started": _start_time(proc.pid)})
        return name

    def cancel(self, name: str) -> None:
        (self.run_dir(name) / "cancel").write_text("cancel requested\n")

    def status(self, name: str) -> dict:
        return _read_json(self.run_dir(name) / "status.json") or {"state": "unknown"}

    def metrics(self, name: str) -> list[dict]:
        return _read_jsonl(self.run_dir(name) / "metrics.jsonl")

    def samples(self, name: str) -> list[dict]:
        return _read_jsonl(self.run_dir(name) / "samples.jsonl")

    def validation(self, name: str) -> list[dict]:
        """Validation scores of the run's checkpoints (``validation.jsonl``: step, minutes, average),
        written by ``benchmarks/checkpoint_curve.py``; empty when the run was not scored."""
        return _read_jsonl(self.run_dir(name) / "validation.jsonl")

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
# GRACE step at B=2, K=4, 48 new tokens, float32, 4 updates per batch: 11.3 s. The cost grows with
# B x (K + 1) x tokens (K rollouts and one anchor per example). Starting a job (a new process that
# imports torch and loads the model) took 45-60 s in the app (a 1-step job took 69 s).
_MEASURED_STEP_S, _MEASURED_WORK = 11.3, 2 * (4 + 1) * 48
_START_S = 55.0


def estimate_seconds(cfg: GraceConfig) -> float | None:
    """Rough wall time of a job on a 2-core CPU for the default model (None for other models)."""
    if cfg.model != "default":
        return None
    if cfg.method == "grace":
        per_step = _MEASURED_STEP_S * cfg.batch_size * (cfg.rollouts + 1) * cfg.max_new_tokens / _MEASURED_WORK
    else:  # no generation: one or two forward/backward passes over the batch
        per_step = 3.0 * cfg.batch_size / 2
    return _START_S + cfg.steps * per_step
