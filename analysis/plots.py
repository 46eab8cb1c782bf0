"""Plotly figures the app shows: corpus maps, training curves, evaluation bars."""

from __future__ import annotations

from html import escape
from typing import Sequence

import plotly.graph_objects as go
# imported here, not in the function: two page timers drawing curves at once raced on a lazy import
from plotly.subplots import make_subplots

WEBGL_FROM = 5000  # points: more are drawn with WebGL (Scattergl), which stays smooth at 100,000

REWARD_KEYS = ["reward/positive", "reward/contrastive", "reward/self", "reward/consistency", "reward/hard_negative",
               "reward/length_penalty", "reward/total"]


def _short(s: str, n: int = 90) -> str:
    s = " ".join(s.split())
    return escape(s if len(s) <= n else s[:n - 1] + "…")


def corpus_map(coords, texts: Sequence[str], labels: Sequence[str] | None = None,
               rationales: Sequence[str] | None = None, title: str = "", *, colour_name: str = "label",
               selected: int | None = None, matches: Sequence[int] = (), matches_name: str = "search",
               moved_from=None, names: Sequence[tuple[float, float, str]] | None = None,
               values: Sequence[float] | None = None, shown: Sequence[int] | None = None) -> go.Figure:
    """A scatter coloured by ``labels``; hover shows the text and the start of its rationale.

    Every point carries its item index as ``customdata`` (the app's click handler reads it).
    ``selected`` is drawn as a large star, ``matches`` (search hits) with a black ring, and
    ``moved_from`` (the selected item's position in the other map, aligned onto this one) is joined
    to the star by a dashed line: how far the item moved between the two embeddings. ``names``:
    ``(x, y, text)`` labels drawn on the map (the clusters' names at their centres). ``values``: a
    number per point, drawn on a colour scale named ``colour_name`` instead of ``labels``.
    ``shown``: the points a filter keeps; the others stay as grey context."""
    labels = list(labels) if labels is not None else ["(no label)"] * len(texts)
    rationales = list(rationales) if rationales is not None else [""] * len(texts)
    keep = set(range(len(texts))) if shown is None else set(shown)

    def hover(idx):
        return [f"#{i + 1} {_short(texts[i])}" + (f"<br><i>rationale:</i> {_short(rationales[i], 70)}"
                                                  if rationales[i] else "")
                + (f"<br>{escape(colour_name)}: {values[i]:.4f}" if values is not None else "") for i in idx]

    def xy(idx):
        return [float(coords[i][0]) for i in idx], [float(coords[i][1]) for i in idx]

    scatter = go.Scattergl if len(texts) >= WEBGL_FROM else go.Scatter
    fig = go.Figure()
    hidden = [i for i in range(len(texts)) if i not in keep]
    if hidden:
        x, y = xy(hidden)
        fig.add_trace(scatter(x=x, y=y, mode="markers", name=f"filtered out ({len(hidden)})", text=hover(hidden),
                                 hoverinfo="text", customdata=hidden, marker={"size": 5, "color": "lightgrey"}))
    if values is not None:
        idx = sorted(keep)
        x, y = xy(idx)
        fig.add_trace(scatter(x=x, y=y, mode="markers", name=escape(colour_name), text=hover(idx),
                                 hoverinfo="text", customdata=idx, showlegend=False,
                                 marker={"size": 8, "opacity": 0.85, "color": [float(values[i]) for i in idx],
                                         "colorscale": "Viridis", "showscale": True,
                                         "colorbar": {"title": {"text": escape(colour_name)}, "len": 0.6,
                                                      "y": 0.3}}))
    for lab in sorted(set(labels), key=str) if values is None else []:
        idx = [i for i, l in enumerate(labels) if l == lab and i in keep]
        x, y = xy(idx)
        fig.add_trace(scatter(x=x, y=y, mode="markers", name=escape(str(lab) or "(empty)"), text=hover(idx),
                                 hoverinfo="text", customdata=idx, marker={"size": 8, "opacity": 0.8}))
    if matches:
        m = list(matches)
        fig.add_trace(go.Scatter(x=[float(coords[i][0]) for i in m], y=[float(coords[i][1]) for i in m],
                                 mode="markers", name=f"{escape(matches_name)} ({len(m)})", customdata=m,
                                 hoverinfo="skip",
                                 marker={"size": 14, "color": "rgba(0,0,0,0)",
                                         "line": {"color": "black", "width": 2}}))
    if selected is not None:
        x, y = float(coords[selected][0]), float(coords[selected][1])
        if moved_from is not None:
            fig.add_trace(go.Scatter(x=[float(moved_from[0]), x], y=[float(moved_from[1]), y], mode="lines+markers",
                                     name="moved from (other map)", hoverinfo="skip",
                                     line={"color": "black", "dash": "dash"},
                                     marker={"size": [8, 0], "color": "black", "symbol": "x"}))
        fig.add_trace(go.Scatter(x=[x], y=[y], mode="markers", name=f"#{selected + 1}", customdata=[selected],
                                 text=[_short(texts[selected])], hoverinfo="text",
                                 marker={"size": 18, "symbol": "star", "color": "gold",
                                         "line": {"color": "black", "width": 1.5}}))
    for x, y, text in names or []:
        fig.add_annotation(x=x, y=y, text=f"<b>{escape(text)}</b>", showarrow=False, bgcolor="rgba(255,255,255,0.75)",
                           font={"size": 11})
    fig.update_layout(title=title, height=440, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis={"showticklabels": False}, yaxis={"showticklabels": False},
                      legend={"title": {"text": escape(colour_name)}}, clickmode="event")
    return fig


def training_curves(metrics: list[dict], validation: list[dict] | None = None) -> go.Figure:
    """A run against its training time (minutes, summed step times): the reward components, the
    loss, the rationale length and, where the run was scored on the validation split
    (``validation``: rows with ``minutes`` or ``step``, and ``average``), that score."""

    validation = validation or []
    rows = ["reward", "loss", "rationale tokens"] + (["validation avg."] if validation else [])
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.06)
    minutes, acc = [], 0.0
    for m in metrics:
        acc += float(m.get("step_time", 0.0))
        minutes.append(acc / 60)
    by_step = dict(zip((m["step"] for m in metrics), minutes))

    def line(ys, name, row, xs=minutes):
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=name, marker={"size": 4}), row=row, col=1)

    for key in REWARD_KEYS:
        if metrics and key in metrics[0]:
            line([m.get(key) for m in metrics], key.split("/", 1)[1], 1)
    if metrics and "loss" in metrics[0]:
        line([m.get("loss") for m in metrics], "loss", 2)
    if metrics and "rationale_length" in metrics[0]:
        line([m.get("rationale_length") for m in metrics], "rationale length", 3)
    if validation:
        xs = [v["minutes"] if "minutes" in v else by_step.get(v.get("step"), 0.0) for v in validation]
        line([100 * v["average"] for v in validation], "validation avg.", 4, xs)
    for i, title in enumerate(rows, 1):
        fig.update_yaxes(title_text=title, row=i, col=1)
    fig.update_xaxes(title_text="training minutes", row=len(rows), col=1)
    fig.update_layout(height=170 * len(rows) + 90, margin={"l": 10, "r": 10, "t": 70, "b": 10},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.01, "x": 0},
                      title={"text": "training curves" if metrics else "no steps yet", "y": 0.99, "yanchor": "top"})
    return fig


def category_bars(results: list[dict]) -> go.Figure:
    """One bar group per MTEB category, a bar per configuration."""
    from grace.evaluation.mteb_adapter import CATEGORY_ORDER

    cats = [c for c in CATEGORY_ORDER if any(c in r["categories"] for r in results)] + ["Avg."]
    fig = go.Figure()
    for r in results:
        vals = [100 * r["categories"].get(c, float("nan")) for c in cats[:-1]] + [100 * r["average"]]
        fig.add_trace(go.Bar(x=cats, y=vals, name=escape(r["label"])))
    fig.update_layout(barmode="group", height=360, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      yaxis={"title": "main score x100"})
    return fig


def rating_distribution(summary: dict) -> go.Figure:
    """Counts of each score, one bar group per rating dimension."""
    fig = go.Figure()
    for dim, d in summary.get("dimensions", {}).items():
        fig.add_trace(go.Bar(x=[str(k) for k in d["distribution"]], y=list(d["distribution"].values()),
                             name=f"{dim} (mean {d['mean']:.2f})"))
    fig.update_layout(barmode="group", height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      xaxis={"title": "score"}, yaxis={"title": "ratings"}, title="ratings")
    return fig


def ratings_by_step(summary: dict) -> go.Figure:
    """Mean rating of probe rationales against the training step they were written at."""
    fig = go.Figure()
    for dim, d in summary.get("dimensions", {}).items():
        if d["by_step"]:
            fig.add_trace(go.Scatter(x=list(d["by_step"]), y=list(d["by_step"].values()), mode="lines+markers",
                                     name=dim))
    fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 30, "b": 10}, xaxis={"title": "training step"},
                      yaxis={"title": "mean rating", "range": [1, 5]}, title="ratings vs training step")
    return fig


_VISIBLE = {"\n": "↵", "\t": "⇥", "\r": "␍"}


def _visible(token: str) -> str:
    """A token as the reader should see it: newlines and tabs drawn as symbols, a token made of
    spaces only as open boxes (so a contribution of white space is not an empty cell)."""
    if token and not token.strip(" "):
        return "␣" * len(token)
    return "".join(_VISIBLE.get(ch, ch) for ch in token)


def token_heat_html(tokens: Sequence[str], segments: Sequence[str], values, *, caption: str = "") -> str:
    """Tokens on a diverging scale: red raises the similarity, blue lowers it, the shade grows with
    |value| relative to the largest one shown (small values stay visibly tinted); the exact value
    and the segment show on hover. Token text is escaped: it is shown, never run."""
    import numpy as np

    vals = np.asarray(values, dtype=np.float64)
    scale = float(np.abs(vals).max()) if len(vals) else 0.0
    scale = scale or 1.0
    parts = [f'<div class="grace-tokens" style="white-space: pre-wrap; line-height: 1.9; font-size: 0.95em">'
             + (f'<div style="font-size: 0.85em; opacity: 0.8">{escape(caption)}</div>' if caption else "")]
    for i, (tok, seg, v) in enumerate(zip(tokens, segments, vals)):
        if seg == "rationale" and (i == 0 or segments[i - 1] != "rationale"):
            parts.append('<span style="font-size: 0.8em; font-weight: 600; opacity: 0.7"> ⟦rationale⟧ </span>')
        alpha = 0.15 + 0.8 * abs(v) / scale if v else 0.0
        rgb = "214, 39, 40" if v > 0 else "31, 119, 180"
        parts.append(f'<span class="tok" data-value="{v:.6g}" title="{v:+.5f} ({escape(seg)})" '
                     f'style="background: rgba({rgb}, {alpha:.2f}); border-radius: 3px; padding: 1px 0">'
                     f'{escape(_visible(tok))}</span>')
        if "\n" in tok:
            parts.append("<br>")
    parts.append("</div>")
    return "".join(parts)
