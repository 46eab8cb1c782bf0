"""``grace similarity``: rank documents against a query, with exact token contributions."""

from __future__ import annotations

import argparse
import json

from .common import CliError, add_command, encode_settings


def run(args: argparse.Namespace) -> int:
    from analysis.attributions import rank_documents

    from ..model.encoder import validate_texts
    from ..model.loading import load_encoder

    settings = encode_settings(args)
    texts = [args.query] + list(args.doc)
    try:
        validate_texts(texts)
    except ValueError:
        bad = next(i for i, t in enumerate(texts) if not t.strip())
        raise CliError("The query is empty." if bad == 0 else f"Document {bad} is empty.") from None
    if args.explain_pair:
        i, j = args.explain_pair
        if not (1 <= i <= len(args.doc) and 1 <= j <= len(args.doc)) or i == j:
            raise CliError(f"--explain-pair takes two different document numbers between 1 and {len(args.doc)}.")
    enc = load_encoder(settings)
    results = enc.encode(texts, settings, return_details=True, show_progress_bar=len(texts) > 4)
    report = rank_documents(results[0], results[1:])
    add_explanations(report, args, enc, settings, results)
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
        if "centred" in d:
            print(f"     centred on the documents' mean: {d['centred']['cosine']:+.4f}")
        for row in d.get("ablation", {}).get("pieces", [])[:3]:
            print(f"     without {row['removed']!r}: {row['change']:+.4f}")
    if "pair" in report:
        p = report["pair"]
        print(f"document {p['a']} vs {p['b']}: difference {p['difference']:+.4f}; from the query's text tokens "
              f"{p['query_segments']['text']:+.4f}, its rationale tokens {p['query_segments']['rationale']:+.4f}")
    return 0


def add_explanations(report: dict, args: argparse.Namespace, enc, settings, results) -> None:
    """--explain-pair, --centred and --ablate-rationale (analysis.contrast) into the report."""
    from analysis.contrast import ablate_rationale, centred_contributions, explain_pair, reference_embedding

    query, docs = results[0], results[1:]
    if args.explain_pair:
        i, j = args.explain_pair
        report["pair"] = {"a": i, "b": j, **explain_pair(query, docs[i - 1], docs[j - 1])}
    for row in report["docs"]:
        r = docs[row["input"] - 1]
        if args.centred:
            c = centred_contributions(query, r, reference_embedding(docs))
            row["centred"] = {"cosine": c.cosine, "contributions": {"query": c.pairs("a"), "doc": c.pairs("b")}}
        if args.ablate_rationale and r.rationale:
            row["ablation"] = ablate_rationale(enc, settings, query, r)


def register(sub) -> None:
    p = add_command(sub, "similarity", help="rank documents against a query, with token contributions",
                    settings=True,
                    description="Rank documents by cosine similarity to a query. Each similarity is "
                                "split exactly into per-token contributions (text vs rationale).")
    p.add_argument("--query", required=True, help="the query text")
    p.add_argument("--doc", action="append", required=True, help="a document (repeat for several)")
    p.add_argument("--json", action="store_true", help="print a JSON report with contributions per token")
    p.add_argument("--explain-pair", type=int, nargs=2, metavar=("I", "J"), default=None,
                   help="why document I ranks above or below document J (1-based input numbers): the query's "
                        "tokens' share of cos(q, I) - cos(q, J), summing to it exactly")
    p.add_argument("--centred", action="store_true",
                   help="also contributions to the cosine after subtracting the documents' mean embedding "
                        "(what separates them, rather than what every text shares)")
    p.add_argument("--ablate-rationale", action="store_true",
                   help="re-score each document with each piece of its rationale removed (no generation)")
    p.set_defaults(func=run)
