"""Train: start a small GRACE / CL / SimCSE job in its own process and watch it live."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import gradio as gr

from analysis.plots import training_curves
from grace.training.config import GraceConfig
from grace.training.data import SAMPLE_PASSAGES, SAMPLE_TRIPLETS
from grace.training.jobs import estimate_seconds

from .common import adapter_choices, check_model_choice, data_dir, jobs, one_line, upload_path

D = GraceConfig(data="-")  # the form's defaults are GraceConfig's
METHODS = ["grace / supervised", "grace / unsupervised", "cl / supervised", "simcse / unsupervised"]
# the CLI flags GraceConfig's checks name, as this form labels them
FORM_WORDS = {"--steps": "Steps", "--batch-size": "Batch size B", "--rollouts": "Rollouts K",
              "--max-new-tokens": "Max new tokens", "--lora-rank": "LoRA rank", "--lambda-hard": "λ2 hard negative",
              "--reward-temperature": "Reward temperature τ", "--method": "Method", "--mode": "mode"}
RUN_HEADERS = ["run", "method", "state", "steps", "error"]


def form_words(message: str) -> str:
    """A config error in the words of this form rather than the CLI's flags."""
    for flag in sorted(FORM_WORDS, key=len, reverse=True):
        message = message.replace(flag, FORM_WORDS[flag])
    return message


def _config(method_mode, upload, steps, batch, rollouts, lam1, lam2, tau, new_tokens, rank, model) -> GraceConfig:
    method, mode = [x.strip() for x in method_mode.split("/")]
    data = str(SAMPLE_TRIPLETS if mode == "supervised" else SAMPLE_PASSAGES)
    if upload is not None:
        src = Path(upload_path(upload))
        suffix = src.suffix.lower() if src.suffix.lower() in (".jsonl", ".txt", ".json") else ".txt"
        dst = data_dir() / "uploads" / f"{int(time.time())}-{abs(hash(str(src))) % 10**6}{suffix}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        _prune_uploads(dst.parent)
        shutil.copyfile(src, dst)
        data = str(dst)
    if any(v is None for v in (steps, batch, rollouts, lam1, lam2, tau, new_tokens, rank)):
        raise ValueError("Fill in every number of the form.")
    cfg = GraceConfig(method=method, mode=mode, data=data, model=check_model_choice(model), steps=int(steps),
                      batch_size=int(batch), rollouts=int(rollouts), lambda_consistency=float(lam1),
                      lambda_hard=float(lam2), reward_temperature=float(tau), max_new_tokens=int(new_tokens),
                      lora_rank=int(rank), sample_every=1, save_every=max(1, int(steps) // 4 or 1))
    try:
        cfg.validate()
    except ValueError as exc:
        raise ValueError(form_words(str(exc))) from None
    return cfg


def _prune_uploads(folder: Path) -> None:
    """Remove uploaded data files that no run on disk trains on."""
    used = set()
    for cfg in jobs().runs_dir.glob("*/grace_config.json"):
        try:
            used.add(str(Path(json.loads(cfg.read_text())["data"]).resolve()))
        except (OSError, ValueError, KeyError):
            continue
    for f in folder.glob("*"):
        if f.is_file() and str(f.resolve()) not in used:
            f.unlink(missing_ok=True)


def estimate(method_mode, steps, batch, rollouts, new_tokens, model) -> str:
    try:
        cfg = _config(method_mode, None, steps, batch, rollouts, 0.2, 0.2, 0.1, new_tokens, 8, model)
    except Exception:
        return ""
    sec = estimate_seconds(cfg)
    if sec is None:
        return "No time estimate for this backbone (measured only for the default model)."
    return (f"Estimated time on a 2-core CPU: about **{sec / 60:.1f} min** (about a minute to start the job, then "
            "the measured step time).")


def start(name, method_mode, upload, steps, batch, rollouts, lam1, lam2, tau, new_tokens, rank, model):
    name = (name or "").strip()
    try:
        jm = jobs()
        run = jm.run_dir(name)  # validates the name
        cfg = _config(method_mode, upload, steps, batch, rollouts, lam1, lam2, tau, new_tokens, rank, model)
        resumed = _check_reuse(jm, run, name, cfg)
        jm.start(cfg, name)
    except Exception as exc:
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
    saved = run / "grace_config.json"
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
    from grace.training.trainer import latest_checkpoint

    ckpt = latest_checkpoint(run)
    return json.loads((ckpt / "state.json").read_text())["step"] if ckpt else 0


def cancel(name):
    if not name:
        return "No job selected."
    try:
        jobs().cancel(name)
    except Exception as exc:
        return f"⚠️ {one_line(exc)}"
    return f"Cancelling **{name}** after its current step…"


def refresh(name):
    """Status line, curves, probe rationales, the run's settings, the runs table and the adapter choices."""
    jm = jobs()
    active = jm.active()
    if not name and active:
        name = active["name"]
    runs = jm.runs()
    table = [[r["name"], f"{r['method']}/{r['mode']}", r["state"], f"{r['step'] or 0}/{r['steps']}",
              r["error"] or ""] for r in runs]
    adapters = gr.update(choices=adapter_choices())
    if not name:
        return "No job yet. Start one, or pick a run in the table below.", training_curves([]), [], "", table, \
            adapters, name
    st = jm.status(name)
    metrics = jm.metrics(name)
    line = f"**{name}**: {st.get('state')} — step {st.get('step', 0)} of {st.get('steps')}"
    if st.get("error"):
        line += f" — {st['error']}"
    if metrics:
        line += f" — last step {metrics[-1]['step_time']:.1f} s"
    samples = [[s["step"], s["text"][:80], s["rationale"]] for s in jm.samples(name)][-30:]
    return line, training_curves(metrics, jm.validation(name)), samples, run_settings(name), table, adapters, name


def run_settings(name: str) -> str:
    """The run's settings as a readable list (what differs from GraceConfig's defaults first)."""
    path = jobs().run_dir(name) / "grace_config.json"
    if not path.exists():
        return ""
    c = json.loads(path.read_text())
    d = GraceConfig(data="-").to_dict()
    changed = {k: v for k, v in c.items() if k in d and v != d[k] and k not in ("output", "data")}
    same = ", ".join(f"{k}={c[k]}" for k in c if k in d and k not in changed and k not in ("output", "data"))
    lines = [f"**Settings of {name}** (data: `{Path(c.get('data', '')).name}`)"]
    lines += [f"- **{k}**: {v}" for k, v in changed.items()]
    lines.append(f"<details><summary>defaults</summary>{same}</details>")
    return "\n".join(lines)


def select_run(evt: gr.SelectData, table):
    """Clicking a row of the runs table opens that run (curves, probes, settings)."""
    try:
        row = evt.index[0]
        name = table.iloc[row, 0] if hasattr(table, "iloc") else table[row][0]
    except (IndexError, KeyError, TypeError, ValueError):
        return gr.update(), "Pick a row of the runs table."
    return name, f"Showing **{name}**."


def send_probes(name):
    """Queue a run's probe rationales (the same texts at several steps) for rating."""
    if not name:
        return "No run selected."
    try:
        from analysis.annotations import default_store, items_from_samples

        jm = jobs()
        cfg = jm.run_dir(name) / "grace_config.json"
        import json

        c = json.loads(cfg.read_text()) if cfg.exists() else {}
        settings = {"model": c.get("model"), "run": name, "prompt": c.get("prompt"),
                    "max_new_tokens": c.get("max_new_tokens"), "sampled": False}
        added = default_store().add_items(items_from_samples(name, jm.samples(name), settings))
    except Exception as exc:
        return f"⚠️ {one_line(exc)}"
    return f"Sent {sum(1 for _, n in added if n)} probe rationale(s) of '{name}' to the annotation queue."


def build(adapter_dropdown, model_box) -> None:
    with gr.Tab("Train"):
        gr.Markdown("Fine-tune a LoRA adapter. GRACE rewards sampled rationales by contrastive similarity; CL and "
                    "SimCSE are the paper's baselines. The job runs in its own process (one at a time); this page "
                    "re-attaches to it after a refresh, and any run on disk opens from the table below.")
        with gr.Row():
            name = gr.Textbox(value="demo", label="Run name", elem_id="train-name")
            method = gr.Dropdown(METHODS, value=METHODS[0], label="Method / mode")
            upload = gr.File(label="Data (optional; default: the sample set)", file_types=[".jsonl", ".txt"])
        with gr.Row():
            steps = gr.Number(value=20, precision=0, label="Steps", elem_id="train-steps")
            batch = gr.Number(value=D.batch_size, precision=0, label="Batch size B")
            rollouts = gr.Number(value=D.rollouts, precision=0, label="Rollouts K")
            new_tokens = gr.Number(value=D.max_new_tokens, precision=0, label="Max new tokens", elem_id="train-tokens")
            rank = gr.Number(value=D.lora_rank, precision=0, label="LoRA rank")
        with gr.Row():
            lam1 = gr.Number(value=D.lambda_consistency, label="λ1 consistency")
            lam2 = gr.Number(value=D.lambda_hard, label="λ2 hard negative")
            tau = gr.Number(value=D.reward_temperature, label="reward temperature τ")
        est = gr.Markdown(estimate(METHODS[0], 20, D.batch_size, D.rollouts, D.max_new_tokens, model_box.value),
                          elem_id="train-estimate")
        with gr.Row():
            go = gr.Button("Start", variant="primary", elem_id="train-start")
            stop = gr.Button("Cancel", elem_id="train-cancel")
        msg = gr.Markdown(elem_id="train-msg")  # the answer to the visitor's last action; stays until the next
        status = gr.Markdown(elem_id="train-status")  # the job's live line, refreshed every 2 s
        curves = gr.Plot(label="Rewards, loss and rationale length", elem_id="train-curves")
        samples = gr.Dataframe(headers=["step", "probe text", "rationale"], label="How the probe rationales evolve",
                               interactive=False, wrap=True, elem_id="train-samples")
        send = gr.Button("Send the probe rationales to annotation", elem_id="train-send")
        settings = gr.Markdown(elem_id="train-settings")
        runs = gr.Dataframe(headers=RUN_HEADERS, label="Runs on disk (click a row to open it)", interactive=False,
                            elem_id="train-runs")
        current = gr.State("")
        for c in (method, steps, batch, rollouts, new_tokens, model_box):
            c.change(estimate, [method, steps, batch, rollouts, new_tokens, model_box], [est])
        go.click(start, [name, method, upload, steps, batch, rollouts, lam1, lam2, tau, new_tokens, rank, model_box],
                 [msg, current])
        stop.click(cancel, [current], [msg])
        send.click(send_probes, [current], [msg])
        runs.select(select_run, [runs], [current, msg])
        timer = gr.Timer(2.0)
        outs = [status, curves, samples, settings, runs, adapter_dropdown, current]
        timer.tick(refresh, [current], outs, show_progress="hidden")
        current.change(refresh, [current], outs)
        return refresh, current, outs
