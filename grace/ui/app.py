"""GRACE Studio's Gradio app: composes the tabs; computation lives in grace/ and analysis/."""

from __future__ import annotations

import os
import sys

import gradio as gr

from grace.model.backbone import CONVERSION_TIME

from . import annotate_tab, evaluate_tab, explore, map_tab, train_tab
from .common import WARMUP, is_public, max_upload_mb, model_bar
from .identity import browser_token_state, identify, left, oauth_is_real, page_state
from .storage import served_paths

SWITCH_INTERVAL_S = 0.001  # see main()
# Gradio's own copies of uploads and returned files: every hour, those older than an hour go
DELETE_CACHE = (3600, 3600)

INTRO = f"""# GRACE Studio
Embeddings whose reasoning you can read ([GRACE, arXiv 2510.04506](https://arxiv.org/abs/2510.04506)):
the model writes a rationale about each text, and the embedding pools the text **and** its rationale.
The first use of the embedded Gemma 3 270M converts it once ({CONVERSION_TIME}); later loads take seconds."""


def build(default_model: str = "default") -> gr.Blocks:
    with gr.Blocks(title="GRACE Studio", delete_cache=DELETE_CACHE) as demo:
        gr.Markdown(INTRO)
        page = page_state()  # this page's token (cancel flags, kept results) and its visitor
        browser = browser_token_state()  # the visitor's token, kept by their browser across reloads
        with gr.Row():
            who_line = gr.Markdown(elem_id="visitor")
            if oauth_is_real():  # a Space with hf_oauth: true (off a Space Gradio would mock sign-in)
                gr.LoginButton(scale=0)
        warm = gr.Markdown(WARMUP.message, elem_id="model-status")
        settings = model_bar(default_model)
        explore.build(settings, page)
        map_tab.build(settings, page)
        refresh, refresh_inputs, outs = train_tab.build(settings[1], settings[0], page)
        saved, eval_outs = evaluate_tab.build(settings, page)
        annotate_tab.build(page)
        # who the visitor is comes first; then the page re-attaches to their running job
        demo.load(identify, [browser, page], [browser, page, who_line], api_name="identify", queue=False) \
            .then(refresh, refresh_inputs, outs, queue=False)
        demo.load(saved, None, eval_outs)
        demo.unload(left)  # a visitor who closes the tab stops their running work
        ticker = gr.Timer(1.0, active=WARMUP.state == "loading")
        ticker.tick(lambda: (WARMUP.message, gr.Timer(active=WARMUP.state == "loading")), None, [warm, ticker],
                    show_progress="hidden")
        demo.load(lambda: (WARMUP.message, gr.Timer(active=WARMUP.state == "loading")), None, [warm, ticker])
    return demo


def main() -> None:
    # The server's event loop shares the GIL with the engine's decode loop; at the default 5 ms switch
    # interval every syscall of a status tick or a save could wait 5 ms to get it back
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    model = os.environ.get("GRACE_MODEL", "default")
    WARMUP.start(model)  # in the background: the page is up at once and says how far loading is
    demo = build(model)
    # api_open=False: off a Space Gradio leaves the direct /run routes open, which skip every queue limit
    demo.queue(default_concurrency_limit=1, max_size=64, api_open=False).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)), show_error=False,
        max_file_size=f"{max_upload_mb()}mb",
        allowed_paths=served_paths(),  # the exports only: on a Space they live in /data, outside cwd and /tmp
        state_session_capacity=2000 if is_public() else 10000,
        head=annotate_tab.KEYBOARD_JS + map_tab.CLICK_JS, css=map_tab.CSS)
