"""Training jobs in a separate process: one at a time, cancellable, state on disk.

Everything a UI needs lives in the run folder (``RunFolder``), so a browser refresh or an app
restart finds the job again: the job's status (state, step, error), its metrics and probe
samples, and a cancel file the job checks between steps. One job runs at a time: it holds the
runs folder's active-job claim. A crash of the job leaves the app running.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import re
import threading
import time
from dataclasses import asdict
from pathlib import Path

from ..files.run_folder import RunFolder, RunsFolder
from .config import GraceConfig, method_label

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # used with fullmatch: "$" accepts a final "\n"


class JobError(ValueError):
    """A job that cannot start; the message says why."""


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _our_children() -> dict[int, mp.process.BaseProcess]:
    """This process's live multiprocessing children by PID. Asking joins (reaps) every child that
    has finished, so none of them stays a zombie."""
    return {p.pid: p for p in mp.active_children()}


def _alive(pid: int, started: str | None = None) -> bool:
    """Whether the job's process still runs: the PID exists and, when known, started when ours did."""
    children = _our_children()  # reaps our finished job processes first
    try:
        os.kill(pid, 0)
    except (OSError, ProcessLookupError):
        return False
    if started is not None and _start_time(pid) not in (None, started):
        return False  # the PID was reused by another process
    if pid in children:
        return True
    try:  # a finished child of ours (not started through multiprocessing) is a zombie until reaped
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def _reap(pid: int, started: str | None = None) -> None:
    """Reap a finished job's process once it exits, without waiting for it here: its final status
    is written just before the process exits, so it may still be shutting down."""
    child = _our_children().get(pid)
    if child is not None:
        threading.Thread(target=child.join, name=f"reap-job-{pid}", daemon=True).start()
        return
    if started is not None and _start_time(pid) == started:  # our process, not a reused PID
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def _claim_info(raw: bytes) -> dict | None:
    """The active-job file's content, or None when it cannot be a claim (empty, cut, garbage)."""
    try:
        info = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (not isinstance(info, dict) or not isinstance(info.get("name"), str) or not _NAME.fullmatch(info["name"])
            or not isinstance(info.get("pid"), int) or isinstance(info["pid"], bool) or info["pid"] <= 0
            or not isinstance(info.get("started"), (str, type(None)))):
        return None
    return info


JOB_NICE = 15  # below the app's model work (grace.serving.engine.MODEL_NICE)


def _child(cfg_dict: dict, overwrite: bool) -> None:
    """Runs in the job's own process. Its time limit (``max_minutes``) counts from here: importing
    torch and loading the model are part of the job's time."""
    began = time.time()
    try:
        os.nice(JOB_NICE)  # a background job: visitors' requests and the model engine come first
    except OSError:
        pass
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from .trainer import train

    cfg = GraceConfig(**cfg_dict)
    run = RunFolder(cfg.output)
    run.create()
    state = {"state": "running", "step": 0, "steps": cfg.steps, "pid": os.getpid(), "started": began,
             "error": None}
    run.write_status(state)

    def on_event(e: dict) -> None:
        if e["event"] == "step":
            state["step"] = e["step"]
            run.write_status(state)
        elif e["event"] == "start":
            state["summary"] = e["summary"]
            run.write_status(state)

    try:
        res = train(cfg, overwrite=overwrite, callback=on_event, should_stop=run.cancel_requested, started=began)
        state.update(state="cancelled" if res.stopped_early else "finished", step=res.steps_done)
    except Exception as exc:  # the job's failure is reported, never raised into the app
        state.update(state="failed", error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    state["ended"] = time.time()
    run.write_status(state)


class JobManager:
    """Starts and watches training jobs under ``runs_dir`` (the app's own folder)."""

    def __init__(self, runs_dir: str | Path):
        self.runs_dir = Path(runs_dir)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.folder = RunsFolder(self.runs_dir)

    def run_dir(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise JobError("A run name uses letters, digits, '-', '_' or '.', at most 64 characters.")
        return self.runs_dir / name

    def run(self, name: str) -> RunFolder:
        """The run folder of ``name`` (checked like ``run_dir``)."""
        return RunFolder(self.run_dir(name))

    def active(self) -> dict | None:
        """The running job, if any. Whether it runs is decided by its process (PID and start
        time), not by its status file; a job whose process died is marked failed."""
        raw = self.folder.read_active()
        if raw is None:  # none (no job), or unreadable
            return None
        info = _claim_info(raw)
        if info is None:  # empty, cut or garbage (a start killed or out of disk): it never blocks
            self.folder.remove_active_if(raw)
            return None
        status = self.status(info["name"])
        # a job's final status ends it even while its process exits; during a start's claim the
        # run folder may still hold an older run's status, so only the claiming process counts
        finished = (not info.get("claimed") and status.get("state") in ("finished", "cancelled", "failed")
                    and status.get("ended"))
        if not finished and _alive(info["pid"], info.get("started")):
            return {"name": info["name"], **status, "state": status.get("state") if status.get("state") in
                    ("starting", "running") else "running"}
        if finished:
            _reap(info["pid"], info.get("started"))
        else:
            status.update(state="failed", error=status.get("error") or "the training process stopped unexpectedly")
            run = self.run(info["name"])
            if run.path.is_dir():  # a start killed before its folder was made leaves none to mark
                with contextlib.suppress(OSError):  # a full disk must not keep the dead job active
                    run.write_status(status)
        self.folder.remove_active_if(raw)
        return None

    def _claim(self, name: str) -> None:
        """Create the active-job claim exclusively: of two simultaneous starts one wins.

        The claim is written completely before it exists (``RunsFolder.claim_active``): a kill or a
        full disk during a start leaves no empty claim behind."""
        data = json.dumps({"name": name, "pid": os.getpid(), "started": _start_time(os.getpid()),
                           "claimed": True}).encode("utf-8")
        for _ in range(3):
            try:
                if self.folder.claim_active(data):
                    return
            except OSError as exc:
                raise JobError(f"Could not start the job: the job file could not be written "
                               f"({exc.strerror or type(exc).__name__}).") from None
            if self.active() is None:  # a stale file (a dead job's, or an unreadable one) was just removed
                continue
            running = self.active() or {"name": "?"}
            raise JobError(f"Job '{running['name']}' is still running (step {running.get('step', 0)} of "
                           f"{running.get('steps')}); cancel it or wait for it to finish.")
        raise JobError("Could not start the job: another start is in progress; try again.")

    def start(self, cfg: GraceConfig, name: str, *, overwrite: bool = False) -> str:
        """Validate everything, then start the job's process; refuse a second job."""
        running = self.active()
        if running:
            raise JobError(f"Job '{running['name']}' is still running (step {running.get('step', 0)} of "
                           f"{running.get('steps')}); cancel it or wait for it to finish.")
        run = self.run(name)
        cfg.output = str(run.path)
        cfg.validate()
        from .trainer import Trainer

        self._claim(name)
        try:
            # data and output checks (and an overwrite) happen here, before spawning; the child
            # then finds the prepared folder and never deletes it (nor the status written below)
            Trainer(cfg, overwrite=overwrite)
            ctx = mp.get_context("spawn")
            proc = ctx.Process(target=_child, args=(asdict(cfg), False), daemon=False)
            run.clear_cancel()
            run.write_status({"state": "starting", "step": 0, "steps": cfg.steps, "error": None,
                              "started": time.time()})
            proc.start()
        except BaseException:
            self.folder.remove_active()
            raise
        self.folder.write_active({"name": name, "pid": proc.pid, "started": _start_time(proc.pid)})
        return name

    def cancel(self, name: str) -> None:
        self.run(name).request_cancel()

    def status(self, name: str) -> dict:
        return self.run(name).read_status() or {"state": "unknown"}

    def metrics(self, name: str) -> list[dict]:
        return self.run(name).metric_rows()

    def samples(self, name: str) -> list[dict]:
        return self.run(name).sample_rows()

    def validation(self, name: str) -> list[dict]:
        """Validation scores of the run's checkpoints (step, minutes, average), written by
        ``benchmarks/checkpoint_curve.py``; empty when the run was not scored."""
        return self.run(name).validation_rows()

    def runs(self) -> list[dict]:
        """Every run on disk, newest first: name, method, mode, state, steps, adapter folder."""
        out = []
        for run in self.folder.runs():
            name = run.path.name
            cfg = run.read_config() or {}
            st = self.status(name) if run.status.exists() else {
                "state": "finished" if run.has_adapter() else "unknown"}
            out.append({"name": name, "method": cfg.get("method"), "mode": cfg.get("mode"),
                        "label": method_label(cfg.get("method"), cfg.get("mode"), cfg.get("contrastive_weight")),
                        "model": cfg.get("model"), "state": st.get("state"), "step": st.get("step"),
                        "steps": cfg.get("steps"), "error": st.get("error"),
                        "adapter": str(run.adapter) if run.has_adapter() else None,
                        "mtime": run.config.stat().st_mtime})
        return sorted(out, key=lambda r: -r["mtime"])

    def adapters(self, runs: list[dict] | None = None) -> list[str]:
        """Names of runs with a usable adapter (finished or stopped early), from ``runs`` when the
        caller has just listed them (a status tick lists the runs folder once, not twice)."""
        return [r["name"] for r in (self.runs() if runs is None else runs)
                if r["adapter"] and r["state"] in ("finished", "cancelled")]


# Measured on 2 CPU cores with the default model (benchmarks/RESULTS.md, train_speed): seconds per
# GRACE step at B=2, K=4, 48 new tokens, float32, 4 updates per batch: 11.3 s. The cost grows with
# B x (K + 1) x tokens (K rollouts and one anchor per example). Starting a job (a new process that
# imports torch and loads the model) took 45-60 s in the app (a 1-step job took 69 s).
_MEASURED_STEP_S, _MEASURED_WORK = 11.3, 2 * (4 + 1) * 48
_START_S = 55.0


def _work(cfg: GraceConfig | dict) -> float:
    """What a GRACE step's time grows with: B x (K + 1) x tokens (K rollouts and one anchor each)."""
    get = cfg.get if isinstance(cfg, dict) else lambda k, d=None: getattr(cfg, k, d)
    return get("batch_size", 2) * (get("rollouts", 4) + 1) * get("max_new_tokens", 48)


def measured_step_seconds(runs_dir: str | Path, cfg: GraceConfig, recent: int = 5) -> float | None:
    """Seconds per unit of step work measured on *this* machine: the median step time per work unit
    over the last steps of the most recent runs of the same method and model; None when no such run
    is on disk."""
    import statistics

    rates = []
    for run in RunsFolder(runs_dir).runs():  # newest first
        c = run.read_config() or {}
        if c.get("method") != cfg.method or c.get("model") != cfg.model:
            continue
        times = [m.get("step_time") for m in run.metric_rows()][-10:]
        times = [t for t in times if isinstance(t, (int, float)) and t > 0]
        if times:
            per = statistics.median(times)
            rates.append(per / _work(c) if cfg.method == "grace" else per / max(1, c.get("batch_size", 2)))
        if len(rates) >= recent:
            break
    return statistics.median(rates) if rates else None


def estimate_seconds(cfg: GraceConfig, measured: float | None = None) -> float | None:
    """Rough wall time of a job for the default model: ``measured`` (from
    ``measured_step_seconds``, this machine's own runs) when given, else the figure measured on a
    2-core CPU (None for other models without a measurement)."""
    if measured is not None:
        per_step = measured * (_work(cfg) if cfg.method == "grace" else cfg.batch_size)
    elif cfg.model != "default":
        return None
    elif cfg.method == "grace":
        per_step = _MEASURED_STEP_S * _work(cfg) / _MEASURED_WORK
    else:  # no generation: one or two forward/backward passes over the batch
        per_step = 3.0 * cfg.batch_size / 2
    return _START_S + cfg.steps * per_step
