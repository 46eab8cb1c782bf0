"""Export and import of annotation items and ratings (JSONL or CSV), round-trippable.

Each file has one row per rating (``kind: rating``) and one aggregated row per item
(``kind: item``, with the number of ratings and the mean of each dimension). A row without
``kind`` is a plain item to rate (``text``, ``rationale``, optional fields). An import is one
transaction: a file with a bad line is refused whole, naming each bad line, unless bad lines
are skipped on purpose.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from grace.files.textio import csv_records, csv_safe, csv_unsafe

from .annotations import DIMENSIONS, ITEM_FIELDS, AnnotationError, AnnotationStore, check_name, check_scores

RATING_FIELDS = ["annotator", *DIMENSIONS, "hallucination", "comment", "rated", "updated"]
AGG_FIELDS = ["n_ratings"] + [f"mean_{d}" for d in DIMENSIONS]
CSV_COLUMNS = ["kind"] + ITEM_FIELDS + RATING_FIELDS + AGG_FIELDS


def export_rows(store: AnnotationStore) -> list[dict]:
    """Item rows, each followed by its rating rows, in the store's order."""
    items = store.items()
    by_item: dict[int, list[dict]] = {}
    for r in store.ratings():
        by_item.setdefault(r["item_id"], []).append(r)
    rows = []
    for it in items:
        base = {"text": it.text, "rationale": it.rationale, "settings": it.settings, "source": it.source,
                "paired_text": it.paired_text, "similarity": it.similarity, "reward": it.reward, "run": it.run,
                "step": it.step, "created": it.created}
        rs = by_item.get(it.id, [])
        agg = {"n_ratings": len(rs), **{f"mean_{d}": (float(np.mean([r[d] for r in rs])) if rs else None)
                                         for d in DIMENSIONS}}
        rows.append({"kind": "item", **base, **agg})
        for r in rs:
            rows.append({"kind": "rating", **base, "annotator": r["annotator"],
                         **{d: r[d] for d in DIMENSIONS}, "hallucination": bool(r["hallucination"]),
                         "comment": r["comment"], "rated": r["created"], "updated": r["updated"]})
    return rows


def write_export(store: AnnotationStore, path: str | Path, fmt: str | None = None) -> int:
    from grace.files.textio import atomic_output

    fmt = fmt or ("csv" if str(path).lower().endswith(".csv") else "jsonl")
    rows = export_rows(store)
    with atomic_output(path) as f:
        if fmt == "jsonl":
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
        elif fmt == "csv":
            w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
            w.writeheader()
            for row in rows:
                w.writerow({k: _csv_cell(row.get(k)) for k in CSV_COLUMNS})
        else:
            raise AnnotationError(f"Unknown format {fmt!r}: use jsonl or csv.")
    return len(rows)


def _csv_cell(v):
    if v is None:
        return ""
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True, ensure_ascii=False)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return csv_safe(v)  # user and model text never reaches a spreadsheet as a formula
    return repr(v) if isinstance(v, float) else v


def _parse_csv_row(row: dict) -> dict:
    out: dict = {}
    for k, v in row.items():
        if k is None or v is None or v == "":
            continue
        if k == "settings":
            out[k] = json.loads(csv_unsafe(v))
        elif k in ("similarity", "reward", "created", "rated", "updated") or k.startswith("mean_"):
            out[k] = float(v)
        elif k in ("step", "n_ratings", *DIMENSIONS):
            out[k] = int(v)
        elif k == "hallucination":
            out[k] = v.lower() in ("1", "true", "yes")
        else:
            out[k] = csv_unsafe(v)
    return out


def read_rows(path: str | Path) -> list[tuple[int, dict | None, str]]:
    """(line number, row or None, why it is bad) for every data line of a JSONL or CSV file."""
    from grace.files.textio import read_lines

    p = Path(path)
    lines = read_lines(p)
    out = []
    if p.suffix.lower() == ".csv":
        for n, row in csv_records("\n".join(lines)):
            try:
                out.append((n, _parse_csv_row(row), ""))
            except (ValueError, json.JSONDecodeError) as exc:
                out.append((n, None, f"bad value ({exc.__class__.__name__})"))
        return out
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            out.append((n, None, "not valid JSON"))
            continue
        out.append((n, row, "") if isinstance(row, dict) else (n, None, "not a JSON object"))
    return out


def _check_row(row: dict) -> None:
    kind = row.get("kind", "item")
    if kind not in ("item", "rating"):
        raise AnnotationError(f"unknown kind {kind!r}")
    for k in ("text", "rationale"):
        if not isinstance(row.get(k), str) or (k == "text" and not row[k].strip()):
            raise AnnotationError(f"missing or empty {k!r}")
    if not isinstance(row.get("settings", {}), dict):
        raise AnnotationError("'settings' must be an object")
    if kind == "rating":
        check_name(row.get("annotator", ""))
        check_scores(row)


def import_file(store: AnnotationStore, path: str | Path, *, skip_bad: bool = False) -> dict:
    """Import items and ratings in one transaction; returns counts and the bad lines."""
    parsed = read_rows(path)
    if not parsed:
        raise AnnotationError(f"{path}: the file is empty.")
    good, bad = [], []
    for n, row, why in parsed:
        if row is None:
            bad.append((n, why))
            continue
        try:
            _check_row(row)
        except AnnotationError as exc:
            bad.append((n, str(exc).rstrip(".")))
            continue
        good.append(row)
    if bad and not skip_bad:
        detail = "; ".join(f"line {n}: {w}" for n, w in bad[:20]) + (f" (and {len(bad) - 20} more)" if len(bad) > 20 else "")
        raise AnnotationError(f"{path}: {len(bad)} bad line(s), nothing imported: {detail}. Use --skip-bad to "
                              "import the good lines.")
    added, ratings = store.import_rows(good)
    return {"items_added": added, "ratings": ratings, "bad": bad, "lines": len(parsed)}
