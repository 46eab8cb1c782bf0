"""``grace similarity``: rank documents against a query, with exact token contributions."""

from __future__ import annotations

import argparse
import json

from .common import CliError, add_command, encode_settings, load_encoder_for


def run(args: argparse.Namespace) -> int:
    from analysis.attributions import rank_documents

    from ..model.encoder import validate_texts

    settings = encode_settings(args)
    texts = [args.query] + list(args.doc)
    try:
        validate_texts(texts)
    except ValueError:
        bad = next(i for i, t in enumerate(texts) if not t.strip())
        raise CliError("The query is empty." if bad == 0 else f"Document {bad} is empty.") from None
    enc = load_encoder_for(settings)
    results = enc.encode(texts, settings, return_details=True, show_progress_bar=len(texts) > 4)
    report = rank_documents(results[0], results[1:])
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=1))
        return 0
    q = report["query"]
    print(f"query: {q['text']}")
    if q["rationale"]:
        print(f"  rationale: {q['rationale']!r}")
    for rank, d in enumerate(report["docs"], 1):
        seg = d["segments"]
        print(f"{rank}. {d['cosine']:+.4f}  {d['text']}")
        if d["rationale"]:
            print(f"     rationale: {d['rationale']!r}")
        print(f"     from the document's text tokens {seg['text']:+.4f}, rationale tokens {seg['rationale']:+.4f}")
    return 0


def register(sub) -> None:
    p = add_command(sub, "similarity", help="rank documents against a query, with token contributions",
                    settings=True,
                    description="Rank documents by cosine similarity to a query. Each similarity is "
                                "split exactly into per-token contributions (text vs rationale).")
    p.add_argument("--query", required=True, help="the query text")
    p.add_argument("--doc", action="append", required=True, help="a document (repeat for several)")
    p.add_argument("--json", action="store_true", help="print a JSON report with contributions per token")
    p.set_defaults(func=run)
