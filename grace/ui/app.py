"""The Gradio app: composes the tabs. Computation lives in grace/ and analysis/."""

from __future__ import annotations

import os

import gradio as gr

from analysis.attributions import rank_documents
from grace.models import load_encoder

_ENCODERS: dict = {}


def _encoder(model: str):
    if model not in _ENCODERS:
        _ENCODERS[model] = load_encoder(model)
    return _ENCODERS[model]


def explore(model: str, query: str, docs_text: str, max_new_tokens: float):
    """Rank the documents (one per line) against the query; a table of cosine and rationales."""
    docs = [d for d in (docs_text or "").splitlines() if d.strip()]
    if not (query or "").strip():
        return [], "Type a query."
    if not docs:
        return [], "Add at least one document (one per line)."
    if len(docs) > 50:
        return [], f"{len(docs)} documents: the limit is 50."
    try:
        res = _encoder(model).encode([query] + docs, max_new_tokens=int(max_new_tokens), return_details=True)
    except Exception as exc:  # shown in the UI, never a traceback
        return [], f"Could not encode: {str(exc).splitlines()[0]}"
    report = rank_documents(res[0], res[1:])
    rows = [[round(d["cosine"], 4), d["text"], d["rationale"], round(d["segments"]["rationale"], 4)]
            for d in report["docs"]]
    return rows, f"Query rationale: {report['query']['rationale']!r}"


def build(model: str = "default") -> gr.Blocks:
    with gr.Blocks(title="GRACE Studio") as demo:
        gr.Markdown("# GRACE Studio\nEmbeddings whose reasoning you can read (GRACE, arXiv 2510.04506).")
        model_box = gr.Textbox(value=model, label="Model (default, minilm, HF id or path)")
        query = gr.Textbox(label="Query", value="Where is Machu Picchu?")
        docs = gr.Textbox(label="Documents (one per line)", lines=5,
                          value="Machu Picchu is an Inca citadel in the Andes of Peru.\nThe stock market fell sharply today.")
        new_tokens = gr.Slider(4, 128, value=32, step=4, label="Max rationale tokens")
        go = gr.Button("Rank", variant="primary")
        note = gr.Markdown()
        table = gr.Dataframe(headers=["cosine", "document", "rationale", "from rationale"], interactive=False)
        go.click(explore, [model_box, query, docs, new_tokens], [table, note], concurrency_limit=1)
    return demo


def main() -> None:
    demo = build(os.environ.get("GRACE_MODEL", "default"))
    demo.queue(default_concurrency_limit=1).launch(
        server_name="0.0.0.0", server_port=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
