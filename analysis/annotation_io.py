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
import math
from pathlib import Path

import numpy as np

from grace.files.textio import csv_records, csv_safe, csv_unsafe

from .annotations import (DIMENSIONS, ITEM_FIELDS, AnnotationError, AnnotationStore, _brief, check_comment,
                          check_name, check_scores, check_source)

MAX_TEXT = 20_000  # characters of a text, a paired text or a rationale (and of an item's settings as JSON)
MAX_IMPORT_ROWS = 5_000  # what the app imports at once (the CLI takes any size)
NUMBER_FIELDS = ("similarity", "reward", "rationale_shift", "created", "rated", "updated")
STRING_FIELDS = ("paired_text", "run", "comment")

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
                "step": it.step, "rationale_shift": it.rationale_shift, "created": it.created}
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
        elif k in NUMBER_FIELDS or k.startswith("mean_"):
            out[k] = float(v)
        elif k in ("step", "n_ratings", *DIMENSIONS):
            out[k] = int(v)
        elif k == "hallucination":
            out[k] = v.lower() in ("1", "true", "yes")
        else:
            out[k] = csv_unsafe(v)
    return out


def read_rows(path: str | Path, max_rows: int | None = None) -> list[tuple[int, dict | None, str]]:
    """(line number, row or None, why it is bad) for every data line of a JSONL or CSV file, read
    as it streams; with ``max_rows``, a longer file is refused at its first row past the limit."""
    from grace.files.textio import iter_lines

    p = Path(path)
    out = []

    def add(row: tuple[int, dict | None, str]) -> None:
        if max_rows is not None and len(out) >= max_rows:
            raise AnnotationError(f"{p.name} has more than {max_rows:,} rows; an import takes at most "
                                  f"{max_rows:,} rows, nothing imported.")
        out.append(row)

    if p.suffix.lower() == ".csv":
        for n, row in csv_records(iter_lines(p)):
            try:
                parsed = (n, _parse_csv_row(row), "")
            except (ValueError, RecursionError) as exc:
                parsed = (n, None, f"bad value ({exc.__class__.__name__})")
            add(parsed)
        return out
    for n, line in enumerate(iter_lines(p), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            add((n, None, "not valid JSON"))
            continue
        add((n, row, "") if isinstance(row, dict) else (n, None, "not a JSON object"))
    return out


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_row(row: dict, annotator: str | None = None, aliases: tuple[str, ...] = ()) -> None:
    """Refuse a row the store could not keep as it is (the message names the field), and, with
    ``annotator``, a rating by anyone else (``aliases``: other names that mean the importer, e.g.
    the display name their page shows)."""
    kind = row.get("kind", "item")
    if kind not in ("item", "rating"):
        raise AnnotationError(f"unknown kind {_brief(kind)}")
    for k in ("text", "rationale"):
        if not isinstance(row.get(k), str) or (k == "text" and not row[k].strip()):
            raise AnnotationError(f"missing or empty {k!r}")
    settings = row.get("settings", {})
    if not isinstance(settings, dict):
        raise AnnotationError("'settings' must be an object")
    for k in STRING_FIELDS:
        if row.get(k) is not None and not isinstance(row[k], str):
            raise AnnotationError(f"{k!r} must be a string, not {_brief(row[k])}")
    for k in ("text", "rationale", "paired_text"):
        if len(row.get(k) or "") > MAX_TEXT:
            raise AnnotationError(f"{k!r} is {len(row[k]):,} characters; at most {MAX_TEXT:,}")
    if len(json.dumps(settings)) > MAX_TEXT:
        raise AnnotationError(f"'settings' is longer than {MAX_TEXT:,} characters as JSON")
    check_source(row.get("source"))
    check_comment(row.get("comment"))
    for k in NUMBER_FIELDS:
        if row.get(k) is not None and not _is_number(row[k]):
            raise AnnotationError(f"{k!r} must be a finite number, not {_brief(row[k])}")
    step = row.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 2**63):
        raise AnnotationError(f"'step' must be a whole number from 0, not {_brief(step)}")
    flag = row.get("hallucination")
    if flag is not None and not (isinstance(flag, (bool, int)) and flag in (0, 1)):
        raise AnnotationError(f"'hallucination' must be true or false, not {_brief(flag)}")
    if kind == "rating":
        name = check_name(row.get("annotator", ""))
        check_scores(row)
        if annotator is not None and name != annotator and name not in aliases:
            raise AnnotationError(f"a rating by {_brief(name)}: you can import only your own ratings "
                                  f"(as {aliases[0] if aliases else annotator})")


def import_file(store: AnnotationStore, path: str | Path, *, skip_bad: bool = False,
                max_rows: int | None = None, annotator: str | None = None, aliases: tuple[str, ...] = (),
                owner: str | None = None, max_total: int | None = None, max_per_owner: int | None = None) -> dict:
    """Import items and ratings in one transaction; returns counts and the bad lines. A file of
    more than ``max_rows`` rows is refused whole; with ``annotator`` (a key), ratings by anyone
    else are bad lines, and those by one of its ``aliases`` are stored under that key: an import
    changes only the importer's own ratings. With ``owner``, the items go to that owner's queue."""
    parsed = read_rows(path, max_rows=max_rows)  # refused at the first row past max_rows
    if not parsed:
        raise AnnotationError(f"{path}: the file is empty.")
    good, bad = [], []
    for n, row, why in parsed:
        if row is None:
            bad.append((n, why))
            continue
        try:
            _check_row(row, annotator, aliases)
        except AnnotationError as exc:
            bad.append((n, str(exc).rstrip(".")))
            continue
        good.append({**row, "annotator": annotator} if annotator is not None and row.get("kind") == "rating" else row)
    if bad and not skip_bad:
        detail = "; ".join(f"line {n}: {w}" for n, w in bad[:20]) + (f" (and {len(bad) - 20} more)" if len(bad) > 20 else "")
        raise AnnotationError(f"{path}: {len(bad)} bad line(s), nothing imported: {detail}. Use --skip-bad to "
                              "import the good lines.")
    added, ratings = store.import_rows(good, owner=owner, max_total=max_total, max_per_owner=max_per_owner)
    return {"items_added": added, "ratings": ratings, "bad": bad, "lines": len(parsed)}
