"""``grace eval`` and ``grace compare``."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from .common import CliError, add_command, encode_settings


def cmd_eval(args: argparse.Namespace) -> int:
    from ..evaluation.mteb_adapter import check_datasets, evaluate, resolve_tasks
    from ..files.textio import atomic_output
    from ..model.loading import load_encoder

    settings = encode_settings(args)
    tasks = resolve_tasks(args.suite, quick=args.quick, limit=args.limit)  # unknown names fail before loading
    check_datasets(tasks)
    encoder = load_encoder(settings)
    print(f"evaluating {settings.label()} on {len(tasks)} task(s)", file=sys.stderr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's per-class notes on tiny splits
        result = evaluate(settings, tasks, encoder=encoder,
                          on_task=lambda n, s, t: print(f"  {n}: {100 * s:.1f} ({t:.0f} s)", file=sys.stderr))
    if args.label:
        result["label"] = args.label
    result["suite"] = args.suite + (" (quick)" if args.quick else "") + (f" (limit {args.limit})" if args.limit else "")
    with atomic_output(args.output) as f:
        json.dump(result, f, indent=1)
    print(f"average {100 * result['average']:.1f} over {len(result['tasks'])} task(s) in "
          f"{result['wall_seconds'] / 60:.1f} min; wrote {args.output}", file=sys.stderr)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..evaluation.mteb_adapter import compare_table, load_results
    from ..files.textio import atomic_output

    if not args.results:
        raise CliError("Name at least one results file (written by 'python -m grace eval').")
    results = load_results(args.results)
    if results.skipped:  # files named on the command line: a bad one is an error, not skipped
        path, why = results.skipped[0]
        raise CliError(f"{path}: {why}." + (f" ({len(results.skipped) - 1} more bad file(s).)"
                                            if len(results.skipped) > 1 else ""))
    table = compare_table(results)
    if args.output:
        with atomic_output(args.output) as f:
            f.write(table)
    print(table)
    return 0


def register(sub) -> None:
    p = add_command(sub, "eval", help="evaluate a configuration on MTEB tasks or the offline WordNet suite",
                    settings=True, description="Evaluate the current settings (model, adapter, rationale on/off, pooling, ...) "
                                   "and write per-task main scores, category averages and wall time as JSON. "
                                   "Rationales are cached on disk, so re-runs and shared texts are not generated "
                                   "again; an interrupted run resumes.")
    p.add_argument("--suite", default="offline",
                   help="offline (WordNet tasks; needs Debian's wordnet-base), offline-validation (the same tasks on "
                        "WordNet's validation pool: tune here, report on offline), mteb-subset (the paper's 16 "
                        "ablation tasks; needs the Hub), or TASK[,TASK...] (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="small task sizes (tests, a first look)")
    p.add_argument("--output", required=True, help="results .json")
    p.add_argument("--label", default=None, help="row name in the comparison table (None: from the settings)")
    p.add_argument("--limit", type=int, default=None,
                   help="cap every offline task at N queries / texts / pairs (a faster, rougher figure)")
    p.set_defaults(func=cmd_eval)

    p = add_command(sub, "compare", help="render results files as a table in the shape of the paper's Table 1",
                       description="Rows are configurations, columns MTEB categories and the average.")
    p.add_argument("results", nargs="*", help="results .json files from 'python -m grace eval'")
    p.add_argument("--output", default=None, help="write the Markdown table here too")
    p.set_defaults(func=cmd_compare)
