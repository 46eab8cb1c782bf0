"""GRACE Studio's Gradio app: composes the tabs; computation lives in grace/ and analysis/."""

from __future__ import annotations

import os

import gradio as gr

from . import annotate_tab, evaluate_tab, explore, map_tab, train_tab
from .common import MAX_UPLOAD_MB, WARMUP, model_bar

INTRO = """# GRACE Studio
Embeddings whose reasoning you can read ([GRACE, arXiv 2510.04506](https://arxiv.org/abs/2510.04506)):
the model writes a rationale about each text, and the embedding pools the text **and** its rationale.
The first use of the embedded Gemma 3 270M converts it once (about a minute); later loads take seconds."""


def build(default_model: str = "default") -> gr.Blocks:
    with gr.Blocks(title="GRACE Studio") as demo:
        gr.Markdown(INTRO)
        warm = gr.Markdown(WARMUP.message, elem_id="model-status")
        settings = model_bar(default_model)
        explore.build(settings)
        map_tab.build(settings)
        refresh, current, outs = train_tab.build(settings[1], settings[0])
        saved, eval_outs = evaluate_tab.build(settings)
        annotate_tab.build()
        demo.load(refresh, [current], outs)  # re-attach to a running job after a refresh
        demo.load(saved, None, eval_outs)
        ticker = gr.Timer(1.0, active=WARMUP.state == "loading")
        ticker.tick(lambda: (WARMUP.message, gr.Timer(active=WARMUP.state == "loading")), None, [warm, ticker],
                    show_progress="hidden")
        demo.load(lambda: (WARMUP.message, gr.Timer(active=WARMUP.state == "loading")), None, [warm, ticker])
    return demo


def main() -> None:
    model = os.environ.get("GRACE_MODEL", "default")
    WARMUP.start(model)  # in the background: the page is up at once and says how far loading is
    demo = build(model)
    demo.queue(default_concurrency_limit=1, max_size=32).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)), show_error=False,
        max_file_size=f"{MAX_UPLOAD_MB}mb",
        head=annotate_tab.KEYBOARD_JS + map_tab.CLICK_JS, css=map_tab.CSS)
