"""Writing measured figures into benchmarks/RESULTS.md, one section per benchmark.

Every benchmark ends the same way: ``report(section, title, body, write=not args.no_write)``
prints its figures and stores them under ``## title (`benchmarks/SCRIPT.py`)``.

The benchmarks import the installed package (``pip install -e .``), never a path of this checkout.
"""

from __future__ import annotations

import datetime
import inspect
import os
import platform
import re
from pathlib import Path

try:
    import grace  # noqa: F401
except ModuleNotFoundError as e:
    if e.name != "grace":
        raise
    raise SystemExit("The benchmarks import the installed package: run `pip install -e .` in the repository once.") from None

RESULTS = Path(__file__).with_name("RESULTS.md")


def resumable_row(out: Path, name: str, compute, *, score: str = "average", file: str | None = None) -> dict:
    """One row of a resumable benchmark: ``out/NAME.json`` when an earlier run wrote it, else
    ``compute()``, written at once (an interrupted run resumes after its last finished row)."""
    import json

    path = Path(out) / f"{file or name}.json"
    if path.exists():
        r = json.loads(path.read_text())
        print(f"{name}: done before ({100 * r['average']:.1f})", flush=True)
        return r
    print(f"{name}: running", flush=True)
    r = compute()
    path.write_text(json.dumps(r, indent=1))
    print(f"{name}: {score} {100 * r['average']:.1f}", flush=True)
    return r


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{os.cpu_count()} cores ({cpu}){gpu}, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {datetime.date.today().isoformat()}")


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md with ``body``."""
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n\nEvery figure here was printed by the benchmark named in its section.\n"
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text, encoding="utf-8")


def report(section: str, title: str, body: str, *, write: bool = True, command: str | None = None) -> None:
    """Print ``body`` and, when ``write``, store it as the section ``section`` of RESULTS.md.

    The heading names the benchmark that measured it: ``command``, by default the calling script
    (``benchmarks/encode_speed.py``)."""
    print(body)
    if not write:
        return
    if command is None:
        command = f"benchmarks/{Path(inspect.currentframe().f_back.f_code.co_filename).name}"
    write_section(section, f"## {title} (`{command}`)\n\n" + body)
