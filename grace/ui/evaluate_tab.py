"""Evaluate: the offline suite (or chosen tasks) for the current settings; saved results compared."""

from __future__ import annotations

import json
import warnings

import gradio as gr

from analysis.plots import category_bars
from grace.evaluation.mteb_adapter import compare_table, evaluate, load_results, offline_task_names, resolve_tasks
from grace.files.cancel import Cancelled
from grace.model.settings import settings_key

from .common import CancelFlags, data_dir, encoder_for, one_line, session_token, settings_from


CANCELS = CancelFlags()


def results_dir():
    d = data_dir() / "results"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _files() -> list:
    return sorted(results_dir().glob("*.json"), key=lambda f: f.stat().st_mtime)


def _row_name(r: dict) -> str:
    return f"{r['label']} · {r.get('suite', '?')} · {len(r['tasks'])} task(s)"


def saved():
    """The comparison table, the bars and the remove list, from the saved results (oldest first)."""
    try:
        res = load_results([str(f) for f in _files()])
    except Exception:
        res = []
    choices = gr.update(choices=[_row_name(r) for r in res], value=None)
    if not res:
        return "No saved results yet.", None, choices
    return compare_table(res), category_bars(res), choices


def result_key(settings, size: str, tasks: list[str]) -> str:
    """One file per (settings, adapter weights, suite, tasks): the same run again replaces its row."""
    return settings_key(settings=settings.fingerprint(), suite=size, tasks=sorted(tasks))


def run_eval(token, size, tasks, *settings_values, progress=gr.Progress()):
    flag = CANCELS.start(token)
    try:
        s = settings_from(*settings_values)
        if not tasks:
            raise ValueError("Choose at least one task.")
        picked = resolve_tasks(",".join(tasks), quick=size == "quick")
        enc = encoder_for(s)
        done = []
        progress(0, desc=f"{picked[0].metadata.name} (1 of {len(picked)})")

        def on_task(name, score, seconds):
            done.append(name)
            nxt = f"; next {picked[len(done)].metadata.name}" if len(done) < len(picked) else ""
            progress(len(done) / len(picked), desc=f"{name}: {100 * score:.1f}{nxt}")

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = evaluate(s, picked, encoder=enc, on_task=on_task, should_stop=flag.is_set)
        r["suite"] = size
        out = results_dir() / f"{result_key(s, size, tasks)}.json"
        replaced = out.exists()
        out.write_text(json.dumps(r, indent=1))
    except Cancelled:
        return ("Cancelled; nothing was saved.",) + saved()
    except Exception as exc:
        return (f"⚠️ {one_line(exc)}",) + saved()
    msg = (f"**{r['label']}**: average {100 * r['average']:.1f} in {r['wall_seconds'] / 60:.1f} min"
           + (" (it replaces the earlier row with the same settings)." if replaced else "."))
    return (msg,) + saved()


def cancel_eval(token: str | None) -> str:
    CANCELS.cancel(token)
    return "Cancelling: the evaluation stops after the current batch of texts and saves nothing."


def remove(row: str):
    """Delete one saved result (by its row name)."""
    if not row:
        return ("Pick a saved row to remove.",) + saved()
    for f in _files():
        try:
            r = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if _row_name(r) == row:
            f.unlink()
            return (f"Removed {row}.",) + saved()
    return (f"{row} is no longer saved.",) + saved()


def build(settings_components) -> tuple:
    with gr.Tab("Evaluate"):
        gr.Markdown("Run the offline WordNet tasks (MTEB formats) with the current model settings. Results are saved "
                    "and compared below, in the shape of the paper's Table 1; each row names the settings that "
                    "differ from the defaults, and running the same settings again replaces its row.")
        with gr.Row():
            size = gr.Radio(["quick", "full"], value="quick", label="Size")
            tasks = gr.CheckboxGroup(offline_task_names(), value=offline_task_names(), label="Tasks")
        with gr.Row():
            go = gr.Button("Evaluate", variant="primary", elem_id="eval-go")
            stop = gr.Button("Cancel", elem_id="eval-cancel")
        status = gr.Markdown(elem_id="eval-status")
        table = gr.Markdown(elem_id="eval-table")
        bars = gr.Plot(label="By category")
        with gr.Row():
            rows = gr.Dropdown(choices=[], label="Saved row", elem_id="eval-rows", scale=3)
            drop = gr.Button("Remove this row", elem_id="eval-remove", scale=1)
        token = session_token()
        go.click(run_eval, [token, size, tasks] + settings_components, [status, table, bars, rows],
                 concurrency_limit=1, concurrency_id="model", show_progress_on=[status])
        stop.click(cancel_eval, [token], [status], show_progress="hidden")
        drop.click(remove, [rows], [status, table, bars, rows])
    return saved, [table, bars, rows]
