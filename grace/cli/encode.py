"""``grace encode``: embed the texts of a file, with their rationales."""

from __future__ import annotations

import argparse
import json
import sys

from .common import add_command, encode_settings


def run(args: argparse.Namespace) -> int:
    from ..files.textio import atomic_output, read_texts
    from ..model.loading import load_encoder

    settings = encode_settings(args)
    texts = read_texts(args.input)
    enc = load_encoder(settings)
    results = enc.encode(texts, settings, return_details=True, show_progress_bar=True)
    with atomic_output(args.output) as f:
        for r in results:
            f.write(json.dumps({"text": r.text, "rationale": r.rationale,
                                "embedding": [round(float(x), 7) for x in r.embedding]}) + "\n")
    print(f"wrote {len(results)} embeddings of dimension {len(results[0].embedding)} to {args.output}",
          file=sys.stderr)
    return 0


def register(sub) -> None:
    p = add_command(sub, "encode", help="embed the texts of a file (with their rationales)", settings=True,
                    description="Embed each text of a .txt (one per line) or .jsonl ('text' field) file; "
                                "writes one JSON object per text: text, rationale, embedding.")
    p.add_argument("--input", required=True, help=".txt (one text per line) or .jsonl with a 'text' field")
    p.add_argument("--output", required=True, help="output .jsonl (written only when every text succeeded)")
    p.set_defaults(func=run)
