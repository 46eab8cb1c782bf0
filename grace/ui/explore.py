"""Explore: a query against documents, three similarity columns, streamed rationales, token
contributions, and what-if editing of the rationales."""

from __future__ import annotations

import queue
import threading

import gradio as gr

from analysis.attributions import contributions, highlight_spans
from analysis.explore import compare_documents, rescore

from .common import MAX_CHARS, MAX_DOCS, adapter_name, encoder_for, get_encoder, one_line, settings_from

EXAMPLES = [
    ["Where is Machu Picchu?",
     "Machu Picchu is an Inca citadel in the Andes of Peru.\nThe stock market fell sharply today.\n"
     "Chichen Itza is a Maya city on the Yucatan peninsula."],
    ["How do vaccines protect against disease?",
     "Vaccines train the immune system to recognise a pathogen.\nAntibiotics kill bacteria but not viruses.\n"
     "The museum opened a new wing for modern art."],
    ["Why is the sky blue?",
     "Air molecules scatter blue sunlight more than red light.\nSunsets look red near the horizon.\n"
     "Bread rises because yeast releases carbon dioxide."],
]
HEADERS = ["rank", "document", "GRACE cosine", "direct forward", "MiniLM", "from rationale", "rationale"]


def parse_inputs(query: str, docs_text: str) -> tuple[str, list[str], list[str]]:
    """Validated query and documents, plus notes about anything cut. Raises ValueError."""
    notes = []
    query = (query or "").strip()
    if not query:
        raise ValueError("Type a query.")
    docs = [d.strip() for d in (docs_text or "").replace("\r\n", "\n").split("\n") if d.strip()]
    if not docs:
        raise ValueError("Add at least one document (one per line).")
    if len(docs) > MAX_DOCS:
        raise ValueError(f"{len(docs)} documents: the limit is {MAX_DOCS} per comparison.")
    if len(query) > MAX_CHARS:
        notes.append(f"The query was cut to its first {MAX_CHARS:,} characters.")
        query = query[:MAX_CHARS]
    cut = [i + 1 for i, d in enumerate(docs) if len(d) > MAX_CHARS]
    if cut:
        notes.append(f"Document(s) {', '.join(map(str, cut))} cut to their first {MAX_CHARS:,} characters.")
        docs = [d[:MAX_CHARS] for d in docs]
    return query, docs, notes


def _doc_choices(comp) -> list[str]:
    return [f"{rank}. {comp.docs[i].text[:60]}" for rank, i in enumerate(comp.order(), 1)]


def _contrib_view(comp, choice_index: int):
    i = comp.order()[choice_index]
    c = contributions(comp.query, comp.docs[i])
    q_tot, d_tot = c.totals("a"), c.totals("b")
    summary = (f"**cosine {c.cosine:+.4f}** — query side: text {q_tot['text']:+.4f}, rationale "
               f"{q_tot['rationale']:+.4f} · document side: text {d_tot['text']:+.4f}, rationale {d_tot['rationale']:+.4f}")
    return (highlight_spans(c.a_tokens, c.a_segments, c.a_values),
            highlight_spans(c.b_tokens, c.b_segments, c.b_values), summary, comp.docs[i].rationale)


def run_compare(query, docs_text, *settings_values):
    """Generator: streams rationales while they are generated, then the full comparison."""
    empty = ([], "", [], [], "", gr.update(choices=[], value=None), "", "", None)
    try:
        query, docs, notes = parse_inputs(query, docs_text)
        s = settings_from(*settings_values)
        enc = encoder_for(s)
        minilm = get_encoder("minilm") if s.model != "minilm" else None
    except Exception as exc:  # shown in the UI
        yield (f"⚠️ {one_line(exc)}",) + empty
        return
    texts = [query] + docs
    live = {i: "" for i in range(len(texts))}
    updates: queue.Queue = queue.Queue()
    box: dict = {}
    tok = getattr(enc, "tokenizer", None)

    def on_token(row, ids):
        updates.put((row, ids))

    def work():
        try:
            box["comp"] = compare_documents(enc, query, docs, minilm=minilm, settings=s,
                                            on_token=on_token if s.rationale and tok is not None else None)
        except Exception as exc:
            box["error"] = exc

    t = threading.Thread(target=work, daemon=True)
    t.start()
    while t.is_alive():
        t.join(timeout=0.4)
        changed = False
        while not updates.empty():
            row, ids = updates.get()
            live[row] = tok.decode(ids, skip_special_tokens=True)
            changed = True
        if changed:
            stream = "\n".join(f"[{'query' if i == 0 else f'doc {i}'}] {live[i]}" for i in live)
            yield ("Generating rationales…",) + ([], stream) + empty[2:]
    if "error" in box:
        yield (f"⚠️ {one_line(box['error'])}",) + empty
        return
    comp = box["comp"]
    q_spans, d_spans, summary, doc_rat = _contrib_view(comp, 0)
    notes = notes + seen_notes(comp, getattr(enc, "max_text_tokens", None))
    status = "Ranked by GRACE cosine." + (" " + " ".join(notes) if notes else "")
    stream = "\n".join(f"[{'query' if i == 0 else f'doc {i}'}] {r.rationale}" for i, r in
                       enumerate([comp.query] + comp.docs))
    choices = _doc_choices(comp)
    yield (status, comp.rows(), stream, q_spans, d_spans, summary, gr.update(choices=choices, value=choices[0]),
           comp.query.rationale, doc_rat, comp)


def seen_notes(comp, max_tokens: int | None) -> list[str]:
    """What the model actually read of texts longer than its limit (in tokens, not characters)."""
    if not max_tokens:
        return []
    long = [("The query" if i == 0 else f"Document {i}") for i, r in enumerate([comp.query] + comp.docs)
            if getattr(r, "truncated", False)]
    if not long:
        return []
    return [f"{', '.join(long)} {'is' if len(long) == 1 else 'are'} longer than the model reads: it sees "
            f"the first {max_tokens} tokens of {'that text' if len(long) == 1 else 'each'}."]


def select_doc(choice, comp):
    if comp is None or not choice:
        return [], [], "", ""
    idx = _doc_choices(comp).index(choice)
    return _contrib_view(comp, idx)


def what_if(choice, query_rat, doc_rat, comp, *settings_values):
    """Re-score the selected pair from the edited rationales (no generation)."""
    if comp is None or not choice:
        return "Run a comparison first.", [], []
    try:
        s = settings_from(*settings_values)
        enc = encoder_for(s)
        i = comp.order()[_doc_choices(comp).index(choice)]
        w = rescore(enc, comp.query, comp.docs[i], query_rat or "", doc_rat or "", pooling=s.pooling,
                    layer=int(s.layer))
    except Exception as exc:
        return f"⚠️ {one_line(exc)}", [], []
    c = w.contributions
    d = c.totals("b")
    msg = (f"**before {w.before:+.4f} → after {w.after:+.4f}** (change {w.after - w.before:+.4f}); with the edited "
           f"rationales the document's rationale tokens contribute {d['rationale']:+.4f}.")
    return msg, highlight_spans(c.a_tokens, c.a_segments, c.a_values), highlight_spans(c.b_tokens, c.b_segments,
                                                                                         c.b_values)


def send_to_annotation(comp, *settings_values):
    """Queue the shown rationales (query and documents) for rating in the Annotate tab."""
    if comp is None:
        return "Run a comparison first."
    try:
        from analysis.annotations import default_store, items_from_comparison

        s = settings_from(*settings_values)
        settings = {"model": s.model, "adapter": adapter_name(s), "prompt": s.prompt,
                    "max_new_tokens": s.max_new_tokens, "sampled": s.sample, "seed": s.seed}
        added = default_store().add_items(items_from_comparison(comp, settings))
    except Exception as exc:
        return f"⚠️ {one_line(exc)}"
    new = sum(1 for _, is_new in added if is_new)
    return f"Sent {new} rationale(s) to the annotation queue ({len(added) - new} were already there)."


def build(settings_components) -> dict:
    with gr.Tab("Explore"):
        gr.Markdown("Type a query and documents (one per line). Each text gets a rationale; the embedding pools "
                    "the text **and** its rationale. Compare with the direct forward pass (no rationale) and "
                    "the MiniLM encoder, and see which tokens made each similarity.")
        with gr.Row():
            query = gr.Textbox(label="Query", value=EXAMPLES[0][0], elem_id="explore-query", scale=1)
            docs = gr.Textbox(label="Documents (one per line, up to 50)", value=EXAMPLES[0][1], lines=4,
                              elem_id="explore-docs", scale=2)
        gr.Examples(EXAMPLES, [query, docs], label="Examples")
        go = gr.Button("Compare", variant="primary", elem_id="explore-go")
        status = gr.Markdown(elem_id="explore-status")
        table = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, elem_id="explore-table")
        stream = gr.Textbox(label="Rationales (streamed as they are generated)", lines=4, interactive=False,
                            elem_id="explore-rationales")
        with gr.Row():
            pick = gr.Dropdown(label="Document to inspect", choices=[], elem_id="explore-pick")
        summary = gr.Markdown(elem_id="explore-summary")
        with gr.Row():
            q_hl = gr.HighlightedText(label="Query tokens (red helps, blue hurts the match)", elem_id="explore-qhl")
            d_hl = gr.HighlightedText(label="Document tokens", elem_id="explore-dhl")
        with gr.Accordion("What if the rationale said something else?", open=False):
            gr.Markdown("Edit either rationale (or delete a sentence) and re-score: the embedding is recomputed "
                        "from the text and your rationale, with no generation.")
            with gr.Row():
                q_rat = gr.Textbox(label="Query rationale", lines=3, elem_id="whatif-q")
                d_rat = gr.Textbox(label="Document rationale", lines=3, elem_id="whatif-d")
            rescore_btn = gr.Button("Re-score with these rationales", elem_id="whatif-go")
            whatif_msg = gr.Markdown(elem_id="whatif-msg")
            with gr.Row():
                wq = gr.HighlightedText(label="Query tokens after the edit")
                wd = gr.HighlightedText(label="Document tokens after the edit")
        with gr.Row():
            send = gr.Button("Send these rationales to annotation", elem_id="explore-send")
            sent = gr.Markdown(elem_id="explore-sent")
        comp_state = gr.State(None)
        send.click(send_to_annotation, [comp_state] + settings_components, [sent])
        go.click(run_compare, [query, docs] + settings_components,
                 [status, table, stream, q_hl, d_hl, summary, pick, q_rat, d_rat, comp_state],
                 concurrency_limit=1, concurrency_id="model")
        pick.change(select_doc, [pick, comp_state], [q_hl, d_hl, summary, d_rat])
        rescore_btn.click(what_if, [pick, q_rat, d_rat, comp_state] + settings_components, [whatif_msg, wq, wd],
                          concurrency_limit=1, concurrency_id="model")
    return {"comp_state": comp_state, "pick": pick, "q_rat": q_rat, "d_rat": d_rat}
