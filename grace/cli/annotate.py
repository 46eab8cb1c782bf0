"""``python -m grace annotations export|import`` over the app's annotation database."""

from __future__ import annotations

import argparse
import sys


def cmd_export(args: argparse.Namespace) -> int:
    from analysis.annotation_io import write_export
    from analysis.annotations import default_store

    n = write_export(default_store(), args.output, args.format)
    print(f"wrote {n} rows to {args.output}", file=sys.stderr)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from analysis.annotation_io import import_file
    from analysis.annotations import default_store

    res = import_file(default_store(), args.input, skip_bad=args.skip_bad)
    print(f"imported {res['items_added']} new item(s) and {res['ratings']} rating(s) from {args.input}",
          file=sys.stderr)
    for n, why in res["bad"]:
        print(f"skipped line {n}: {why}", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("annotations", help="export or import rationale ratings (JSONL or CSV)",
                       description="The annotation database lives in GRACE_DATA_DIR (default ./data).")
    s = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    e = s.add_parser("export", help="write items and ratings: one row per rating, one aggregated row per item")
    e.add_argument("--output", required=True, help=".jsonl or .csv")
    e.add_argument("--format", choices=["jsonl", "csv"], default=None, help="default: from the file name")
    e.set_defaults(func=cmd_export)
    i = s.add_parser("import", help="add items (text, rationale, optional fields) and ratings from a file")
    i.add_argument("--input", required=True, help=".jsonl or .csv (an export, or items to rate)")
    i.add_argument("--skip-bad", action="store_true",
                   help="import the good lines and report the bad ones (default: refuse the whole file)")
    i.set_defaults(func=cmd_import)
