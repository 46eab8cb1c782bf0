"""Evaluate: the offline suite (or chosen tasks) for the current settings; saved results compared."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import gradio as gr

from analysis.plots import category_bars
from grace.evaluation.mteb_adapter import compare_table, evaluate, load_results, offline_task_names, resolve_tasks
from grace.files.cancel import Cancelled
from grace.files.textio import atomic_output
from grace.model.settings import settings_key

from .common import CANCELS, ENGINE, data_dir, encoder_for, one_line, settings_from
from .identity import page_token, require_owner, visitor_from
from .requests import MODEL_HANDLERS, streamed, ticket_for


def results_dir():
    d = data_dir() / "results"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _files() -> list:
    return sorted(results_dir().glob("*.json"), key=lambda f: f.stat().st_mtime)


def _row_name(r: dict) -> str:
    return f"{r['label']} · {r.get('suite', '?')} · {len(r['tasks'])} task(s)"


def _skipped_note(skipped) -> str:
    """One line naming the saved result files that could not be read (they are left on disk)."""
    # each name in a code span (nothing in it renders), with no character that could end the span
    names = ", ".join("`" + "".join(c if c.isprintable() and c != "`" else "?" for c in Path(path).name) + "`"
                      for path, _ in skipped)
    return (f"⚠️ Skipped {len(skipped)} unreadable result file(s) in the results folder (cut by a crash or "
            f"edited): {names}.")


def saved():
    """The comparison table, the bars and the remove list, from the saved results (oldest first).
    A damaged result file never hides the others: the good rows are shown with a note naming it."""
    try:
        files = _files()
        res = load_results([str(f) for f in files])
    except OSError:  # the folder changed while it was listed
        files, res = [], load_results([])
    note = "\n\n" + _skipped_note(res.skipped) if res.skipped else ""
    # each row is removed by its file's key (its name), not by its label: two rows may share a label
    skipped = {p for p, _ in res.skipped}
    good = [f for f in files if str(f) not in skipped]
    choices = gr.update(choices=[(_row_name(r), f.stem) for f, r in zip(good, res)], value=None)
    if not res:
        return "No saved results yet." + note, None, choices
    try:
        return compare_table(res) + note, category_bars(res), choices
    except Exception as exc:  # a result that passed the checks but cannot be drawn
        return f"⚠️ The saved results could not be shown: {one_line(exc)}" + note, None, choices


def result_key(settings, size: str, tasks: list[str]) -> str:
    """One file per (settings, adapter weights, suite, tasks): the same run again replaces its row."""
    return settings_key(settings=settings.fingerprint(), suite=size, tasks=sorted(tasks))


def run_eval(page, size, tasks, *settings_values, progress=gr.Progress()):
    try:
        owner = visitor_from(page).id
        s = settings_from(*settings_values)
        if size not in ("quick", "full"):
            raise ValueError("Size is quick or full.")
        if not tasks or not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
            raise ValueError("Choose at least one task.")
        unknown = sorted(set(tasks) - set(offline_task_names()))
        if unknown:
            raise ValueError(f"Unknown task(s): {', '.join(unknown)[:200]}; choose from the list.")
        picked = resolve_tasks(",".join(tasks), quick=size == "quick")
        ticket = ticket_for(page, "evaluate")
        enc = ENGINE.encoder(encoder_for(s), ticket)
        done = []
        progress(0, desc=f"{picked[0].metadata.name} (1 of {len(picked)})")

        def on_task(name, score, seconds):
            done.append(name)
            nxt = f"; next {picked[len(done)].metadata.name}" if len(done) < len(picked) else ""
            progress(len(done) / len(picked), desc=f"{name}: {100 * score:.1f}{nxt}")

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = evaluate(s, picked, encoder=enc, on_task=on_task, should_stop=ticket.should_stop)
        r["suite"] = size
        r["owner"] = owner  # only whoever ran it may remove its row
        out = results_dir() / f"{result_key(s, size, tasks)}.json"
        replaced = out.exists()
        if replaced:  # the same settings' row is replaced only by its owner
            try:
                earlier = json.loads(out.read_text()).get("owner")
            except (OSError, ValueError, AttributeError):
                earlier = owner  # an unreadable file is replaced
            require_owner(page, earlier, "The saved row with these settings")
        with atomic_output(out) as f:  # a crash or a full disk never leaves a cut result file
            json.dump(r, f, indent=1)
    except Cancelled as exc:
        clock = ticket.time_limit(exc)
        if clock is not None:
            return (f"⚠️ {one_line(clock)} Nothing was saved.",) + saved()
        return ("Cancelled; nothing was saved.",) + saved()
    except Exception as exc:
        return (f"⚠️ {one_line(exc)}",) + saved()
    msg = (f"**{r['label']}**: average {100 * r['average']:.1f} in {r['wall_seconds'] / 60:.1f} min"
           + (" (it replaces the earlier row with the same settings)." if replaced else "."))
    return (msg,) + saved()


def cancel_eval(page) -> str:
    CANCELS.cancel(page_token(page), "evaluate")
    return "Cancelling: the evaluation stops after the current batch of texts and saves nothing."


def remove(key: str, page=None):
    """Delete one saved result (by its file's key, the Saved row list's value), if it is the visitor's."""
    if not key or not isinstance(key, str):
        return ("Pick a saved row to remove.",) + saved()
    for f in _files():  # the key is matched against the folder's own files: it never names a path
        if f.stem != key:
            continue
        try:
            r = json.loads(f.read_text())
            row = _row_name(r)
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            break
        try:
            require_owner(page, r.get("owner"), "This row")
        except ValueError as exc:
            return (f"⚠️ {one_line(exc)}",) + saved()
        f.unlink(missing_ok=True)
        return (f"Removed {row}.",) + saved()
    return ("That row is no longer saved.",) + saved()


def build(settings_components, page) -> tuple:
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
        go.click(streamed(run_eval, 4), [page, size, tasks] + settings_components, [status, table, bars, rows],
                 concurrency_limit=MODEL_HANDLERS, concurrency_id="model", show_progress_on=[status])
        stop.click(cancel_eval, [page], [status], show_progress="hidden", queue=False)
        drop.click(remove, [rows, page], [status, table, bars, rows])
    return saved, [table, bars, rows]
