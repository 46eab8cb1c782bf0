"""Training data: supervised triplets (query, positive, negatives) and raw passages.

Files are validated before any model is loaded: every bad record is reported with its line
number and reason; ``skip_bad=True`` drops them instead of refusing the file.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from ..files.textio import InputError, read_lines

SAMPLES = Path(__file__).resolve().parents[1] / "samples"  # package data: installed with grace
SAMPLE_TRIPLETS = SAMPLES / "triplets.jsonl"
SAMPLE_PASSAGES = SAMPLES / "passages.txt"


@dataclass
class Triplet:
    query: str
    positive: str
    negatives: list[str]


@dataclass
class LoadReport:
    """What a data file gave: the records, the bad lines, and a one-line summary."""

    records: list
    bad: list[tuple[int, str]] = field(default_factory=list)
    path: str = ""

    def summary(self) -> str:
        kind = "triplets" if self.records and isinstance(self.records[0], Triplet) else "passages"
        s = f"{self.path}: {len(self.records)} {kind} loaded"
        if self.bad:
            s += f", {len(self.bad)} bad line(s) skipped"
        if kind == "triplets" and self.records:
            n = sum(len(t.negatives) for t in self.records) / len(self.records)
            s += f", {n:.1f} negatives per query"
        return s + "."


def _text(obj: dict, key: str) -> str:
    v = obj.get(key)
    if v is None:
        raise ValueError(f"missing field {key!r}")
    if isinstance(v, list):  # E5/echo style: pos is a one-element list
        if len(v) != 1:
            raise ValueError(f"field {key!r} must hold one text, got {len(v)}")
        v = v[0]
    if not isinstance(v, str):
        raise ValueError(f"field {key!r} is a {type(v).__name__}, not a string")
    if not v.strip():
        raise ValueError(f"field {key!r} is empty")
    return v


def _negatives(obj: dict) -> list[str]:
    for key in ("negatives", "neg", "negative"):
        if key in obj:
            v = obj[key]
            items = [v] if isinstance(v, str) else v
            if not isinstance(items, list) or not items:
                raise ValueError(f"field {key!r} must be a non-empty list of texts")
            for n in items:
                if not isinstance(n, str) or not n.strip():
                    raise ValueError(f"field {key!r} holds an empty or non-string negative")
            return list(items)
    raise ValueError("missing field 'negatives' (or 'negative' / 'neg')")


def parse_triplet(obj) -> Triplet:
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    query = _text(obj, "query")
    positive = _text(obj, "pos" if "pos" in obj and "positive" not in obj else "positive")
    return Triplet(query=query, positive=positive, negatives=_negatives(obj))


def _finish(path: Path, records: list, bad: list[tuple[int, str]], skip_bad: bool) -> LoadReport:
    if bad and not skip_bad:
        lines = "; ".join(f"line {n}: {why}" for n, why in bad[:10])
        more = f" (and {len(bad) - 10} more)" if len(bad) > 10 else ""
        raise InputError(f"{path}: {len(bad)} bad record(s): {lines}{more}. Use --skip-bad to drop them.")
    if not records:
        raise InputError(f"{path}: no usable records.")
    return LoadReport(records=records, bad=bad, path=str(path))


def load_triplets(path: str | Path, *, skip_bad: bool = False) -> LoadReport:
    """Supervised JSONL: ``query``, ``positive`` and ``negatives`` (or ``negative``, or the
    E5/echo ``query``/``pos``/``neg`` lists). Duplicate records are bad records."""
    p = Path(path)
    records, bad, seen = [], [], set()
    for n, line in enumerate(read_lines(p), 1):
        if not line.strip():
            continue
        try:
            t = parse_triplet(json.loads(line))
        except json.JSONDecodeError:
            bad.append((n, "not valid JSON"))
            continue
        except ValueError as exc:
            bad.append((n, str(exc)))
            continue
        key = (t.query, t.positive, tuple(t.negatives))
        if key in seen:
            bad.append((n, "duplicate of an earlier record"))
            continue
        seen.add(key)
        records.append(t)
    return _finish(p, records, bad, skip_bad)


def load_passages(path: str | Path, *, skip_bad: bool = False) -> LoadReport:
    """Unsupervised: one passage per line (SimCSE wiki1m format) or JSONL with ``text``."""
    p = Path(path)
    records, bad, seen = [], [], set()
    jsonl = p.suffix.lower() in (".jsonl", ".json")
    lines = read_lines(p)
    while lines and not lines[-1].strip():
        lines.pop()
    for n, line in enumerate(lines, 1):
        try:
            text = _text(json.loads(line), "text") if jsonl else line
        except json.JSONDecodeError:
            bad.append((n, "not valid JSON"))
            continue
        except (ValueError, AttributeError) as exc:
            bad.append((n, str(exc) if isinstance(exc, ValueError) else "not a JSON object"))
            continue
        if not text.strip():
            bad.append((n, "empty passage"))
        elif text in seen:
            bad.append((n, "duplicate of an earlier passage"))
        else:
            seen.add(text)
            records.append(text)
    return _finish(p, records, bad, skip_bad)


def step_batch(n_records: int, batch_size: int, seed: int, step: int, rank: int = 0, world: int = 1
               ) -> tuple[list[int], list[int]]:
    """The records of step ``step`` (1-based) that process ``rank`` of ``world`` takes, and their
    positions in the whole batch: a fresh seeded permutation each epoch, the batch dealt out by
    position (which decides an example's mini-batch and its rollouts' seeds, whatever the number
    of processes)."""
    per_epoch = n_records // batch_size
    epoch, k = divmod(step - 1, per_epoch)
    order = list(range(n_records))
    random.Random(seed * 1000 + epoch).shuffle(order)
    idx = order[k * batch_size:(k + 1) * batch_size]
    positions = list(range(batch_size))[rank::world]
    return [idx[p] for p in positions], positions
