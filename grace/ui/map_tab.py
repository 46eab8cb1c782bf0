"""Map: a corpus embedded with the current settings, projected (UMAP or PCA), searchable, coloured
by any column, and clickable: a click shows the item, its nearest neighbours, and where the same
item lies in the other map. Computation lives in analysis/corpus_map.py."""

from __future__ import annotations

import csv

import gradio as gr
import numpy as np

from analysis.clusters import HEADERS as CLUSTER_HEADERS
from analysis.clusters import MIN_TEXTS, cluster_map
from analysis.atlas_export import write_atlas
from analysis.corpus_map import Cancelled, Embedded, Panel, align, embed_corpus, neighbours, search
from analysis.plots import corpus_map
from grace.files.encoded import read_encoded
from grace.files.textio import read_corpus, read_texts
from grace.training.data import SAMPLE_PASSAGES

from grace.files.textio import atomic_output, csv_safe

from .common import (CANCELS, ENGINE, WARMUP, SessionStore, adapter_name, encoder_for, is_public, one_line,
                     settings_from, upload_path)
from .identity import may_export, page_token, visitor_from
from .requests import MODEL_HANDLERS, streamed, ticket_for
from .storage import StorageFull, export_path
from .text import md_escape

MAX_MAP_TEXTS = 2000
SOURCES = ["sample: WordNet definitions (labelled)", "sample: 100 passages", "uploaded file",
           "uploaded grace encode output (drawn without the model)"]
MAX_ENCODED = 100_000  # rows of a grace encode file on one's own machine
PUBLIC_MAX_ENCODED = 20_000  # on a public Space (memory: each map keeps its embeddings)
BIG = 20_000  # more texts: PCA first (UMAP on request, minutes, cached)
MODES = ["with rationale", "direct forward vs with rationale", "base vs adapter"]
PROJECTIONS = ["UMAP", "PCA"]
NEIGHBOUR_HEADERS = ["map", "rank", "#", "text", "cosine"]
SHIFT = "rationale shift (1 − cos with / without it)"  # a colour choice: how far each rationale moved its text
CLUSTERS = "clusters (each map's own, named by its rationales)"  # a colour choice beside the corpus's columns
K = 5
# A map's embeddings and projections stay on the server under a key (the page's State holds the key)
MAPS = SessionStore(capacity=8 if is_public() else 32, ttl=3600)
RUNNING: set[str | None] = set()  # page tokens whose map is being made
EXPIRED = "This map is no longer kept on the server (it keeps the most recent ones): press Map it again."

# Plotly's click event, handed to the server: the clicked point's item number goes into a hidden
# textbox (with a nonce, so clicking the same point twice still fires), whose input event runs
# ``on_click``. Attached to every map figure as it is (re)drawn.
CLICK_JS = """
<script>
(() => {
  const attach = () => {
    document.querySelectorAll("#map-left .js-plotly-plot, #map-right .js-plotly-plot").forEach((plot) => {
      if (plot.dataset.graceClick === "1" || !plot.on) return;
      plot.dataset.graceClick = "1";
      plot.on("plotly_click", (ev) => {
        const p = ev && ev.points && ev.points[0];
        if (!p || p.customdata === undefined || p.customdata === null) return;
        const box = document.querySelector("#map-click textarea, #map-click input");
        if (!box) return;
        box.value = p.customdata + ":" + Date.now();
        box.dispatchEvent(new Event("input", {bubbles: true}));
      });
    });
  };
  setInterval(attach, 500);
})();
</script>
"""
CSS = ".grace-hidden {display: none !important;}"


def load_corpus(source: str, upload) -> tuple[list[str], dict[str, list[str]]]:
    """Texts and their columns (for colouring) from a sample or an uploaded file."""
    if source == SOURCES[0]:
        from grace.evaluation.offline_tasks import CLASSES, build_task_data

        d = build_task_data("quick")["classification"]
        rows = d["train"] + d["test"]
        return [t for t, _ in rows], {"label": [CLASSES[y] for _, y in rows]}
    if source == SOURCES[1]:
        return read_texts(SAMPLE_PASSAGES), {}
    if upload is None:
        raise ValueError("Upload a .txt, .jsonl or .csv file first.")
    return read_corpus(upload_path(upload), max_texts=MAX_MAP_TEXTS)


def _panels_for(mode: str, s, ticket):
    """(title, encoder, settings) of each panel; the encoders run in the engine under ``ticket``."""
    if mode == MODES[2]:
        if not s.adapter:
            raise ValueError("Choose an adapter in the model settings to compare base vs adapter.")
        return [("base", ENGINE.encoder(encoder_for(s.with_(adapter=None)), ticket), s.with_(adapter=None)),
                (f"adapter {adapter_name(s)}", ENGINE.encoder(encoder_for(s), ticket), s)]
    enc = ENGINE.encoder(encoder_for(s), ticket)
    panels = []
    if mode == MODES[1]:
        panels.append(("direct forward", enc, s.direct()))
    panels.append(("with rationale" if s.rationale else "direct forward", enc, s))
    return panels


def _nothing() -> tuple:
    """make_map's outputs after its message when no map was made (each call its own updates)."""
    return None, gr.update(visible=False), None, None, gr.update(), "", [], [], gr.update()


def _map(ref):
    """The map a page's State refers to (its key; a map's dict itself passes through)."""
    return MAPS.get(ref) if isinstance(ref, str) else ref


def render(state: dict | None, projection: str, colour: str | None, query: str):
    """Both maps from the cached embeddings (no model call), with the search hits and the
    selected item (and how far it moved between the two maps) drawn in."""
    state = _map(state)
    if not state:
        return None, gr.update(visible=False), ""
    method = (projection or "UMAP").lower()
    panels: list[Panel] = state["panels"]
    texts = state["texts"]
    labels = state["columns"].get(colour) if colour else None
    hits, ring = search(texts, query), "search"
    picked = state.get("cluster")  # (map, cluster) picked in the clusters table: its points ringed
    if picked is not None and not (query or "").strip():
        hits, ring = state["clusters"][picked[0]].members(picked[1]), f"cluster {picked[1] + 1}"
    sel = state.get("selected")
    coords = [p.coords(method) for p in panels]
    shifts = [p.data.shift for p in panels]
    any_shift = next((x for x in shifts if x is not None), None)  # a direct-forward map shows the rationale map's
    top = state.get("top", 100)
    figs = []
    for i, p in enumerate(panels):
        shift = shifts[i] if shifts[i] is not None else any_shift
        shown = None
        if shift is not None and top < 100:  # the filter: the texts whose rationale moved them most
            shown = np.argsort(-shift, kind="stable")[:max(1, round(len(texts) * top / 100))].tolist()
        moved = None
        if sel is not None and len(panels) == 2:
            moved = align(coords[i], coords[1 - i])[sel]
        names = None
        if colour == CLUSTERS and state.get("clusters"):
            c = state["clusters"][i]
            labels = c.point_labels()
            names = [(x, y, c.label_of(k)) for k, (x, y) in enumerate(c.centres(coords[i]))]
        values = shift if colour == SHIFT and shift is not None else None
        figs.append(corpus_map(coords[i], texts, labels, p.data.rationales,
                               title=f"{p.title} ({p.projections[method].method.upper()})",
                               colour_name={CLUSTERS: "cluster", SHIFT: "rationale shift"}.get(colour, colour or ""),
                               selected=sel, matches=hits, matches_name=ring, moved_from=moved, names=names,
                               values=values, shown=shown))
    found = f"Search: {len(hits)} of {len(texts)} texts contain {query.strip()!r}." if (query or "").strip() else ""
    right = gr.update(value=figs[1], visible=True) if len(figs) > 1 else gr.update(value=None, visible=False)
    return figs[0], right, found


def make_map(page, source, upload, mode, projection, query, *settings_values, progress=gr.Progress()):
    """Embed (in the engine: batched with other visitors' rows, cancellable at every decode step,
    under the Map's wall-clock limit), project, write the CSV export, draw."""
    nothing = _nothing()
    try:
        owner = visitor_from(page).id
        s = settings_from(*settings_values)
        if projection not in PROJECTIONS or mode not in MODES or source not in SOURCES:
            raise ValueError("Choose a corpus, a comparison and a projection from the lists.")
        if source == SOURCES[3]:
            return _map_encoded(upload, projection, query, owner, progress)
        texts, columns = load_corpus(source, upload)
        if len(texts) > MAX_MAP_TEXTS:
            texts, columns = texts[:MAX_MAP_TEXTS], {k: v[:MAX_MAP_TEXTS] for k, v in columns.items()}
        if WARMUP.waiting():
            progress(None, desc=WARMUP.waiting())
            WARMUP.wait()
        ticket = ticket_for(page, "map")
        specs = _panels_for(mode, s, ticket)
    except Exception as exc:
        return (f"⚠️ {one_line(exc)}",) + nothing
    total, panels, done = len(specs) * len(texts), [], [0]

    def step(k: int, before: int, title: str) -> None:
        done[0] = before + k
        progress(done[0] / total, desc=f"{title}: {done[0]}/{total} texts")

    RUNNING.add(page_token(page))
    try:
        if ENGINE.waiting_shares():
            progress(None, desc="The model is serving other visitors; your texts join its batches in turn.")
        for n, (title, enc, kw) in enumerate(specs):
            data = embed_corpus(enc, kw, texts, should_stop=ticket.should_stop,
                                on_batch=lambda k, b=n * len(texts), t=title: step(k, b, t))
            panels.append(Panel(title, data))
        method = (projection or "UMAP").lower()
        for p in panels:
            progress(None, desc=f"Projecting {p.title} ({projection})…")
            p.coords(method)
        clusters = _clusters(panels, texts, progress)
        out, note = None, "Sign in to download the map's CSV."  # a guest maps, without the download
        if may_export(owner):
            try:
                out, note = _export(panels, columns, owner), ""
            except StorageFull as exc:  # the map is still worth showing
                note = one_line(exc)
    except Cancelled as exc:
        clock = ticket.time_limit(exc)
        if clock is not None:
            return (f"⚠️ {one_line(clock)} {done[0]} of {total} texts were embedded; nothing was written.",) + nothing
        return (f"Cancelled after {done[0]} of {total} texts; nothing was written.",) + nothing
    except Exception as exc:
        return (f"⚠️ {one_line(exc)}",) + nothing
    finally:
        RUNNING.discard(page_token(page))
    return _shown(panels, texts, columns, clusters, projection, query, None if out is None else str(out), note)


def _clusters(panels: list[Panel], texts: list[str], progress) -> list | None:
    """Each panel's named clusters; None (the map is drawn without them) for too few texts or
    embeddings that do not split (every text the same)."""
    if len(texts) < MIN_TEXTS:
        return None
    progress(None, desc="Clustering and naming the clusters by their rationales…")
    try:
        return [cluster_map(p.data.embeddings, p.data.rationales, texts) for p in panels]
    except ValueError:
        return None


def _shown(panels: list[Panel], texts: list[str], columns: dict, clusters, projection: str, query: str,
           download: str | None, note: str = "") -> tuple:
    """A made map's outputs: the message, both maps, the download, the State's key, the colour
    choices, the cleared click views and the clusters table."""
    state = {"panels": panels, "texts": texts, "columns": columns, "selected": None, "clusters": clusters,
             "cluster": None}
    colour = "label" if "label" in columns else next(iter(columns), CLUSTERS if clusters else None)
    left, right, found = render(state, projection, colour, query)
    method = projection.lower()
    notes = sorted({p.projections[method].note for p in panels if p.projections[method].note})
    msg = " ".join([f"{len(texts)} texts mapped. Click a point for its neighbours, a cluster in the table for its "
                    "points."] + ([note] if note else []) + notes + ([found] if found else []))
    choices = list(columns) + ([SHIFT] if any(p.data.shift is not None for p in panels) else []) + (
        [CLUSTERS] if clusters else [])
    return (msg, left, right, download, MAPS.put(state), gr.update(choices=choices, value=colour), "", [],
            cluster_rows(state), projection)  # the projection drawn (a big file is drawn with PCA first)


def _map_encoded(upload, projection: str, query: str, owner: str, progress) -> tuple:
    """A map of a ``grace encode`` output: its embeddings, rationales and shifts as they are (no
    model call); past BIG texts PCA first (UMAP when picked: minutes, then cached). The download is
    the Embedding Atlas export (the file itself already holds every embedding)."""
    nothing = _nothing()
    limit = PUBLIC_MAX_ENCODED if is_public() else MAX_ENCODED
    try:
        if upload is None:
            raise ValueError("Upload the .jsonl file grace encode wrote first.")
        progress(None, desc="Reading the encode file…")
        f = read_encoded(upload_path(upload), max_rows=limit)
    except Exception as exc:
        return (f"⚠️ {one_line(exc)}",) + nothing
    note = ""
    if projection == "UMAP" and len(f.texts) > BIG:
        projection, note = "PCA", (f"PCA first: UMAP on {len(f.texts):,} texts takes minutes on a CPU; pick UMAP "
                                   "to compute it (kept for the next time).")
    panel = Panel("from the encode file", Embedded(f.texts, f.rationales, f.embeddings, f.shift))
    try:
        progress(None, desc=f"Projecting {len(f.texts):,} texts ({projection})…")
        panel.coords(projection.lower())
        clusters = _clusters([panel], f.texts, progress)
        return _shown([panel], f.texts, {}, clusters, projection, query, None, note)
    except Exception as exc:
        return (f"⚠️ {one_line(exc)}",) + nothing


def export_atlas(state, projection, page, progress=gr.Progress()):
    """"Open in Embedding Atlas": the map (its rationale map, of two) as the Parquet table the
    ``embedding-atlas`` command reads, with exact neighbours (a minute for 100,000 texts), the
    rationale shift and the cluster of each text; and the command to run."""
    state = _map(state)
    if not state:
        return EXPIRED, None
    try:
        owner = visitor_from(page).id
        if projection not in PROJECTIONS:
            raise ValueError("Choose a projection from the list.")
        i = len(state["panels"]) - 1  # the rationale map of a comparison
        p, method = state["panels"][i], projection.lower()
        columns = {}
        if p.data.shift is not None:
            columns["rationale_shift"] = p.data.shift
        if state.get("clusters"):
            columns["cluster"] = state["clusters"][i].point_labels()
        progress(None, desc=f"Nearest neighbours of {len(p.data.texts):,} texts for Embedding Atlas…")
        path, _, command = write_atlas(export_path(owner, "atlas", ".parquet"), texts=p.data.texts,
                                       rationales=p.data.rationales, coords=p.coords(method),
                                       embeddings=p.data.embeddings, columns=columns)
    except Exception as exc:
        return f"⚠️ {one_line(exc)}", None
    return (f"Exported {len(p.data.texts):,} texts ({md_escape(p.title)}, {projection}). Open it in Embedding Atlas "
            f"(it draws millions of points): `pip install embedding-atlas`, then `{command}`"
            + (" (colour by `cluster` or `rationale_shift` there)." if columns else ".")), str(path)


def filter_shift(top, state, projection, colour, query):
    """The shift filter: keep the ``top`` per cent of texts whose rationale moved them most (the
    others stay grey); 100 shows all."""
    state = _map(state)
    if not state:
        return gr.update(), gr.update(), ""
    try:
        top = float(top)
        if not 1 <= top <= 100:
            raise ValueError
    except (TypeError, ValueError):
        return gr.update(), gr.update(), "⚠️ The filter takes a share from 1 to 100 %."
    if not any(p.data.shift is not None for p in state["panels"]):
        return gr.update(), gr.update(), "This map has no rationales: there is no shift to filter by."
    state["top"] = top
    left, right, _ = render(state, projection, colour, query)
    kept = max(1, round(len(state["texts"]) * top / 100))
    return left, right, ("" if top >= 100 else f"Showing the {kept} texts whose rationale moved them most "
                                                  f"(top {top:g} %); the others are grey.")


def cluster_rows(state: dict) -> list[list]:
    """The clusters table: each map's clusters (``analysis.clusters``), largest first."""
    rows = []
    for p, c in zip(state["panels"], state.get("clusters") or []):
        rows += [[p.title] + r for r in c.table(state["texts"], p.data.embeddings)]
    return rows


def select_cluster(evt: gr.SelectData, state, projection, colour, query):
    """A row of the clusters table: its points ringed in every map (where one map's cluster lands
    in the other), and what the cluster holds."""
    state = _map(state)
    if not state:
        return gr.update(), gr.update(), EXPIRED
    try:
        r = int(evt.index[0])
        row = cluster_rows(state)[r]
        sizes = [c.k for c in state["clusters"]]  # the table lists the panels' clusters in turn
        panel = next(i for i in range(len(sizes)) if r < sum(sizes[:i + 1]))
        c = int(row[1]) - 1
        clusters = state["clusters"][panel]
        if not 0 <= c < clusters.k:
            raise ValueError
    except (AttributeError, IndexError, TypeError, ValueError, StopIteration):
        return gr.update(), gr.update(), "Pick a row of the clusters table."
    state["cluster"] = (panel, c)
    left, right, _ = render(state, projection, colour, "")
    read = "rationales" if clusters.source == "rationales" else "texts (this map has no rationales)"
    return left, right, (f"**Cluster {c + 1}** of the {md_escape(row[0])} map: {len(clusters.members(c))} texts, "
                         f"named by the words its {read} use more than the other clusters': "
                         f"**{md_escape(clusters.names[c])}**. Its points are ringed in every map (silhouette "
                         f"{clusters.silhouette:.2f} at k = {clusters.k}).")


def busy_note(page) -> str:
    """A second click on Map it while this page's map is being made says so (the button itself
    ignores that click)."""
    if page_token(page) in RUNNING:
        return "A map is already being made on this page: wait for it, or press Cancel."
    return ""


def _export(panels: list[Panel], columns: dict, owner: str = "local") -> str:
    """Every panel's texts, columns, rationales, coordinates and embeddings, as CSV among the
    visitor's exports (text cells formula-safe, written whole or not at all)."""
    out = export_path(owner, "map")
    method = next(iter(panels[0].projections))
    with atomic_output(out, newline="") as f:
        w = csv.writer(f)
        dim = panels[0].data.embeddings.shape[1]
        w.writerow(["panel", "text"] + list(columns) + ["rationale", "x", "y"] + [f"e{i}" for i in range(dim)])
        for p in panels:
            xy = p.coords(method)
            for i, t in enumerate(p.data.texts):
                w.writerow([csv_safe(p.title), csv_safe(t)] + [csv_safe(columns[c][i]) for c in columns]
                           + [csv_safe(p.data.rationales[i]), float(xy[i][0]), float(xy[i][1])]
                           + [float(x) for x in p.data.embeddings[i]])
    return str(out)


def cancel_map(page) -> str:
    CANCELS.cancel(page_token(page), "map")
    return "Cancelling: the map stops after the current batch and writes nothing."


def on_click(value: str, state, projection, colour, query):
    """A clicked point: its text and rationale(s), its nearest neighbours in each map, and the
    maps redrawn with it marked in both."""
    state = _map(state)
    if not state or not value:
        return gr.update(), gr.update(), "" if not value or state else EXPIRED, []
    try:
        index = int(str(value).split(":")[0])
        if not 0 <= index < len(state["texts"]):
            raise ValueError
    except ValueError:
        return gr.update(), gr.update(), "", []
    state["selected"] = index
    left, right, _ = render(state, projection, colour, query)
    return left, right, describe(state, index), neighbour_rows(state, index)


def describe(state: dict, index: int) -> str:
    panels: list[Panel] = state["panels"]
    lines = [f"**#{index + 1}** {md_escape(state['texts'][index])}"]
    for c, values in state["columns"].items():
        lines.append(f"- {md_escape(c)}: {md_escape(values[index])}")
    for p in panels:
        if p.data.rationales[index]:
            lines.append(f"- rationale ({md_escape(p.title)}): {md_escape(p.data.rationales[index])}")
        if p.data.shift is not None:
            lines.append(f"- its rationale moved it ({md_escape(p.title)}): {p.data.shift[index]:.4f} "
                         "(1 − cos between its embedding with and without the rationale)")
    if len(panels) == 2:
        a, b = panels
        shared = len({j for j, _ in neighbours(a.data.embeddings, index, K)} &
                     {j for j, _ in neighbours(b.data.embeddings, index, K)})
        lines.append(f"- between the maps: {shared} of its {K} nearest neighbours are the same "
                     "(the dashed line joins its place in the other map, aligned onto this one).")
    return "\n".join(lines)


def neighbour_rows(state: dict, index: int) -> list[list]:
    rows = []
    for p in state["panels"]:
        for rank, (j, cos) in enumerate(neighbours(p.data.embeddings, index, K), 1):
            rows.append([p.title, rank, j + 1, state["texts"][j][:200], round(cos, 4)])
    return rows


def build(settings_components, page) -> None:
    with gr.Tab("Map"):
        gr.Markdown(f"Embed a corpus (up to {MAX_MAP_TEXTS:,} texts) with the current settings and look at it in "
                    "2-d. **Click a point** for its text, rationale and nearest neighbours (by cosine in the full "
                    "embedding, not on the picture); in a two-map comparison the same item is starred in both, "
                    "with a dashed line from where it lies in the other map. **Colour by** a column of the file, "
                    "by the *rationale shift* (how far each text's rationale moved its embedding: 1 − cos with and "
                    "without it) or by *clusters* named by the words their rationales use more than the rest; "
                    "the slider keeps only the texts their rationale moved most. Switching projection, colour, "
                    "filter or search reuses the embeddings (no model call).")
        with gr.Row():
            source = gr.Radio(SOURCES, value=SOURCES[0], label="Corpus")
            upload = gr.File(label=".txt / .jsonl / .csv (a 'text' column; other columns can colour the map)",
                             file_types=[".txt", ".jsonl", ".csv"], elem_id="map-upload")
            mode = gr.Radio(MODES, value=MODES[0], label="Compare")
        with gr.Row():
            projection = gr.Radio(PROJECTIONS, value=PROJECTIONS[0], label="Projection", elem_id="map-projection")
            colour = gr.Dropdown(choices=[], value=None, label="Colour by", elem_id="map-colour")
            query = gr.Textbox(label="Search the texts", placeholder="a word or phrase", elem_id="map-search")
            shift_filter = gr.Slider(1, 100, value=100, step=1, elem_id="map-shift-filter",
                                     label="Only the texts their rationale moved most (top %; 100: all)")
        with gr.Row():
            go = gr.Button("Map it", variant="primary", elem_id="map-go")
            stop = gr.Button("Cancel", elem_id="map-cancel")
        note = gr.Markdown(elem_id="map-note")
        busy = gr.Markdown(elem_id="map-busy")
        with gr.Row():
            left = gr.Plot(label="map", elem_id="map-left")
            right = gr.Plot(label="second map", elem_id="map-right", visible=False)
        clicked = gr.Textbox(elem_id="map-click", elem_classes=["grace-hidden"], container=False)
        detail = gr.Markdown(elem_id="map-detail")
        near = gr.Dataframe(headers=NEIGHBOUR_HEADERS, interactive=False, wrap=True, elem_id="map-neighbours",
                            label=f"{K} nearest neighbours (cosine) in each map",
                            column_widths=["16%", "7%", "7%", "58%", "12%"])
        cluster_note = gr.Markdown(elem_id="map-cluster-note")
        cluster_table = gr.Dataframe(headers=["map"] + CLUSTER_HEADERS, interactive=False, wrap=True,
                                     elem_id="map-clusters", column_widths=["14%", "8%", "6%", "24%", "48%"],
                                     label="Clusters (k-means, k by silhouette), named by class-based TF-IDF over "
                                           "their rationales; click one to ring its points")
        download = gr.File(label="Embeddings and coordinates (CSV)", elem_id="map-download")
        with gr.Row():
            atlas = gr.Button("Open in Embedding Atlas: export a Parquet file", elem_id="map-atlas", scale=0)
            atlas_note = gr.Markdown(elem_id="map-atlas-note")
        atlas_file = gr.File(label="For Embedding Atlas (Parquet)", elem_id="map-atlas-file")
        state = gr.State(None)
        # an upload picks "uploaded file", unless the visitor chose the encode-output source first
        upload.upload(lambda f, chosen: chosen if chosen == SOURCES[3] else SOURCES[2], [upload, source], [source])
        go.click(busy_note, [page], [busy], queue=False, trigger_mode="multiple", show_progress="hidden")
        go.click(lambda: 100, None, [shift_filter], queue=False, show_progress="hidden")  # a new map shows all
        go.click(streamed(make_map, 10), [page, source, upload, mode, projection, query] + settings_components,
                 [note, left, right, download, state, colour, detail, near, cluster_table, projection],
                 concurrency_limit=MODEL_HANDLERS, concurrency_id="model", show_progress_on=[note])
        stop.click(cancel_map, [page], [note], show_progress="hidden", queue=False)
        for control in (projection, colour):
            control.change(lambda st, pr, co, q: render(st, pr, co, q)[:2], [state, projection, colour, query],
                           [left, right], show_progress_on=[note])
        query.submit(render, [state, projection, colour, query], [left, right, note])
        shift_filter.change(filter_shift, [shift_filter, state, projection, colour, query], [left, right, cluster_note],
                            trigger_mode="always_last", show_progress="hidden")
        atlas.click(export_atlas, [state, projection, page], [atlas_note, atlas_file], concurrency_limit=1,
                    concurrency_id="atlas", show_progress_on=[atlas_note])
        cluster_table.select(select_cluster, [state, projection, colour, query], [left, right, cluster_note])
        clicked.change(on_click, [clicked, state, projection, colour, query], [left, right, detail, near])
