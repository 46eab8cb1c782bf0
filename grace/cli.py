"""Command line: ``python -m grace <command>``. Every error is one line and exit code 2."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from typing import Callable, Sequence

from .backbone import BackboneError
from .pooling import POOLINGS
from .prompts import DEFAULT_TEMPLATE, TEMPLATES

EXIT_BAD_INPUT = 2


class CliError(Exception):
    """An error to show as one line (exit code 2)."""


def add_model_options(p: argparse.ArgumentParser) -> None:
    """The encoder options shared by every command that embeds text."""
    g = p.add_argument_group("model")
    g.add_argument("--model", default="default",
                   help="'default' (embedded Gemma 3 270M), 'minilm' (all-MiniLM-L6-v2 baseline), "
                        "a Hugging Face id or a local folder (default: %(default)s)")
    g.add_argument("--adapter", default=None, help="folder of a PEFT adapter (a training run's output)")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    g.add_argument("--dtype", default=None,
                   help="float32 (CPU default, exact), bfloat16 (CUDA default), or auto: bfloat16 where the CPU "
                        "has native bf16 matmuls (2.4x faster generation measured; see benchmarks/RESULTS.md)")
    g.add_argument("--trust-remote-code", action="store_true", help="allow a hub model's own code to run")
    r = p.add_argument_group("rationale and pooling")
    r.add_argument("--no-rationale", action="store_true",
                   help="direct forward: embed the prompt without generating a rationale (paper's 'Base')")
    r.add_argument("--prompt", default=DEFAULT_TEMPLATE,
                   help=f"template name ({', '.join(TEMPLATES)}) or a .json/.txt template file "
                        "(default: %(default)s)")
    r.add_argument("--max-new-tokens", type=int, default=64, help="rationale length limit (default: %(default)s)")
    r.add_argument("--sample", action="store_true", help="sample rationales instead of greedy decoding")
    r.add_argument("--temperature", type=float, default=0.7, help="sampling temperature (default: %(default)s)")
    r.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass (default: %(default)s)")
    r.add_argument("--repetition-penalty", type=float, default=1.2,
                   help="penalty on tokens already in the rationale, 1 = off (default: %(default)s)")
    r.add_argument("--no-repeat-ngram", type=int, default=0,
                   help="forbid repeating n-grams of this size in the rationale, 0 = off")
    r.add_argument("--seed", type=int, default=None, help="random seed for sampled rationales")
    r.add_argument("--pooling", default="mean", choices=POOLINGS,
                   help="mean over text+rationale (paper), rationale-mean, text-mean, last token, or max "
                        "(default: %(default)s)")
    r.add_argument("--layer", type=int, default=-1, help="hidden layer to pool: -1 last, -2 penultimate, ...")
    r.add_argument("--batch-size", type=int, default=32, help="texts generated together (default: %(default)s)")


def encode_kwargs(args: argparse.Namespace) -> dict:
    """``encode()`` keyword arguments from the shared model options."""
    return dict(rationale=not args.no_rationale, max_new_tokens=args.max_new_tokens, do_sample=args.sample,
                temperature=args.temperature, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                no_repeat_ngram_size=args.no_repeat_ngram, seed=args.seed, pooling=args.pooling,
                layer=args.layer, batch_size=args.batch_size)


def check_model_options(args: argparse.Namespace) -> None:
    """Refuse bad options before any model is loaded."""
    from .prompts import get_template

    if args.max_new_tokens < 1:
        raise CliError("--max-new-tokens must be at least 1.")
    if args.batch_size < 1:
        raise CliError("--batch-size must be at least 1.")
    if args.no_rationale and args.pooling == "rationale-mean":
        raise CliError("--pooling rationale-mean needs a rationale; drop --no-rationale.")
    if args.adapter is not None:
        from pathlib import Path

        if not Path(args.adapter).is_dir():
            raise CliError(f"Adapter folder not found: {args.adapter}.")
    get_template(args.prompt)


def encoder_from_args(args: argparse.Namespace):
    from .models import load_encoder

    return load_encoder(args.model, adapter=args.adapter, prompt=args.prompt, device=args.device,
                        dtype=args.dtype, trust_remote_code=args.trust_remote_code)


# -- encode -------------------------------------------------------------------------------------
def cmd_encode(args: argparse.Namespace) -> int:
    from .textio import atomic_output, read_texts

    check_model_options(args)
    texts = read_texts(args.input)
    enc = encoder_from_args(args)
    results = enc.encode(texts, return_details=True, show_progress_bar=True, **encode_kwargs(args))
    with atomic_output(args.output) as f:
        for r in results:
            f.write(json.dumps({"text": r.text, "rationale": r.rationale,
                                "embedding": [round(float(x), 7) for x in r.embedding]}) + "\n")
    print(f"wrote {len(results)} embeddings of dimension {len(results[0].embedding)} to {args.output}",
          file=sys.stderr)
    return 0


# -- similarity ---------------------------------------------------------------------------------
def cmd_similarity(args: argparse.Namespace) -> int:
    from .encoder import validate_texts

    check_model_options(args)
    texts = [args.query] + list(args.doc)
    try:
        validate_texts(texts)
    except ValueError:
        bad = next(i for i, t in enumerate(texts) if not t.strip())
        raise CliError("The query is empty." if bad == 0 else f"Document {bad} is empty.") from None
    enc = encoder_from_args(args)
    results = enc.encode(texts, return_details=True, show_progress_bar=len(texts) > 4, **encode_kwargs(args))
    from analysis.attributions import rank_documents

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


# -- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m grace",
        description="GRACE Studio: rationale-conditioned text embeddings (GRACE, arXiv 2510.04506).",
        epilog="Run 'python -m grace COMMAND --help' for the options of a command.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("encode", help="embed the texts of a file (with their rationales)",
                       description="Embed each text of a .txt (one per line) or .jsonl ('text' field) file; "
                                   "writes one JSON object per text: text, rationale, embedding.")
    p.add_argument("--input", required=True, help=".txt (one text per line) or .jsonl with a 'text' field")
    p.add_argument("--output", required=True, help="output .jsonl (written only when every text succeeded)")
    add_model_options(p)
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("similarity", help="rank documents against a query, with token contributions",
                       description="Rank documents by cosine similarity to a query. Each similarity is "
                                   "split exactly into per-token contributions (text vs rationale).")
    p.add_argument("--query", required=True, help="the query text")
    p.add_argument("--doc", action="append", required=True, help="a document (repeat for several)")
    p.add_argument("--json", action="store_true", help="print a JSON report with contributions per token")
    add_model_options(p)
    p.set_defaults(func=cmd_similarity)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable]:
    """Commands that live beside their modules (train, eval, annotations) register here."""
    registers = []
    for mod, fn in (("grace.train_cli", "register"), ("grace.eval_cli", "register"),
                    ("analysis.annotations_cli", "register")):
        try:
            module = __import__(mod, fromlist=[fn])
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
            continue
        registers.append(getattr(module, fn))
    return registers


def _short_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    warnings.formatwarning = _short_warning
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CliError, BackboneError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
