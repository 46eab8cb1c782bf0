"""Train: start a small GRACE / CL / SimCSE job in its own process and watch it live."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path

import gradio as gr

from analysis.plots import training_curves
from analysis.rollouts import HEADERS as ROLLOUT_HEADERS
from analysis.rollouts import pushes, step_table
from grace.files.run_folder import RunFolder
from grace.files.textio import count_lines
from grace.training.config import GraceConfig
from grace.training.data import SAMPLE_PASSAGES, SAMPLE_TRIPLETS
from grace.training.jobs import estimate_seconds, measured_step_seconds

from .common import adapter_choices, check_model_choice, for_visitors, is_public, jobs, one_line, upload_path
from .identity import IdentityError, require_account, require_owner, visitor_from
from .storage import (MAX_RUNS_PER_VISITOR, MAX_RUNS_TOTAL, StorageFull, discard_upload, item_caps,
                      prune_uploads, store_upload)
from .text import md_escape

D = GraceConfig(data="-")  # the form's defaults are GraceConfig's
METHODS = ["grace / supervised", "grace / unsupervised", "cl / supervised", "simcse / unsupervised"]
# the CLI flags GraceConfig's checks name, as this form labels them
FORM_WORDS = {"--steps": "Steps", "--batch-size": "Batch size B", "--rollouts": "Rollouts K",
              "--max-new-tokens": "Max new tokens", "--lora-rank": "LoRA rank", "--lambda-hard": "λ2 hard negative",
              "--reward-temperature": "Reward temperature τ", "--method": "Method", "--mode": "mode"}
RUN_HEADERS = ["run", "method", "state", "steps", "owner", "error"]
FORM_DEFAULT_STEPS = D.steps

# A public Space: every field bounded on the server (the form's numbers are no defence against a
# script) and every job stopped (and saved) after PUBLIC_MAX_MINUTES, so the largest allowed job
# holds the one training slot and the two cores for at most that long.
PUBLIC_LIMITS = {"Steps": (1, 40), "Batch size B": (1, 8), "Rollouts K": (2, 8), "Max new tokens": (4, 64),
                 "LoRA rank": (1, 32), "λ1 consistency": (0.0, 5.0), "λ2 hard negative": (0.0, 5.0),
                 "reward temperature τ": (0.01, 10.0)}
PUBLIC_MAX_MINUTES = 15.0  # wall clock from the job's process start: the model load counts
PUBLIC_MAX_TRAIN_ROWS = 20_000  # records of an uploaded training file, counted as it is read
JOB_COOLDOWN_S = 60.0  # public mode: a visitor's next job starts this long after their last one ended


def job_cooldown_s() -> float:
    """Seconds between a visitor's jobs on a public app: GRACE_JOB_COOLDOWN, else JOB_COOLDOWN_S."""
    try:
        return max(0.0, float(os.environ.get("GRACE_JOB_COOLDOWN", JOB_COOLDOWN_S)))
    except ValueError:
        return JOB_COOLDOWN_S


def public_note() -> str:
    limits = ", ".join(f"{k} {lo:g}–{hi:g}" for k, (lo, hi) in PUBLIC_LIMITS.items())
    return (f"**On this public Space** each job stops and saves after {PUBLIC_MAX_MINUTES:.0f} minutes (loading "
            f"the model included), the fields are bounded ({limits}), an uploaded file holds at most "
            f"{PUBLIC_MAX_TRAIN_ROWS:,} records, each visitor keeps at most {MAX_RUNS_PER_VISITOR} runs and "
            f"waits {job_cooldown_s():.0f} s after a job ends before starting the next. "
            "Others see your runs' curves and settings, never the texts of a file you uploaded.")


def _number(value, label: str, *, integer: bool):
    """A form number checked on the server: present, finite, whole where it must be, and within
    the public bounds on a public Space."""
    if value is None or isinstance(value, bool) or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"Fill in {label}.")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{label} must be a number, not {str(value)[:40]!r}.") from None
    if not math.isfinite(x):
        raise ValueError(f"{label} must be a finite number.")
    if integer:
        if x != int(x):
            raise ValueError(f"{label} must be a whole number.")
        x = int(x)
    if is_public() and label in PUBLIC_LIMITS:
        lo, hi = PUBLIC_LIMITS[label]
        if not lo <= x <= hi:
            raise ValueError(f"{label} must be from {lo:g} to {hi:g} on this public Space.")
    return x


def form_words(message: str) -> str:
    """A config error in the words of this form rather than the CLI's flags."""
    for flag in sorted(FORM_WORDS, key=len, reverse=True):
        message = message.replace(flag, FORM_WORDS[flag])
    return message


def _config(method_mode, upload, steps, batch, rollouts, lam1, lam2, tau, new_tokens, rank, model) -> GraceConfig:
    if method_mode not in METHODS:
        raise ValueError(f"Method must be one of: {', '.join(METHODS)}.")
    method, mode = [x.strip() for x in method_mode.split("/")]
    nums = dict(steps=_number(steps, "Steps", integer=True), batch_size=_number(batch, "Batch size B", integer=True),
                rollouts=_number(rollouts, "Rollouts K", integer=True),
                lambda_consistency=_number(lam1, "λ1 consistency", integer=False),
                lambda_hard=_number(lam2, "λ2 hard negative", integer=False),
                reward_temperature=_number(tau, "reward temperature τ", integer=False),
                max_new_tokens=_number(new_tokens, "Max new tokens", integer=True),
                lora_rank=_number(rank, "LoRA rank", integer=True))
    data = str(SAMPLE_TRIPLETS if mode == "supervised" else SAMPLE_PASSAGES)
    cfg = GraceConfig(method=method, mode=mode, data=data, model=check_model_choice(model), sample_every=1,
                      save_every=max(1, nums["steps"] // 4), max_minutes=PUBLIC_MAX_MINUTES if is_public() else 0.0,
                      **nums)
    try:
        cfg.validate()
    except ValueError as exc:
        raise ValueError(form_words(str(exc))) from None
    if upload is not None:  # stored last, once everything else passed (``start`` removes it if the start fails)
        path = upload_path(upload)
        if is_public():  # counted as it streams: a 20 MB file of ten million lines stops at the limit
            count_lines(path, PUBLIC_MAX_TRAIN_ROWS, "records")
        cfg.data = str(store_upload(path))
    return cfg


def _used_uploads() -> set[str]:
    used = set()
    for run in jobs().folder.runs():
        try:
            used.add(str(Path(json.loads(run.config.read_text())["data"]).resolve()))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return used


def run_owner(name: str) -> dict | None:
    """Who started the run (``{"owner", "name", "uploaded"}``), or None for runs made before
    owners were kept, or by the command line."""
    try:
        return jobs().run(name).read_owner()
    except ValueError:  # not a run name
        return None


def _write_owner(name: str, visitor, uploaded: bool) -> None:
    jobs().run(name).write_owner({"owner": visitor.id, "name": visitor.name, "uploaded": uploaded})


def _uploaded(name: str) -> bool:
    """Whether the run trains on a visitor's file (its probe texts are then the owner's only)."""
    o = run_owner(name)
    if o is not None:
        return bool(o.get("uploaded"))
    try:
        data = json.loads(jobs().run(name).config.read_text()).get("data", "")
    except (OSError, ValueError):
        return True
    return Path(data).resolve() not in (SAMPLE_TRIPLETS.resolve(), SAMPLE_PASSAGES.resolve())


def can_see_probes(name: str, who) -> bool:
    """Probe texts are the first records of the training file: everyone sees those of the sample
    sets, only the owner those of an uploaded file."""
    if not _uploaded(name):
        return True
    try:
        return visitor_from(who).owns((run_owner(name) or {}).get("owner"))
    except IdentityError:
        return False


def _check_quota(jm, visitor, name: str) -> None:
    """Public mode: at most MAX_RUNS_PER_VISITOR runs each and MAX_RUNS_TOTAL on disk, each refused
    with a sentence saying how to make room. Nobody's run is removed to make room for another's."""
    if not is_public() or (jm.runs_dir / name).exists():
        return
    runs = jm.runs()  # newest first
    mine = [r for r in runs if (run_owner(r["name"]) or {}).get("owner") == visitor.id]
    if len(mine) >= MAX_RUNS_PER_VISITOR:
        raise ValueError(f"You have {len(mine)} runs, the most a visitor keeps here: remove one "
                         f"(e.g. '{mine[-1]['name']}') to start another.")
    if len(runs) >= MAX_RUNS_TOTAL:
        raise StorageFull(f"The app holds its limit of {MAX_RUNS_TOTAL} runs from all visitors"
                          + (": remove one of yours to start another." if mine else "; try again later."))


def estimate(method_mode, steps, batch, rollouts, new_tokens, model) -> str:
    try:
        cfg = _config(method_mode, None, steps, batch, rollouts, 0.2, 0.2, 0.1, new_tokens, 8, model)
    except Exception:
        return ""
    measured = measured_step_seconds(jobs().runs_dir, cfg)
    sec = estimate_seconds(cfg, measured)
    if sec is None:
        return "No time estimate for this backbone (measured only for the default model)."
    basis = ("the step times of this machine's earlier runs" if measured else
             "the step time measured on a 2-core CPU")
    text = f"Estimated time: about **{sec / 60:.1f} min** (about a minute to start the job, then {basis})."
    if cfg.max_minutes and sec > 60 * cfg.max_minutes + 60:
        text += f" It will stop and save after {cfg.max_minutes:.0f} minutes of training."
    busy = cores_busy()
    if busy:
        text += " " + busy
    return text


def cores_busy() -> str:
    """A sentence when other work shares the cores now (the load average against the core count)."""
    try:
        load, cores = os.getloadavg()[0], os.cpu_count() or 1
    except OSError:
        return ""
    if load < 0.75 * cores:
        return ""
    return (f"Other work shares the {cores} cores now (load {load:.1f}): expect it to take longer.")


def _check_cooldown(jm, visitor) -> None:
    """Public mode: a visitor's next job (or resume) starts ``job_cooldown_s()`` after their last
    job ended, refused until then with how long to wait."""
    wait = job_cooldown_s()
    if not is_public() or not wait:
        return
    ended = 0.0
    for r in jm.runs():
        if r["state"] not in ("finished", "cancelled", "failed") or \
                (run_owner(r["name"]) or {}).get("owner") != visitor.id:
            continue
        st = jm.status(r["name"])
        t = st.get("ended")
        if not isinstance(t, (int, float)) or isinstance(t, bool):
            try:
                t = jm.run(r["name"]).status.stat().st_mtime
            except OSError:
                continue
        ended = max(ended, float(t))
    left = ended + wait - time.time()
    if left > 0:
        raise ValueError(f"Your previous job ended {max(0, time.time() - ended):.0f} s ago; each visitor waits "
                         f"{wait:.0f} s between jobs here: start again in {math.ceil(left)} s.")


def start(name, method_mode, upload, steps, batch, rollouts, lam1, lam2, tau, new_tokens, rank, model, who=None):
    name = (name or "").strip()
    stored = None
    try:
        visitor = visitor_from(who)
        require_account(visitor, "Training")  # public: quotas bind to accounts, not free guest ids
        jm = jobs()
        run = jm.run_dir(name)  # validates the name
        if jm.run(name).has_config():
            require_owner(who, (run_owner(name) or {}).get("owner"), f"Run '{name}'")
        _check_quota(jm, visitor, name)
        _check_cooldown(jm, visitor)
        cfg = _config(method_mode, upload, steps, batch, rollouts, lam1, lam2, tau, new_tokens, rank, model)
        stored = Path(cfg.data) if upload is not None else None
        resumed = _check_reuse(jm, run, name, cfg)
        jm.start(cfg, name)
        _write_owner(name, visitor, uploaded=upload is not None)
        prune_uploads(_used_uploads())
    except Exception as exc:
        if stored is not None:  # a failed start leaves no upload behind
            discard_upload(stored, _used_uploads())
        return f"⚠️ {one_line(exc)}", gr.update()
    return (f"Resuming **{name}** from step {resumed} (same settings)." if resumed is not None
            else f"Started **{name}**. The job loads the model first (about a minute)."), name


def _free_name(jm, name: str) -> str:
    n = 2
    while (jm.runs_dir / f"{name}-{n}").exists():
        n += 1
    return f"{name}-{n}"


def _check_reuse(jm, run: Path, name: str, cfg: GraceConfig) -> int | None:
    """A finished run's name is refused (its adapter would be overwritten); a stopped run with the
    same settings resumes (returns its step); other settings under that name are refused; a new
    name gives None."""
    saved = RunFolder(run).config
    if not saved.exists():
        return None
    state = jm.status(name).get("state")
    cfg.output = str(run)
    if not GraceConfig.load(saved).same_run_as(cfg):
        raise ValueError(f"Run '{name}' holds a run with other settings; choose a new name, e.g. "
                         f"'{_free_name(jm, name)}'.")
    if state == "finished":
        raise ValueError(f"Run '{name}' has finished; choose a new name, e.g. '{_free_name(jm, name)}' "
                         "(its adapter is kept).")
    return RunFolder(run).resume_step()


def cancel(name, who=None):
    if not name:
        return "No job selected."
    try:
        jobs().run_dir(name)
        require_owner(who, (run_owner(name) or {}).get("owner"), f"Run '{name}'")
        jobs().cancel(name)
    except Exception as exc:
        return f"⚠️ {one_line(exc)}"
    return f"Cancelling **{name}** after its current step…"


def remove_run(name, who=None):
    """Delete one of the visitor's runs (not while it trains)."""
    if not name:
        return "No run selected.", gr.update()
    try:
        jm = jobs()
        run = jm.run_dir(name)
        if not run.exists():
            raise ValueError(f"There is no run '{name}'.")
        require_owner(who, (run_owner(name) or {}).get("owner"), f"Run '{name}'")
        active = jm.active()
        if active and active["name"] == name:
            raise ValueError(f"Run '{name}' is training: cancel it first.")
        shutil.rmtree(run)
        prune_uploads(_used_uploads())
    except Exception as exc:
        return f"⚠️ {one_line(exc)}", gr.update()
    return f"Removed **{name}**.", ""


def _owner_label(name: str, who) -> str:
    if not is_public():  # one user: no owner column to fill, no file to read
        return ""
    owner = (run_owner(name) or {}).get("owner")
    try:
        mine = visitor_from(who).owns(owner)
    except IdentityError:
        mine = False
    return "you" if mine else ("another visitor" if owner else "–")


def refresh(name, who=None, drawn=None):
    """Status line, curves, probe rationales, the run's settings, the runs table, the adapter
    choices, the shown run and what the curves were drawn from (unchanged curves are not redrawn:
    a page's 2-second timer costs a file read, not a plot)."""
    jm = jobs()
    active = jm.active()
    line_busy = ""
    shown = gr.skip()  # the page's run is written back only when this call attaches it to the job:
    # a tick that started before a click on the runs table must not undo the click
    if not name and active:
        try:
            mine = visitor_from(who).owns((run_owner(active["name"]) or {}).get("owner"))
        except IdentityError:
            mine = False
        if mine:
            name = shown = active["name"]
        else:
            line_busy = (f" The training slot is busy: another visitor's job is at step {active.get('step', 0)} of "
                         f"{active.get('steps')}.")
    runs = jm.runs()
    table = [[r["name"], r.get("label") or f"{r['method']}/{r['mode']}", r["state"], f"{r['step'] or 0}/{r['steps']}",
              _owner_label(r["name"], who), for_visitors(r["error"] or "")] for r in runs]
    # ``drawn`` holds what the page shows: the curves' signature, then "#" and the adapter list's;
    # what is unchanged is skipped (each update costs Gradio a component, on its event loop)
    drawn_curves, _, drawn_adapters = str(drawn or "").partition("#")
    choices = adapter_choices(runs)
    listed = hashlib.sha256("\n".join(choices).encode("utf-8")).hexdigest()[:12]
    adapters = gr.skip() if drawn_adapters == listed else gr.update(choices=choices)
    if not name:
        return ("No job of yours yet. Start one, or pick a run in the table below." + line_busy,
                gr.skip() if drawn_curves == "-" else training_curves([]), [], "", table, adapters, shown,
                "-#" + listed)
    st = jm.status(name)
    metrics = jm.metrics(name)
    validation = jm.validation(name)
    line = f"**{md_escape(name)}**: {st.get('state')} — step {st.get('step', 0)} of {st.get('steps')}"
    if st.get("error"):  # written by the job's process: no server path or upload name reaches the page
        line += f" — {md_escape(for_visitors(str(st['error'])))}"
    if metrics:
        line += f" — last step {metrics[-1]['step_time']:.1f} s"
    if can_see_probes(name, who):
        samples = [[s["step"], s["text"][:80], s["rationale"]] for s in jm.samples(name)][-30:]
    else:
        samples = [["", "(hidden: this run trains on another visitor's file)", ""]]
    signature = f"{name}:{len(metrics)}:{len(validation)}"
    curves = gr.skip() if drawn_curves == signature else training_curves(metrics, validation)
    return line, curves, samples, run_settings(name), table, adapters, shown, f"{signature}#{listed}"


def run_settings(name: str) -> str:
    """The run's settings as a readable list (what differs from GraceConfig's defaults first)."""
    path = jobs().run(name).config
    if not path.exists():
        return ""
    c = json.loads(path.read_text())
    d = GraceConfig(data="-").to_dict()
    changed = {k: v for k, v in c.items() if k in d and v != d[k] and k not in ("output", "data")}
    same = ", ".join(f"{k}={md_escape(str(c[k]))}" for k in c if k in d and k not in changed and k not in ("output", "data"))
    data = for_visitors(str(Path(c["data"]).resolve())) if c.get("data") else ""  # no upload's hashed name
    lines = [f"**Settings of {md_escape(name)}** (data: {md_escape(data)})"]
    lines += [f"- **{k}**: {md_escape(str(v))}" for k, v in changed.items()]
    lines.append(f"<details><summary>defaults</summary>{same}</details>")
    return "\n".join(lines)


def select_run(evt: gr.SelectData, table):
    """Clicking a row of the runs table opens that run (curves, probes, settings)."""
    try:
        row = evt.index[0]
        name = table.iloc[row, 0] if hasattr(table, "iloc") else table[row][0]
        if not jobs().run(str(name)).has_config():
            raise ValueError
    except (AttributeError, IndexError, KeyError, TypeError, ValueError):
        return gr.update(), "Pick a row of the runs table."
    return name, f"Showing **{md_escape(name)}**."


def send_probes(name, who=None):
    """Queue a run's probe rationales (the same texts at several steps) for rating."""
    if not name:
        return "No run selected."
    try:
        jobs().run_dir(name)
        if not can_see_probes(name, who):
            raise IdentityError(f"Run '{name}' trains on another visitor's file: its probe texts are theirs.")
        from analysis.annotations import default_store, items_from_samples

        jm = jobs()
        cfg = jm.run(name).config
        c = json.loads(cfg.read_text()) if cfg.exists() else {}
        settings = {"model": c.get("model"), "run": name, "prompt": c.get("prompt"),
                    "max_new_tokens": c.get("max_new_tokens"), "sampled": False}
        owner = visitor_from(who).id if is_public() else None  # public: the sender's own queue, never published
        added = default_store().add_items(items_from_samples(name, jm.samples(name), settings), owner=owner,
                                          **item_caps())
    except Exception as exc:
        return f"⚠️ {one_line(exc)}"
    where = "your own annotation queue (only you see them there)" if is_public() else "the annotation queue"
    return f"Sent {sum(1 for _, n in added if n)} probe rationale(s) of '{name}' to {where}."


def inspect_step(name, step, who=None):
    """The rollout inspector: a logged GRACE step's examples, their K rollouts with each reward
    component, advantage, length, ending and clip share (``analysis.rollouts``), and which rollout
    each example's update pushed toward and away from. No step picked: the newest logged one."""
    empty = gr.update(value=[], headers=ROLLOUT_HEADERS)
    if not name:
        return gr.update(choices=[], value=None), "No run selected.", empty
    try:
        run = jobs().run(name)  # validates the name
        if not can_see_probes(name, who):
            raise IdentityError(f"Run '{name}' trains on another visitor's file: its texts are theirs.")
        logged = {r["step"]: r for r in run.rollout_rows() if isinstance(r.get("step"), int)}  # one read
        steps = sorted(logged)
        if not steps:
            raise ValueError(f"Run '{name}' has no logged rollouts (only GRACE runs log them).")
        if step in (None, ""):
            chosen = steps[-1]
        else:
            chosen = _number(step, "Step", integer=True)
            if chosen not in logged:
                raise ValueError(f"Step {chosen} was not logged; logged steps: {_ranges(steps)}.")
        row = logged[chosen]
        note = [f"**Step {chosen}** of **{md_escape(name)}**: each example's rollouts, highest advantage first."]
        note += [f"- {md_escape(line)}" for line in pushes(row)]
        table = step_table(row)
    except Exception as exc:
        return gr.update(), f"⚠️ {one_line(exc)}", empty
    return (gr.update(choices=[str(s) for s in steps], value=str(chosen)), "\n".join(note),
            gr.update(value=table, headers=ROLLOUT_HEADERS))


def _ranges(steps: list[int]) -> str:
    """``1–5, 10, 20`` for a sorted list of steps."""
    parts, start = [], steps[0]
    for a, b in zip(steps, steps[1:] + [None]):
        if b != a + 1:
            parts.append(str(start) if start == a else f"{start}–{a}")
            start = b
    return ", ".join(parts[:12]) + (" …" if len(parts) > 12 else "")


FORM_FIELDS = ("name", "method", "steps", "batch", "rollouts", "new_tokens", "rank", "lam1", "lam2", "tau")


def form_for(name, who=None) -> list:
    """The form's values for a reopened run (so a reload shows the settings of the run the page
    shows, not the defaults); unchanged when no run is shown. Another visitor's run fills the
    settings but never the run name, so the visitor's next Start does not target that run."""
    path = jobs().run(name).config if name else None
    if path is None or not path.exists():
        return [gr.update()] * len(FORM_FIELDS)
    try:
        c = GraceConfig.load(path)
    except Exception:
        return [gr.update()] * len(FORM_FIELDS)
    try:
        mine = visitor_from(who).owns((run_owner(name) or {}).get("owner"))
    except IdentityError:
        mine = False
    return [name if mine else gr.update(), f"{c.method} / {c.mode}", c.steps, c.batch_size, c.rollouts, c.max_new_tokens, c.lora_rank,
            c.lambda_consistency, c.lambda_hard, c.reward_temperature]


def build(adapter_dropdown, model_box, page) -> tuple:
    with gr.Tab("Train"):
        gr.Markdown("Fine-tune a LoRA adapter. GRACE rewards sampled rationales by contrastive similarity; CL and "
                    "SimCSE are the paper's baselines. The job runs in its own process (one at a time); this page "
                    "re-attaches to it after a refresh, and any run on disk opens from the table below.")
        if is_public():
            gr.Markdown(public_note(), elem_id="train-public")
        with gr.Row():
            name = gr.Textbox(value="demo", label="Run name", elem_id="train-name")
            method = gr.Dropdown(METHODS, value=METHODS[0], label="Method / mode")
            upload = gr.File(label="Data (optional; default: the sample set)", file_types=[".jsonl", ".txt"])
        with gr.Row():
            steps = gr.Number(value=FORM_DEFAULT_STEPS, precision=0, label="Steps", elem_id="train-steps")
            batch = gr.Number(value=D.batch_size, precision=0, label="Batch size B")
            rollouts = gr.Number(value=D.rollouts, precision=0, label="Rollouts K")
            new_tokens = gr.Number(value=D.max_new_tokens, precision=0, label="Max new tokens", elem_id="train-tokens")
            rank = gr.Number(value=D.lora_rank, precision=0, label="LoRA rank")
        with gr.Row():
            lam1 = gr.Number(value=D.lambda_consistency, label="λ1 consistency")
            lam2 = gr.Number(value=D.lambda_hard, label="λ2 hard negative")
            tau = gr.Number(value=D.reward_temperature, label="reward temperature τ")
        est = gr.Markdown(estimate(METHODS[0], FORM_DEFAULT_STEPS, D.batch_size, D.rollouts, D.max_new_tokens,
                                   model_box.value), elem_id="train-estimate")
        with gr.Row():
            go = gr.Button("Start", variant="primary", elem_id="train-start")
            stop = gr.Button("Cancel", elem_id="train-cancel")
        msg = gr.Markdown(elem_id="train-msg")  # the answer to the visitor's last action; stays until the next
        status = gr.Markdown(elem_id="train-status")  # the job's live line, refreshed every 2 s
        curves = gr.Plot(label="Rewards, loss and rationale length", elem_id="train-curves")
        samples = gr.Dataframe(headers=["step", "probe text", "rationale"], label="How the probe rationales evolve",
                               interactive=False, wrap=True, elem_id="train-samples")
        with gr.Row():
            send = gr.Button("Send the probe rationales to annotation", elem_id="train-send")
            drop = gr.Button("Remove this run", elem_id="train-remove")
        with gr.Accordion("Rollout inspector: what one GRACE step rewarded", open=False, elem_id="train-inspector"):
            gr.Markdown("For a logged step: each example's sampled rationales with their reward components "
                        "(R_main: similarity to the anchor; consistency; hard negative; length penalty), the "
                        "advantage the update used, length, whether it ended, and the share of its tokens the "
                        "clip held back. Every step is logged up to 100, then every 10th, every 100th past 1,000.")
            with gr.Row():
                inspect_pick = gr.Dropdown([], label="Step", allow_custom_value=True, elem_id="train-inspect-step")
                inspect_go = gr.Button("Show this step (empty: the newest)", elem_id="train-inspect")
            inspect_note = gr.Markdown(elem_id="train-inspect-note")
            inspect_table = gr.Dataframe(headers=ROLLOUT_HEADERS, interactive=False, wrap=True,
                                         elem_id="train-rollouts")
        settings = gr.Markdown(elem_id="train-settings")
        runs = gr.Dataframe(headers=RUN_HEADERS, label="Runs on disk (click a row to open it)", interactive=False,
                            elem_id="train-runs")
        current = gr.State("")
        drawn = gr.State("")  # what the curves on the page were drawn from
        form = [name, method, steps, batch, rollouts, new_tokens, rank, lam1, lam2, tau]
        for c in (method, steps, batch, rollouts, new_tokens, model_box):
            c.change(estimate, [method, steps, batch, rollouts, new_tokens, model_box], [est], queue=False)
        go.click(start, [name, method, upload, steps, batch, rollouts, lam1, lam2, tau, new_tokens, rank, model_box,
                         page], [msg, current])
        stop.click(cancel, [current, page], [msg])
        send.click(send_probes, [current, page], [msg])
        drop.click(remove_run, [current, page], [msg, current])
        runs.select(select_run, [runs], [current, msg])
        inspect_go.click(inspect_step, [current, inspect_pick, page], [inspect_pick, inspect_note, inspect_table])
        timer = gr.Timer(2.0)
        outs = [status, curves, samples, settings, runs, adapter_dropdown, current, drawn]
        # status reads bypass the queue: idle tabs' timers never take the places visitors' clicks need
        timer.tick(refresh, [current, page, drawn], outs, show_progress="hidden", queue=False)
        current.change(refresh, [current, page, drawn], outs, queue=False)
        current.change(form_for, [current, page], form, queue=False)
        return refresh, [current, page, drawn], outs
