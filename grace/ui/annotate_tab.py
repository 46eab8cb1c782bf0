"""Annotate: rate rationales (faithfulness, informativeness, fluency, hallucination) with the
keyboard, and see the summary: distributions, agreement, ratings vs training step."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from analysis.agreement import pair_kappa, summarise
from analysis.annotation_io import MAX_IMPORT_ROWS, import_file
from analysis.annotations import AnnotationError, AnnotationStore, check_name, default_store
from analysis.plots import rating_distribution, ratings_by_step

from .common import is_public, one_line, upload_path
from .storage import item_caps
from .identity import IdentityError, visitor_from
from .text import md_escape

# 1-5 set the next dimension, h toggles hallucination, Enter saves and moves on (not while typing)
KEYBOARD_JS = """
<script>
(() => {
  const dims = ["ann-faithfulness", "ann-informativeness", "ann-fluency"];
  let next = 0;
  // the dimension the next digit fills is outlined and named in #ann-next
  const mark = () => {
    dims.forEach((d, k) => {
      const el = document.querySelector("#" + d);
      if (el) el.style.outline = k === next ? "3px solid #f97316" : "";
    });
    const hint = document.querySelector("#ann-next");
    if (hint) hint.textContent = "Next key 1-5 fills: " + dims[next].replace("ann-", "");
  };
  setInterval(mark, 700);
  document.addEventListener("keydown", (e) => {
    const tab = document.querySelector("#ann-panel");
    if (!tab || tab.offsetParent === null) return;
    const t = e.target;
    if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type !== "radio" && t.type !== "checkbox"))) return;
    if (e.key >= "1" && e.key <= "5") {
      const box = document.querySelector("#" + dims[next] + " input[value='" + e.key + "']");
      if (box) { box.click(); next = (next + 1) % dims.length; mark(); e.preventDefault(); }
    } else if (e.key === "h") {
      const h = document.querySelector("#ann-halluc input"); if (h) { h.click(); e.preventDefault(); }
    } else if (e.key === "Enter") {
      const b = document.querySelector("#ann-save"); if (b) { b.click(); next = 0; mark(); e.preventDefault(); }
    }
  });
})();
</script>
"""


def _store() -> AnnotationStore:
    return default_store()


def _warn(exc: BaseException) -> str:
    return f"⚠️ {one_line(exc)}"


def _annotator(name, who) -> str:
    """The key of who rates: in public mode the full id of the visitor of ``who`` (the page State
    or its ``who`` dict; a typed name is ignored, and so is the short display name, which could be
    matched by brute force), locally the typed name."""
    if is_public():
        return check_name(visitor_from(who).id)
    return check_name(name)


def _display(who) -> str | None:
    """The name the page shows for the annotator (public mode; locally the key is the name)."""
    return visitor_from(who).name if is_public() else None


def _item_id(value) -> int | None:
    """The current item's id as the page holds it (None: no item)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63:
        raise AnnotationError("The page sent an item id that is not one: reload the page.")
    return value


def _flag(value, what: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise AnnotationError(f"{what} is true or false.")
    return value


def _radio(value) -> int | None:
    """A score to show again as entered (only one the radio holds)."""
    return value if value in (1, 2, 3, 4, 5) and not isinstance(value, bool) else None


def _show(item, name, note=""):
    """Values for the item panel (and its existing rating by this annotator, for editing)."""
    if item is None:
        done = "Nothing left to rate." if name else ""
        return (None, "", "", "", None, None, None, False, "", md_escape(f"{note} {done}".strip()), _progress(name))
    r = _store().rating(item.id, name) if name else None
    meta = (f"source: {item.source}" + (f" · run {item.run}, step {item.step}" if item.run else "")
            + (f" · similarity {item.similarity:+.3f}" if item.similarity is not None else "")
            + (f" · its rationale moved it {item.rationale_shift:.4f} (1 − cos)" if item.rationale_shift is not None
               else ""))
    return (item.id, item.text, item.rationale, (item.paired_text or "") + ("\n\n" if item.paired_text else "") + meta,
            r["faithfulness"] if r else None, r["informativeness"] if r else None, r["fluency"] if r else None,
            bool(r["hallucination"]) if r else False, r["comment"] if r else "", md_escape(note), _progress(name))


def _progress(name) -> str:
    if not name:
        return ""
    try:
        store = _store()
        rated, total = store.progress(name)
        shown = store.display_names().get(name, name) if is_public() else name
    except Exception:  # the note says what went wrong
        return ""
    return f"**{md_escape(shown)}**: {rated} of {total} rated"


def identity_name(who) -> dict:
    """The name box in public mode: the visitor, as the store records them."""
    if not is_public():
        return gr.update()
    try:
        return gr.update(value=visitor_from(who).name)
    except IdentityError:
        return gr.update(value="")


def start(name, random_order, who=None):
    """Remember the annotator for this browser session and show their next unrated item."""
    try:
        name = _annotator(name, who)
        if is_public():  # the display name the progress line shows (and the Summary lists)
            _store().annotator_id(name, _display(who))
        item = _store().next_item(name, random_order=_flag(random_order, "Random order"))
        return _show(item, name) + (name,)
    except Exception as exc:
        return _show(None, None, _warn(exc)) + (None,)


def save(item_id, name, f, i, fl, halluc, comment, random_order, who=None):
    if not is_public() and not name:
        return _show(None, None, "⚠️ Type your name and press Start first.")
    try:
        name, item_id = _annotator(name, who), _item_id(item_id)
        random_order = _flag(random_order, "Random order")
    except Exception as exc:
        return _show(None, None, _warn(exc))
    if item_id is None:
        return _show(None, name, "Nothing to save.")
    try:
        store = _store()
        store.rate(item_id, name, faithfulness=f, informativeness=i, fluency=fl,
                   hallucination=_flag(halluc, "Hallucination"), comment=comment, display=_display(who))
        nxt = store.next_item(name, random_order=random_order)
    except Exception as exc:
        try:  # the item again, with what was entered: nothing typed is lost
            current = _show(_store().item(item_id, name), name)
        except Exception:
            return _show(None, name, _warn(exc))
        return current[:4] + (_radio(f), _radio(i), _radio(fl), halluc is True,
                              comment if isinstance(comment, str) else "", md_escape(_warn(exc)), current[-1])
    return _show(nxt, name, f"Saved item {item_id}.")


def skip(item_id, name, random_order, who=None):
    if not is_public() and not name:
        return _show(None, None, "⚠️ Type your name and press Start first.")
    try:
        name, item_id = _annotator(name, who), _item_id(item_id)
        nxt = _store().next_item(name, random_order=_flag(random_order, "Random order"), after=item_id)
        return _show(nxt, name, "Skipped." if nxt and nxt.id != item_id else "No other unrated item.")
    except Exception as exc:
        return _show(None, None, _warn(exc))


def back(item_id, name, who=None):
    """The item this annotator rated last before the current one, loaded for editing."""
    if not is_public() and not name:
        return _show(None, None, "⚠️ Type your name and press Start first.")
    try:
        name, item_id = _annotator(name, who), _item_id(item_id)
        rated = _store().rated_by(name)
        if item_id in rated:
            rated = rated[:rated.index(item_id)]
        if not rated:
            return _show(_store().item(item_id, name) if item_id else None, name, "No earlier rating to edit.")
        return _show(_store().item(rated[-1], name), name, "Editing your earlier rating.")
    except Exception as exc:
        return _show(None, None, _warn(exc))


def import_items(upload, name, who=None):
    """Import a file of items (and ratings: in public mode only the visitor's own, under their
    full id; the items go to their own queue)."""
    try:
        name = _annotator(name, who) if is_public() or name else None
        shown = _display(who)
    except Exception as exc:
        return md_escape(_warn(exc)), ""
    if not isinstance(upload, str) and not isinstance(getattr(upload, "name", None), str):
        return md_escape("Choose a .jsonl or .csv file first."), _progress(name)
    path = None
    try:
        path = upload_path(upload)
        public = is_public()
        res = import_file(_store(), path, skip_bad=False, max_rows=MAX_IMPORT_ROWS,
                          annotator=name if public else None, aliases=(shown,) if public else (),
                          owner=name if public else None, **item_caps())
    except Exception as exc:
        # name the file as the visitor knows it (not the server's temp path); no CLI advice here
        msg = one_line(exc)
        if path:
            msg = msg.replace(path, Path(path).name)
        msg = msg.replace(" Use --skip-bad to import the good lines.", " Fix those lines and import again.")
        return md_escape(f"⚠️ {msg}"), _progress(name)
    mine = " into your own queue (only you see them there)" if is_public() else ""
    return (md_escape(f"Imported {res['items_added']} new item(s){mine} and {res['ratings']} rating(s)."),
            _progress(name))


def summary_view(a, b):
    try:
        if not all(x is None or isinstance(x, str) for x in (a, b)):
            raise AnnotationError("Choose annotators from the lists.")
        ratings = _store().ratings()
        names = _store().display_names()  # the Summary shows display names; the lists' values are the keys
    except Exception as exc:
        return md_escape(_warn(exc)), None, None, gr.update(), gr.update()
    s = summarise(ratings)
    lines = [f"{s['n_ratings']} ratings of {s['n_items']} items by {len(s['annotators'])} annotator(s)."]
    for dim, d in s["dimensions"].items():
        alpha = "–" if d["alpha"] is None else f"{d['alpha']:.2f}"
        rho_s = "–" if d["spearman_similarity"] is None else f"{d['spearman_similarity']:+.2f}"
        rho_r = "–" if d["spearman_reward"] is None else f"{d['spearman_reward']:+.2f}"
        rho_m = "–" if d["spearman_shift"] is None else f"{d['spearman_shift']:+.2f}"
        lines.append(f"- **{dim}**: mean {d['mean']:.2f} (n = {d['n']}), Krippendorff's α (ordinal) {alpha}, "
                     f"Spearman vs similarity {rho_s} (n = {d['n_similarity']} items), "
                     f"vs reward {rho_r} (n = {d['n_reward']} items), "
                     f"vs the rationale's measured shift {rho_m} (n = {d['n_shift']} items)")
    if ratings:
        lines.append(f"- hallucination flagged in {100 * s['hallucination_rate']:.0f} % of ratings")
    if a and b and a != b:
        ks = [pair_kappa(ratings, a, b, dim) for dim in s["dimensions"]]
        lines.append(f"- weighted κ (quadratic) {md_escape(names.get(a, a))} vs {md_escape(names.get(b, b))}: " + ", ".join(
            f"{dim} {'–' if k is None else f'{k:.2f}'}" for dim, k in zip(s["dimensions"], ks)))
    choices = [(names.get(k, k), k) for k in s["annotators"]]
    return ("\n".join(lines), rating_distribution(s), ratings_by_step(s),
            gr.update(choices=choices), gr.update(choices=choices))


def build(who: gr.State | None = None) -> None:
    """The tab. ``who`` is the session's visitor: the page State (``page_state``) or a State of
    ``Visitor.to_state()``. In public mode the annotator is that visitor, and the name box only
    shows who they are."""
    public = is_public()
    if who is None:  # an app without identities: fine locally, and refusing everything in public
        who = gr.State(None)
    with gr.Tab("Annotate", elem_id="ann-panel"):
        gr.Markdown("Rate rationales. **Keys**: 1–5 fill faithfulness, informativeness and fluency in turn, "
                    "**h** flags a hallucination, **Enter** saves and shows the next item.")
        with gr.Row():
            name = gr.Textbox(label="You (as ratings record you)" if public else "Your name", max_lines=1,
                              interactive=not public, elem_id="ann-name")
            random_order = gr.Checkbox(label="Random order", value=False)
            go = gr.Button("Start", elem_id="ann-start")
        progress = gr.Markdown(elem_id="ann-progress")
        gr.HTML('<div id="ann-next" style="font-weight: 600"></div>')
        note = gr.Markdown(elem_id="ann-note")
        item_id = gr.State(None)
        annotator = gr.State(None)  # the name Start checked
        with gr.Row():
            text = gr.Textbox(label="Text", lines=6, max_lines=14, interactive=False, elem_id="ann-text")
            rationale = gr.Textbox(label="Rationale", lines=6, max_lines=14, interactive=False, elem_id="ann-rationale")
        context = gr.Textbox(label="Paired text and provenance", lines=2, interactive=False)
        with gr.Row():
            f = gr.Radio([1, 2, 3, 4, 5], label="Faithfulness: says only what the text supports",
                         elem_id="ann-faithfulness")
            i = gr.Radio([1, 2, 3, 4, 5], label="Informativeness: adds what a search would need",
                         elem_id="ann-informativeness")
            fl = gr.Radio([1, 2, 3, 4, 5], label="Fluency", elem_id="ann-fluency")
        with gr.Row():
            halluc = gr.Checkbox(label="Hallucination (states something false or absent)", elem_id="ann-halluc")
            comment = gr.Textbox(label="Comment", max_lines=2, elem_id="ann-comment")
        with gr.Row():
            back_btn = gr.Button("◀ Back (edit)", elem_id="ann-back")
            skip_btn = gr.Button("Skip", elem_id="ann-skip")
            save_btn = gr.Button("Save and next (Enter)", variant="primary", elem_id="ann-save")
        with gr.Accordion("Import items (.jsonl / .csv)", open=False):
            upload = gr.File(file_types=[".jsonl", ".csv"])
            import_btn = gr.Button("Import")
        with gr.Accordion("Summary", open=False):
            with gr.Row():
                ka = gr.Dropdown(label="Annotator A (for κ)", choices=[])
                kb = gr.Dropdown(label="Annotator B", choices=[])
                refresh = gr.Button("Refresh summary", elem_id="ann-refresh")
            summary = gr.Markdown(elem_id="ann-summary")
            with gr.Row():
                dist = gr.Plot()
                steps = gr.Plot()
        panel = [item_id, text, rationale, context, f, i, fl, halluc, comment, note, progress]
        who.change(identity_name, who, name)
        # cheap SQLite work: outside Gradio's queue, so a queue full of model requests never holds a save
        go.click(start, [name, random_order, who], panel + [annotator], queue=False)
        save_btn.click(save, [item_id, annotator, f, i, fl, halluc, comment, random_order, who], panel, queue=False)
        skip_btn.click(skip, [item_id, annotator, random_order, who], panel, queue=False)
        back_btn.click(back, [item_id, annotator, who], panel, queue=False)
        import_btn.click(import_items, [upload, annotator, who], [note, progress])
        refresh.click(summary_view, [ka, kb], [summary, dist, steps, ka, kb])
