"""Reading texts from user files and writing result files without leaving partial ones."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator


class InputError(ValueError):
    """Bad user input; the message names the file, the line and the reason."""


def iter_lines(path: str | Path) -> Iterator[str]:
    """The lines of a UTF-8 text file, read one at a time (memory holds one line, not the file),
    refusing binary or non-UTF-8 content at the line where it shows. Readers with a row limit
    stop reading at the first row past it (``read_lines(max_lines=)``, ``read_texts(max_texts=)``)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file.")
    offset = 0
    with open(p, "rb") as f:
        # split on line feeds only: str.splitlines() also splits on U+2028, U+0085 and other characters
        # that json.dumps(ensure_ascii=False) leaves raw inside one valid JSONL line
        for n, raw in enumerate(f):
            if b"\x00" in raw:
                raise InputError(f"{p}: looks like a binary file, not text.")
            try:
                line = raw.decode("utf-8-sig" if n == 0 else "utf-8")
            except UnicodeDecodeError as exc:
                raise InputError(f"{p}: not UTF-8 text (bad byte at offset {offset + exc.start}).") from None
            offset += len(raw)
            if line.endswith("\n"):
                line = line[:-1]
                if line.endswith("\r"):
                    line = line[:-1]
            yield line


def too_many(path: str | Path, limit: int, what: str) -> InputError:
    """The refusal of a file with more than ``limit`` ``what`` (rows, texts, records)."""
    return InputError(f"{Path(path).name} has more than {limit:,} {what}; the limit is {limit:,}.")


def read_lines(path: str | Path, max_lines: int | None = None) -> list[str]:
    """Lines of a UTF-8 text file, refusing binary or non-UTF-8 content; with ``max_lines``, a
    file of more non-blank lines is refused as soon as the reader reaches one more."""
    lines, filled = [], 0
    for line in iter_lines(path):
        if line.strip():
            filled += 1
            if max_lines is not None and filled > max_lines:
                raise too_many(path, max_lines, "lines")
        lines.append(line)
    return lines


def count_lines(path: str | Path, limit: int, what: str = "lines") -> int:
    """The number of non-blank lines of a text file, read as it streams and refused (with
    ``too_many``) at the first line past ``limit``: a check before a file is stored or parsed."""
    n = 0
    for line in iter_lines(path):
        if line.strip():
            n += 1
            if n > limit:
                raise too_many(path, limit, what)
    return n


def csv_records(content: "str | Iterable[str]"):
    """``(line number, row)`` for each record of CSV text with a header line (a string, or its lines
    as they stream, e.g. ``iter_lines``), the number being the record's first physical line (a
    quoted cell may span several lines)."""
    import csv
    import io

    lines = io.StringIO(content) if isinstance(content, str) else (line + "\n" for line in content)
    reader = csv.DictReader(lines)
    _ = reader.fieldnames
    prev = reader.line_num
    for row in reader:
        yield prev + 1, row
        prev = reader.line_num


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: str) -> str:
    """A text cell a spreadsheet will not run as a formula: a leading =, +, -, @, tab or CR (or a
    quote that already escapes one) gets a quote in front; ``csv_unsafe`` undoes it exactly."""
    if value.startswith(FORMULA_STARTS) or (value[:1] == "'" and value[1:2].startswith(FORMULA_STARTS + ("'",))
                                            and value[1:2] != ""):
        return "'" + value
    return value


def csv_unsafe(value: str) -> str:
    """The inverse of ``csv_safe``."""
    if value[:1] == "'" and value[1:2] != "" and value[1:2].startswith(FORMULA_STARTS + ("'",)):
        return value[1:]
    return value


def read_texts(path: str | Path, field: str = "text", max_texts: int | None = None) -> list[str]:
    """Texts from a .txt (one per line) or .jsonl (objects with a ``text`` field) file; with
    ``max_texts``, a longer file is refused when the reader reaches one text more."""
    return [t for t, _ in _text_records(path, field, max_texts)]


def _text_records(path: str | Path, field: str = "text", max_texts: int | None = None):
    """``(text, record)`` of each line (the record: the JSON object, or None for .txt), streamed."""
    p = Path(path)
    jsonl = p.suffix.lower() in (".jsonl", ".json")
    out, blank = [], None  # blank: the number of the first empty line since the last text
    for n, line in enumerate(iter_lines(p), 1):
        if not line.strip():
            blank = blank or n
            continue
        if blank is not None:  # an empty line before the end of the file
            raise InputError(f"{p}, line {blank}: empty text.")
        obj = None
        if jsonl:
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"{p}, line {n}: not valid JSON.") from None
            if not isinstance(obj, dict) or field not in obj:
                raise InputError(f"{p}, line {n}: no {field!r} field.")
            line = obj[field]
            if not isinstance(line, str):
                raise InputError(f"{p}, line {n}: {field!r} is not a string.")
            if not line.strip():
                raise InputError(f"{p}, line {n}: empty text.")
        if max_texts is not None and len(out) >= max_texts:
            raise too_many(p, max_texts, "texts")
        out.append((line, obj))
    if not out:
        raise InputError(f"{p}: the file is empty.")
    return out


def _new_file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 less the umask), read without changing
    the umask (``os.umask`` sets it process-wide, which would race other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o644


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "w", *, newline: str | None = None,
                  encoding: str = "utf-8", durable: bool = True) -> Iterator:
    """Write to a temp file beside ``path`` and rename it into place only on success.

    Readers see the old file or the complete new one, never a partial one: an exception in the
    ``with`` body, a full disk (also when the last buffer is flushed at close) or a kill leaves
    ``path`` untouched, and the temp file is removed (a kill leaves ``.NAME.*.part`` behind).
    ``newline`` is passed to ``open`` (``newline=""`` for ``csv.writer``); ``durable`` fsyncs the
    data before the rename, so a power loss cannot leave an empty file under the new name. The
    file gets the mode a plain ``open`` would give it (an existing file's mode is kept).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        file_mode = p.stat().st_mode & 0o7777
    except OSError:
        file_mode = _new_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent)
    try:
        binary = "b" in mode
        with os.fdopen(fd, mode, encoding=None if binary else encoding,
                       newline=None if binary else newline) as f:
            yield f
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, file_mode)  # mkstemp makes it 0600
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_corpus(path: str | Path, max_texts: int = 2000) -> tuple[list[str], dict[str, list[str]]]:
    """Texts and every other column (as strings, for colouring a map) from .txt, .jsonl (objects
    with a ``text`` field) or .csv (a ``text`` column). Columns that are empty throughout are dropped."""
    import csv

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".csv":
        # read as it streams: a huge file is refused at its first text past max_texts
        header = next(csv.reader(line + "\n" for line in iter_lines(p)), [])
        cols = [c.strip().lower() for c in header]
        if "text" not in cols:
            raise InputError(f"{p.name}: the CSV has no 'text' column (columns: {', '.join(cols) or 'none'}).")
        records = []
        for n, row in csv_records(iter_lines(p)):
            row = {k.strip().lower(): csv_unsafe(v or "") for k, v in row.items() if k}
            if not (row.get("text") or "").strip():
                raise InputError(f"{p.name}, line {n}: empty text.")
            if len(records) >= max_texts:
                raise too_many(p, max_texts, "texts")
            records.append(row)
    elif suffix in (".jsonl", ".json"):
        records = [{**obj, "text": t} for t, obj in _text_records(p, max_texts=max_texts)]
    elif suffix == ".txt":
        records = [{"text": t} for t in read_texts(p, max_texts=max_texts)]
    else:
        raise InputError(f"{p.name}: use a .txt, .jsonl or .csv file.")
    if not records:
        raise InputError(f"{p.name}: the file is empty.")
    texts = [r["text"].strip() for r in records]
    names = list(dict.fromkeys(k for r in records for k in r if k != "text"))
    columns = {k: ["" if r.get(k) is None else str(r.get(k)) for r in records] for k in names}
    return texts, {k: v for k, v in columns.items() if any(v)}
