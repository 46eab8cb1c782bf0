"""Map: a corpus embedded with the current settings and projected with UMAP (cosine)."""

from __future__ import annotations

import csv
import time

import gradio as gr

from analysis.plots import corpus_map
from analysis.projection import project
from grace.training.data import SAMPLE_PASSAGES
from grace.files.textio import read_corpus, read_texts

from .common import adapter_name, data_dir, encoder_for, one_line, settings_from, upload_path

MAX_MAP_TEXTS = 300
SOURCES = ["sample: WordNet definitions (labelled)", "sample: 100 passages", "uploaded file"]
MODES = ["with rationale", "direct forward vs with rationale", "base vs adapter"]


def load_corpus(source: str, upload) -> tuple[list[str], list[str] | None]:
    if source == SOURCES[0]:
        from grace.evaluation.offline_tasks import build_task_data

        d = build_task_data("quick")["classification"]
        from grace.evaluation.offline_tasks import CLASSES

        rows = d["train"] + d["test"]
        return [t for t, _ in rows], [CLASSES[y] for _, y in rows]
    if source == SOURCES[1]:
        return read_texts(SAMPLE_PASSAGES), None
    if upload is None:
        raise ValueError("Upload a .txt, .jsonl or .csv file first.")
    path = upload_path(upload)
    return read_corpus(path, max_texts=MAX_MAP_TEXTS)


def make_map(source, upload, mode, *settings_values, progress=gr.Progress()):
    try:
        s = settings_from(*settings_values)
        texts, labels = load_corpus(source, upload)
        if len(texts) > MAX_MAP_TEXTS:
            texts, labels = texts[:MAX_MAP_TEXTS], labels[:MAX_MAP_TEXTS] if labels else None
        panels = []  # (title, encoder, kwargs)
        if mode == MODES[2]:
            if not s.adapter:
                raise ValueError("Choose an adapter in the model settings to compare base vs adapter.")
            panels = [("base", encoder_for(s.with_(adapter=None)), s),
                      (f"adapter {adapter_name(s)}", encoder_for(s), s)]
        else:
            enc = encoder_for(s)
            if mode == MODES[1]:
                panels.append(("direct forward", enc, s.with_(rationale=False, pooling="mean")))
            panels.append(("with rationale" if s.rationale else "direct forward", enc, s))
    except Exception as exc:
        return f"⚠️ {one_line(exc)}", None, None, None
    figs, notes, rows = [], [], []
    total = len(panels) * len(texts)
    done = 0
    try:
        for title, enc, kw in panels:
            results = []
            for start in range(0, len(texts), 8):  # small chunks: progress moves and Cancel takes effect
                chunk = texts[start:start + 8]
                results += enc.encode(chunk, kw, return_details=True)
                done += len(chunk)
                progress(done / total, desc=f"{title}: {done}/{total} texts")
            import numpy as np

            emb = np.stack([r.embedding for r in results])
            proj = project(emb)
            if proj.note:
                notes.append(proj.note)
            figs.append(corpus_map(proj.coords, texts, labels, [r.rationale for r in results],
                                   title=f"{title} ({proj.method.upper()})"))
            for i, r in enumerate(results):
                rows.append([title, r.text, labels[i] if labels else "", r.rationale, float(proj.coords[i][0]),
                             float(proj.coords[i][1])] + [float(x) for x in r.embedding])
    except Exception as exc:
        return f"⚠️ {one_line(exc)}", None, None, None
    out = data_dir() / "exports" / f"map-{int(time.time())}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        dim = len(rows[0]) - 6
        w.writerow(["panel", "text", "label", "rationale", "x", "y"] + [f"e{i}" for i in range(dim)])
        w.writerows(rows)
    msg = f"{len(texts)} texts mapped." + (" " + " ".join(sorted(set(notes))) if notes else "")
    return msg, figs[0], figs[1] if len(figs) > 1 else None, str(out)


def build(settings_components) -> None:
    with gr.Tab("Map"):
        gr.Markdown(f"Embed a corpus (up to {MAX_MAP_TEXTS} texts) with the current settings and look at it in 2-d "
                    "(UMAP, cosine). Hover a point for its text and rationale.")
        with gr.Row():
            source = gr.Radio(SOURCES, value=SOURCES[0], label="Corpus")
            upload = gr.File(label=".txt / .jsonl / .csv (a 'text' column, optional 'label')",
                             file_types=[".txt", ".jsonl", ".csv"], elem_id="map-upload")
            mode = gr.Radio(MODES, value=MODES[0], label="Compare")
        with gr.Row():
            go = gr.Button("Map it", variant="primary", elem_id="map-go")
            stop = gr.Button("Cancel", elem_id="map-cancel")
        note = gr.Markdown(elem_id="map-note")
        with gr.Row():
            left = gr.Plot(label="map", elem_id="map-left")
            right = gr.Plot(label="second map", elem_id="map-right")
        download = gr.File(label="Embeddings and coordinates (CSV)", elem_id="map-download")
        upload.upload(lambda f: SOURCES[2], [upload], [source])
        event = go.click(make_map, [source, upload, mode] + settings_components, [note, left, right, download],
                         concurrency_limit=1, concurrency_id="model")
        stop.click(lambda: "Cancelled.", None, [note], cancels=[event])
