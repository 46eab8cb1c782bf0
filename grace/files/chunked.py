"""A long job's output written in chunks, so an interrupted run resumes where it stopped:

    OUTPUT.parts/
      manifest.json        what is being made (a fingerprint of the input and settings) and the chunk size
      chunk-000000.jsonl   each chunk's rows, published whole by one rename (never half a chunk)

``finish`` joins the chunks into OUTPUT (atomically) and removes the folder. A resume with another
input, other settings or another chunk size is refused: its chunks would not fit together.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterable

from .textio import InputError, atomic_output

MANIFEST = "manifest.json"


class ChunkedOutput:
    def __init__(self, output: str | Path, *, fingerprint: str, total: int, chunk_size: int):
        if chunk_size < 1:
            raise InputError(f"--chunk-size must be at least 1 (got {chunk_size}).")
        self.output = Path(output)
        self.parts = self.output.with_name(self.output.name + ".parts")
        self.total, self.chunk_size = total, chunk_size
        manifest = {"fingerprint": fingerprint, "total": total, "chunk_size": chunk_size}
        found = self.parts / MANIFEST
        chunks = list(self.parts.glob("chunk-*.jsonl"))
        try:
            old = json.loads(found.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if chunks and old != manifest:  # chunks of another run (or of one whose manifest is gone)
            raise InputError(f"{self.parts} holds a run with another input, settings or chunk size: remove it "
                             "to start over, or run the same command as before to resume it.")
        if old != manifest:  # new, or a start that stopped before its first chunk: begin afresh
            self.parts.mkdir(parents=True, exist_ok=True)
            with atomic_output(found) as f:
                f.write(json.dumps(manifest))

    @property
    def n_chunks(self) -> int:
        return -(-self.total // self.chunk_size)

    def chunk_path(self, i: int) -> Path:
        return self.parts / f"chunk-{i:06d}.jsonl"

    def span(self, i: int) -> tuple[int, int]:
        """The rows of chunk ``i``: [start, end)."""
        return i * self.chunk_size, min(self.total, (i + 1) * self.chunk_size)

    def done(self) -> list[int]:
        """The chunks already written (a resume skips them)."""
        return [i for i in range(self.n_chunks) if self.chunk_path(i).exists()]

    def write(self, i: int, rows: Iterable[dict]) -> None:
        with atomic_output(self.chunk_path(i)) as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    def finish(self) -> None:
        """Every chunk joined into the output in order (written whole or not at all), then the parts
        folder removed."""
        missing = [i for i in range(self.n_chunks) if not self.chunk_path(i).exists()]
        if missing:
            raise RuntimeError(f"chunks {missing[:5]} are missing: the run has not finished")
        with atomic_output(self.output, "wb") as out:
            for i in range(self.n_chunks):
                with open(self.chunk_path(i), "rb") as f:
                    shutil.copyfileobj(f, out)
        # out of the way by one rename first: a kill during the removal leaves no half folder to resume
        gone = self.parts.with_name(f".{self.parts.name}.removing")
        shutil.rmtree(gone, ignore_errors=True)
        self.parts.rename(gone)
        shutil.rmtree(gone, ignore_errors=True)
