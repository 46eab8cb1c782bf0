"""Explore: a query against documents, three similarity columns, streamed rationales, token
contributions, and what-if editing of the rationales."""

from __future__ import annotations

import queue
import threading
import time

import gradio as gr

from analysis.attributions import contributions
from analysis.contrast import ablate_rationale, centred_contributions, explain_pair, reference_embedding
from analysis.explore import HEADERS, SEEDS, compare_documents, rescore
from analysis.plots import token_heat_html

from grace.files.cancel import Cancelled

from grace.serving.tickets import TimeLimit

from .common import (CANCELS, ENGINE, MAX_CHARS, MAX_DOCS, WARMUP, SessionStore, adapter_name, encoder_for,
                     is_public, one_line, settings_from)
from .identity import page_token, visitor_from
from .requests import MODEL_HANDLERS, ticket_for
from .storage import export_path, item_caps

# A comparison keeps every token's hidden states (tens of MB for 50 long documents) for the token
# views; the page's State holds only its key, and the server keeps the most recent ones.
COMPARISONS = SessionStore(capacity=8 if is_public() else 32, ttl=1800)
MAX_WHATIF_TOKENS = 256  # an edited rationale is cut here (the generation limit of the panel is 128)
MAX_WHATIF_CHARS = 20_000  # longer edits are refused before any tokenising
STREAM_EVERY = 1.5  # seconds between the streamed views a running Compare sends
EXPIRED = "This comparison is no longer kept on the server (it keeps the most recent ones): press Compare again."

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
WIDTHS = ["4%", "3%", "21%", "7%", "6%", "7%", "7%", "6%", "7%", "7%", "7%", "18%"]
ATTRIBUTIONS = ["raw cosine", "centred on the compared documents"]
ATTRIBUTION_HELP = (
    "**Raw cosine**: each token's exact share of the cosine shown (the shares sum to it). With mean-pooled "
    "LLM states every cosine is high, so most tokens look helpful. **Centred**: the mean embedding of the "
    "compared documents is subtracted from both sides first, so what every document shares cancels and the "
    "colours show what sets *this* document apart; the shares sum exactly to the centred cosine. "
    "Red raises the similarity, blue lowers it; hover a token for its value.")
TABLE_HELP = ("**#** is the document's input line. **± over 3 seeds**: with sampled rationales, the spread (std) of "
              "the GRACE cosine over three seeds. **GRACE, no adapter**: the same settings without the chosen adapter. "
              "**from rationale**: the part of the GRACE cosine that the document's rationale tokens contribute "
              "(exact; its text tokens contribute the rest). **moved by rationale**: 1 − cos between the document's "
              "embedding with its rationale and without it (0: the rationale changed nothing). **without rationale**: "
              "the cosine when the document's rationale is removed (the query keeps its own); GRACE cosine minus it "
              "is what the rationale carried. Click a header to sort.")
ABLATION_HEADERS = ["removed from the rationale", "cosine without it", "change"]


def _comp(ref):
    """The comparison a page's State refers to (its key; a Comparison itself passes through)."""
    return COMPARISONS.get(ref) if isinstance(ref, str) else ref


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
    """Dropdown labels in rank order: rank, input number, the start of the text."""
    return [f"{rank}. #{i + 1} {comp.docs[i].text[:60]}" for rank, i in enumerate(comp.order(), 1)]


def _index(comp, choice: str) -> int:
    """The input index of a dropdown label."""
    return comp.order()[_doc_choices(comp).index(choice)]


def _view(comp, i: int, mode: str):
    """Both sides' token contributions for document ``i`` (input order), raw or centred."""
    if mode == ATTRIBUTIONS[1]:
        if len(comp.docs) < 2:
            raise ValueError("Centring needs at least 2 documents: with one, the document is the reference.")
        return centred_contributions(comp.query, comp.docs[i], reference_embedding(comp.docs)), "centred cosine"
    return contributions(comp.query, comp.docs[i]), "cosine"


def _contrib_view(comp, choice_index: int, mode: str = ATTRIBUTIONS[0]):
    i = comp.order()[choice_index]
    c, what = _view(comp, i, mode)
    q_tot, d_tot = c.totals("a"), c.totals("b")
    summary = (f"**#{i + 1}: {what} {c.cosine:+.4f}** — query side: text {q_tot['text']:+.4f}, rationale "
               f"{q_tot['rationale']:+.4f} · document side: text {d_tot['text']:+.4f}, rationale {d_tot['rationale']:+.4f}")
    return (token_heat_html(c.a_tokens, c.a_segments, c.a_values, caption=f"query tokens: share of the {what}"),
            token_heat_html(c.b_tokens, c.b_segments, c.b_values, caption=f"#{i + 1} tokens: share of the {what}"),
            summary, comp.docs[i].rationale)


def run_compare(page, query, docs_text, mode, *settings_values):
    """Generator: streams rationales while they are generated, then the full comparison.

    The model work runs in the engine (grace.serving), batched with other visitors' rows; a
    cancelled event, a visitor who left, a new Compare from the same page, the wall-clock limit and
    a page that stopped waiting (missed heartbeats) each stop the request at its next decode step."""
    none = gr.update(choices=[], value=None)
    empty = ([], "", "", "", "", none, "", "", None, none, none)
    try:
        ticket = ticket_for(page, "explore")
        flag = ticket.flag
        query, docs, notes = parse_inputs(query, docs_text)
        s = settings_from(*settings_values)
        if WARMUP.waiting():
            yield (WARMUP.waiting(),) + empty
            WARMUP.wait()
        if s.adapter:
            yield (f"Loading the adapter {adapter_name(s)} (the first use takes a few seconds)…",) + empty
        enc = ENGINE.encoder(encoder_for(s), ticket)
        minilm = ENGINE.encoder(encoder_for(s.with_(model="minilm", adapter=None)), ticket) \
            if s.model != "minilm" else None
        base = ENGINE.encoder(encoder_for(s.with_(adapter=None)), ticket) if s.adapter else None
    except Exception as exc:  # shown in the UI
        yield (f"⚠️ {one_line(exc)}",) + empty
        return
    texts = [query] + docs
    live = {i: "" for i in range(len(texts))}
    updates: queue.Queue = queue.Queue()
    box: dict = {}
    tok = getattr(enc, "tokenizer", None)

    def on_token(row, ids):
        if flag.is_set():
            raise Cancelled("stopped")
        updates.put((row, ids))

    def work():
        try:
            box["comp"] = compare_documents(enc, query, docs, minilm=minilm, settings=s, base_encoder=base,
                                            on_token=on_token if s.rationale and tok is not None else None,
                                            should_stop=flag.is_set)
        except Exception as exc:
            box["error"] = exc

    t = threading.Thread(target=work, daemon=True, name="grace-explore")
    if ENGINE.busy:
        yield ("⏳ The model is serving other visitors; your texts join its next batch.",) + empty
    ticket.touch()
    t.start()
    # While it runs, the handler yields plain values (no gr.update: Gradio builds a component for each
    # update it gets, on its event loop, and a crowd's heartbeats made every status tick wait for it),
    # at most every STREAM_EVERY seconds: the streamed rationales when they changed, else the same view
    # again as a heartbeat (a point where a cancelled or abandoned event stops iterating this generator).
    status, stream, last = "Generating rationales…", "", 0.0
    try:
        while t.is_alive():
            t.join(timeout=0.5)
            ticket.touch()  # the heartbeat: Gradio stops iterating this generator when its client leaves
            if not updates.empty():
                latest = {}
                while not updates.empty():  # each row's newest ids, decoded once
                    row, ids = updates.get()
                    latest[row] = ids
                for row, ids in latest.items():
                    live[row] = tok.decode(ids, skip_special_tokens=True)
                stream = "\n".join(f"[{'query' if i == 0 else f'#{i}'}] {live[i]}" for i in live)
            if time.monotonic() - last >= STREAM_EVERY:
                last = time.monotonic()
                yield (status, [], stream, "", "", "", None, "", "", None, None, None)
    finally:  # closed early (cancelled, or the visitor left): the engine drops its rows at the next step
        if t.is_alive():
            flag.set()
            t.join(timeout=60)
    if "error" in box:
        err = box["error"]
        yield (f"⚠️ {one_line(err)}" if isinstance(err, TimeLimit) or not isinstance(err, Cancelled)
               else "Stopped.",) + empty
        return
    comp = box["comp"]
    try:
        q_spans, d_spans, summary, doc_rat = _contrib_view(comp, 0, mode)
    except ValueError as exc:  # centring a single document
        notes.append(one_line(exc) + " Showing the raw cosine.")
        q_spans, d_spans, summary, doc_rat = _contrib_view(comp, 0)
    notes = notes + seen_notes(comp, getattr(enc, "max_text_tokens", None)) + empty_columns(s, minilm)
    status = "Ranked by GRACE cosine." + (" " + " ".join(notes) if notes else "")
    stream = "\n".join(f"[{'query' if i == 0 else f'#{i}'}] {r.rationale}" for i, r in
                       enumerate([comp.query] + comp.docs))
    choices = _doc_choices(comp)
    second = choices[1] if len(choices) > 1 else choices[0]
    key = COMPARISONS.put(comp)
    yield (status, comp.rows(), stream, q_spans, d_spans, summary, gr.update(choices=choices, value=choices[0]),
           comp.query.rationale, doc_rat, key, gr.update(choices=choices, value=choices[0]),
           gr.update(choices=choices, value=second))


def empty_columns(s, minilm) -> list[str]:
    """Why a column of the table is empty, in the words of the settings that would fill it."""
    notes = []
    if not (s.rationale and s.sample):
        notes.append(f"'± over {SEEDS} seeds' is empty: rationales are greedy (turn on Sample in the model "
                     "settings to see the spread).")
    if not s.adapter:
        notes.append("'GRACE, no adapter' is empty: no adapter is chosen.")
    if minilm is None:
        notes.append("'MiniLM' is empty: MiniLM is the chosen model.")
    return notes


def cancel_compare(page) -> str:
    CANCELS.cancel(page_token(page), "explore")
    return "Stopping after the current token…"


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


def select_doc(choice, comp, mode=ATTRIBUTIONS[0]):
    if comp is None or not choice:
        return "", "", "", ""
    comp = _comp(comp)
    if comp is None:
        return "", "", EXPIRED, gr.update()
    try:
        return _contrib_view(comp, _doc_choices(comp).index(choice), mode)
    except ValueError as exc:
        return "", "", f"⚠️ {one_line(exc)}", gr.update()


def explain_choice(choice_a, choice_b, comp):
    """Why A ranks above (or below) B: the query's tokens split cos(q, A) - cos(q, B) exactly."""
    if comp is None:
        return "Run a comparison first.", "", "", ""
    comp = _comp(comp)
    if comp is None:
        return EXPIRED, "", "", ""
    if choice_a not in _doc_choices(comp) or choice_b not in _doc_choices(comp):
        return "Pick two documents of this comparison.", "", "", ""
    if not choice_a or not choice_b or choice_a == choice_b:
        return "Pick two different documents.", "", "", ""
    a, b = _index(comp, choice_a), _index(comp, choice_b)
    e = explain_pair(comp.query, comp.docs[a], comp.docs[b])
    q = e["query_segments"]
    msg = (f"**cos(q, #{a + 1}) − cos(q, #{b + 1}) = {e['cosine_a']:+.4f} − {e['cosine_b']:+.4f} = "
           f"{e['difference']:+.4f}.** The query's tokens below split this difference exactly (text "
           f"{q['text']:+.4f}, rationale {q['rationale']:+.4f}): red tokens pull #{a + 1} above #{b + 1}, blue ones "
           f"pull #{b + 1} up. Each document's own tokens carry its cosine with the query.")
    con = e["contributions"]

    def html(pairs, result, caption):
        return token_heat_html([t for t, _ in pairs], result.segments, [v for _, v in pairs], caption=caption)

    return (msg, html(con["query"], comp.query, "query: share of the difference"),
            html(con["a"], comp.docs[a], f"#{a + 1}: share of cos(q, #{a + 1})"),
            html(con["b"], comp.docs[b], f"#{b + 1}: share of cos(q, #{b + 1})"))


def ablate(choice, comp, *settings_values):
    """Re-score the chosen document with each piece of its rationale removed (no generation)."""
    if comp is None or not choice:
        return "Run a comparison first.", []
    comp = _comp(comp)
    if comp is None:
        return EXPIRED, []
    try:
        s = settings_from(*settings_values)
        if not s.rationale:
            raise ValueError("Rationales are off in the model settings: there is nothing to ablate.")
        i = _index(comp, choice)
        if not comp.docs[i].rationale.strip():
            raise ValueError(f"Document #{i + 1} has an empty rationale.")
        enc = ENGINE.encoder(encoder_for(s), ticket_for(None, "ablate", own_flag=True))
        r = ablate_rationale(enc, s, comp.query, comp.docs[i])
    except Exception as exc:
        return f"⚠️ {one_line(exc)}", []
    msg = (f"**#{i + 1}: cosine {r['cosine']:+.4f}** with text and rationale · text only {r['text_only']:+.4f} · "
           f"rationale only {r.get('rationale_only', float('nan')):+.4f}. Each row removes one piece of the rationale "
           "and re-embeds the text with what is left (no generation); most harmful removal first.")
    return msg, [[p["removed"], round(p["cosine"], 4), round(p["change"], 4)] for p in r["pieces"]]


def _bounded_rationale(enc, text: str, which: str) -> tuple[str, str | None]:
    """An edited rationale cut at ``MAX_WHATIF_TOKENS`` tokens (refused past ``MAX_WHATIF_CHARS``
    characters): a pasted book would hold the model slot and the memory for minutes."""
    text = text or ""
    if len(text) > MAX_WHATIF_CHARS:
        raise ValueError(f"The {which} rationale has {len(text):,} characters; an edited rationale is at most "
                         f"{MAX_WHATIF_TOKENS} tokens.")
    tok = getattr(enc, "tokenizer", None)
    if tok is None:
        return text, None
    ids = tok(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= MAX_WHATIF_TOKENS:
        return text, None
    return tok.decode(ids[:MAX_WHATIF_TOKENS]), f"The {which} rationale was cut to its first {MAX_WHATIF_TOKENS} tokens."


def what_if(choice, query_rat, doc_rat, comp, *settings_values):
    """Re-score the selected pair from the edited rationales (no generation)."""
    if comp is None or not choice:
        return "Run a comparison first.", "", ""
    comp = _comp(comp)
    if comp is None:
        return EXPIRED, "", ""
    try:
        if not isinstance(query_rat or "", str) or not isinstance(doc_rat or "", str):
            raise ValueError("A rationale is text.")
        s = settings_from(*settings_values)
        enc = ENGINE.encoder(encoder_for(s), ticket_for(None, "what-if", own_flag=True))
        i = _index(comp, choice)
        query_rat, q_note = _bounded_rationale(enc, query_rat, "query")
        doc_rat, d_note = _bounded_rationale(enc, doc_rat, "document")
        w = rescore(enc, comp.query, comp.docs[i], query_rat, doc_rat, s)
    except Exception as exc:
        return f"⚠️ {one_line(exc)}", "", ""
    c = w.contributions
    d = c.totals("b")
    notes = " ".join(n for n in (q_note, d_note) if n)
    msg = (f"**before {w.before:+.4f} → after {w.after:+.4f}** (change {w.after - w.before:+.4f}); with the edited "
           f"rationales the document's rationale tokens contribute {d['rationale']:+.4f}." + (f" {notes}" if notes else ""))
    return msg, token_heat_html(c.a_tokens, c.a_segments, c.a_values), token_heat_html(c.b_tokens, c.b_segments,
                                                                                         c.b_values)


def export_table(comp, page=None) -> tuple[str, object]:
    """The comparison's full rows (documents uncut) as a CSV file among the visitor's exports."""
    if comp is None:
        return "Run a comparison first.", gr.update(visible=False)
    comp = _comp(comp)
    if comp is None:
        return EXPIRED, gr.update(visible=False)
    import csv

    from grace.files.textio import atomic_output, csv_safe

    try:
        out = export_path(visitor_from(page).id, "explore")
        with atomic_output(out, newline="") as f:
            w = csv.writer(f)
            w.writerow(["query"] + HEADERS)
            for row in comp.rows(max_chars=10**9):
                w.writerow([csv_safe(comp.query.text)] + [csv_safe(v) if isinstance(v, str) else v for v in row])
    except Exception as exc:
        return f"⚠️ {one_line(exc)}", gr.update(visible=False)
    return f"Exported {len(comp.docs)} rows.", gr.update(value=str(out), visible=True)


def send_to_annotation(comp, *settings_values):
    """Queue the shown rationales (query and documents) for rating in the Annotate tab. On a public
    app they go to the sender's own queue (the visitor of this page session): a visitor's texts are
    never shown to other annotators."""
    if comp is None:
        return "Run a comparison first."
    comp = _comp(comp)
    if comp is None:
        return EXPIRED
    try:
        from analysis.annotations import default_store, items_from_comparison

        from .common import is_public
        from .identity import session_visitor

        owner = session_visitor().id if is_public() else None
        s = settings_from(*settings_values)
        settings = {"model": s.model, "adapter": adapter_name(s), "prompt": s.prompt,
                    "max_new_tokens": s.max_new_tokens, "sampled": s.sample, "seed": s.seed}
        added = default_store().add_items(items_from_comparison(comp, settings), owner=owner, **item_caps())
    except Exception as exc:
        return f"⚠️ {one_line(exc)}"
    new = sum(1 for _, is_new in added if is_new)
    where = "your own annotation queue (only you see them there)" if owner else "the annotation queue"
    return f"Sent {new} rationale(s) to {where} ({len(added) - new} were already there)."


def _tokens(label: str, elem_id: str) -> gr.HTML:
    return gr.HTML(label=label, elem_id=elem_id)


def build(settings_components, page) -> dict:
    with gr.Tab("Explore"):
        gr.Markdown("Type a query and documents (one per line). Each text gets a rationale; the embedding pools "
                    "the text **and** its rationale. Compare with the direct forward pass (no rationale) and "
                    "the MiniLM encoder, and see which tokens made each similarity.")
        with gr.Row():
            query = gr.Textbox(label="Query", value=EXAMPLES[0][0], elem_id="explore-query", scale=1)
            docs = gr.Textbox(label="Documents (one per line, up to 50)", value=EXAMPLES[0][1], lines=4,
                              elem_id="explore-docs", scale=2)
        gr.Examples(EXAMPLES, [query, docs], label="Examples")
        with gr.Row():
            go = gr.Button("Compare", variant="primary", elem_id="explore-go", scale=3)
            halt = gr.Button("Stop", elem_id="explore-stop", scale=1)
        status = gr.Markdown(elem_id="explore-status")
        table = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, elem_id="explore-table",
                             column_widths=WIDTHS, max_height=520)
        with gr.Row():
            gr.Markdown(TABLE_HELP)
            export = gr.Button("Export the table (CSV)", elem_id="explore-export", scale=0)
        export_file = gr.File(label="Table (CSV)", elem_id="explore-export-file", height=80, visible=False)
        stream = gr.Textbox(label="Rationales (streamed as they are generated; [#n] is the input line)", lines=4,
                            interactive=False, elem_id="explore-rationales")
        with gr.Row():
            pick = gr.Dropdown(label="Document to inspect", choices=[], elem_id="explore-pick", scale=2)
            mode = gr.Radio(ATTRIBUTIONS, value=ATTRIBUTIONS[0], label="Token contributions to", scale=2,
                            elem_id="explore-centre")
        gr.Markdown(ATTRIBUTION_HELP)
        summary = gr.Markdown(elem_id="explore-summary")
        with gr.Row():
            q_hl = _tokens("Query tokens", "explore-qhl")
            d_hl = _tokens("Document tokens", "explore-dhl")
        with gr.Accordion("Why does A rank above B?", open=False, elem_id="explore-pair"):
            with gr.Row():
                pair_a = gr.Dropdown(label="A", choices=[], elem_id="explore-pair-a")
                pair_b = gr.Dropdown(label="B", choices=[], elem_id="explore-pair-b")
                pair_go = gr.Button("Explain A vs B", elem_id="explore-pair-go")
            pair_msg = gr.Markdown(elem_id="explore-pair-msg")
            pair_q = _tokens("Query tokens: share of cos(q, A) − cos(q, B)", "explore-pair-q")
            with gr.Row():
                pair_ha = _tokens("A's tokens", "explore-pair-ha")
                pair_hb = _tokens("B's tokens", "explore-pair-hb")
        with gr.Accordion("Which part of the rationale mattered? (ablation)", open=False, elem_id="explore-ablation"):
            gr.Markdown("For the document chosen above: remove each sentence or keyword of its rationale in turn and "
                        "re-score (the what-if path: no generation). Also the score of the text alone and of the "
                        "rationale alone.")
            ablate_go = gr.Button("Ablate its rationale", elem_id="explore-ablate")
            ablate_msg = gr.Markdown(elem_id="explore-ablate-msg")
            ablate_table = gr.Dataframe(headers=ABLATION_HEADERS, interactive=False, wrap=True,
                                        elem_id="explore-ablate-table")
        with gr.Accordion("What if the rationale said something else?", open=False):
            gr.Markdown("Edit either rationale (or delete a sentence) and re-score: the embedding is recomputed "
                        "from the text and your rationale, with no generation.")
            with gr.Row():
                q_rat = gr.Textbox(label="Query rationale", lines=3, elem_id="whatif-q")
                d_rat = gr.Textbox(label="Document rationale", lines=3, elem_id="whatif-d")
            rescore_btn = gr.Button("Re-score with these rationales", elem_id="whatif-go")
            whatif_msg = gr.Markdown(elem_id="whatif-msg")
            with gr.Row():
                wq = _tokens("Query tokens after the edit", "whatif-qhl")
                wd = _tokens("Document tokens after the edit", "whatif-dhl")
        with gr.Row():
            send = gr.Button("Send these rationales to annotation", elem_id="explore-send")
            sent = gr.Markdown(elem_id="explore-sent")
        comp_state = gr.State(None)
        send.click(send_to_annotation, [comp_state] + settings_components, [sent])
        export.click(export_table, [comp_state, page], [sent, export_file])
        compare = go.click(run_compare, [page, query, docs, mode] + settings_components,
                           [status, table, stream, q_hl, d_hl, summary, pick, q_rat, d_rat, comp_state, pair_a,
                            pair_b], concurrency_limit=MODEL_HANDLERS, concurrency_id="model")
        halt.click(cancel_compare, [page], [sent], cancels=[compare], queue=False)
        for trigger in (pick.change, mode.change):
            trigger(select_doc, [pick, comp_state, mode], [q_hl, d_hl, summary, d_rat])
        pair_go.click(explain_choice, [pair_a, pair_b, comp_state], [pair_msg, pair_q, pair_ha, pair_hb])
        ablate_go.click(ablate, [pick, comp_state] + settings_components, [ablate_msg, ablate_table],
                        concurrency_limit=MODEL_HANDLERS, concurrency_id="model")
        rescore_btn.click(what_if, [pick, q_rat, d_rat, comp_state] + settings_components, [whatif_msg, wq, wd],
                          concurrency_limit=MODEL_HANDLERS, concurrency_id="model")
    return {"comp_state": comp_state, "pick": pick, "q_rat": q_rat, "d_rat": d_rat}
