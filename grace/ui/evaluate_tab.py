"""Evaluate: the offline suite (or chosen tasks) for the current settings; saved results compared."""

from __future__ import annotations

import json
import time
import warnings

import gradio as gr

from analysis.plots import category_bars
from grace.evaluation.mteb_adapter import compare_table, evaluate, load_results, offline_task_names, resolve_tasks

from .common import data_dir, encoder_for, one_line, settings_from


def results_dir():
    d = data_dir() / "results"
    d.mkdir(parents=True, exist_ok=True)
    return d


def saved():
    files = sorted(results_dir().glob("*.json"))
    try:
        res = load_results([str(f) for f in files])
    except Exception:
        res = []
    if not res:
        return "No saved results yet.", None
    return compare_table(res), category_bars(res)


def run_eval(size, tasks, *settings_values, progress=gr.Progress()):
    try:
        s = settings_from(*settings_values)
        if not tasks:
            raise ValueError("Choose at least one task.")
        picked = resolve_tasks(",".join(tasks), quick=size == "quick")
        enc = encoder_for(s)
        done = []
        progress(0, desc="starting")

        def on_task(name, score, seconds):
            done.append(name)
            progress(len(done) / len(picked), desc=f"{name}: {100 * score:.1f}")

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = evaluate(s, picked, encoder=enc, on_task=on_task)
        r["suite"] = size
        (results_dir() / f"{int(time.time())}.json").write_text(json.dumps(r, indent=1))
    except Exception as exc:
        table, fig = saved()
        return f"⚠️ {one_line(exc)}", table, fig
    table, fig = saved()
    return f"**{r['label']}**: average {100 * r['average']:.1f} in {r['wall_seconds'] / 60:.1f} min.", table, fig


def build(settings_components) -> tuple:
    with gr.Tab("Evaluate"):
        gr.Markdown("Run the offline WordNet tasks (MTEB formats) with the current model settings. Results are saved "
                    "and compared below, in the shape of the paper's Table 1.")
        with gr.Row():
            size = gr.Radio(["quick", "full"], value="quick", label="Size")
            tasks = gr.CheckboxGroup(offline_task_names(), value=offline_task_names(), label="Tasks")
        go = gr.Button("Evaluate", variant="primary", elem_id="eval-go")
        status = gr.Markdown(elem_id="eval-status")
        table = gr.Markdown(elem_id="eval-table")
        bars = gr.Plot(label="By category")
        go.click(run_eval, [size, tasks] + settings_components, [status, table, bars],
                 concurrency_limit=1, concurrency_id="model")
    return saved, [table, bars]
