"""Command line: ``grace <command>`` (or ``python -m grace``). Every error is one line and exit code 2.

Each command is one module with a ``register(subparsers)``; they are listed here explicitly.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import Sequence

from transformers import HfArgumentParser

from . import annotate, encode, evaluate, similarity, train
from .common import EXIT_BAD_INPUT, CliError

COMMANDS = (encode, similarity, train, evaluate, annotate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grace",
        description="GRACE Studio: rationale-conditioned text embeddings (GRACE, arXiv 2510.04506).",
        epilog="Run 'grace COMMAND --help' for the options of a command.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=HfArgumentParser)
    for command in COMMANDS:
        command.register(sub)
    return parser


def _short_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    from ..model.backbone import BackboneError

    warnings.formatwarning = _short_warning
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CliError, BackboneError, ValueError, OSError) as exc:
        print(f"error: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


__all__ = ["CliError", "build_parser", "main"]
