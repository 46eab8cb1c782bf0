"""The one owner of a training run's files: every name, the atomic writes, the adapter link swap,
pruning, resume truncation, status and cancel (``RunFolder``), and the runs folder's own active-job
claim (``RunsFolder``). Nothing else names these files.

    RUNS/.active.json              the running job's claim (written whole before it exists)
    RUNS/NAME/
      grace_config.json            the run's GraceConfig: a folder holding it is a run
      owner.json                   who started the run (the app's public mode)
      status.json                  the job's state, step and error
      cancel                       present: the job stops after its current step
      metrics.jsonl                one row per step
      samples.jsonl                the probe texts' rationales
      rollouts.jsonl               a GRACE step's rollouts, rewards and advantages (logged steps)
      validation.jsonl             validation scores of the adapter versions (benchmarks)
      checkpoints/step-N/          adapter/, optimizer.pt, state.json (the newest two kept)
      adapters/step-N/             adapter versions: the PEFT files, grace_config.json,
                                   encode_settings.json, tokenizer_info.json
      adapter -> adapters/step-N   the newest complete version, swapped by one atomic rename

Complete checkpoints and adapter versions appear by one rename (``publish_dir``), so a reader never
sees half of one. Only one job writes a run folder at a time (the active-job claim).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable

from .atomic import publish_dir, publish_exclusive, remove_if_unchanged
from .textio import atomic_output

CONFIG = "grace_config.json"
OWNER = "owner.json"
STATUS = "status.json"
CANCEL = "cancel"
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
ROLLOUTS = "rollouts.jsonl"
VALIDATION = "validation.jsonl"
CHECKPOINTS = "checkpoints"
ADAPTERS = "adapters"
ADAPTER = "adapter"
STATE = "state.json"  # in a checkpoint: its step
OPTIMIZER = "optimizer.pt"  # in a checkpoint
WEIGHTS = "adapter_model.safetensors"  # PEFT's name for the adapter weights
ENCODE_SETTINGS = "encode_settings.json"  # in an adapter version: the settings it was trained for
TOKENIZER_INFO = "tokenizer_info.json"  # in an adapter version
ACTIVE = ".active.json"  # in the runs folder
KEEP_CHECKPOINTS = 2


def read_json(path: Path) -> dict | None:
    """A JSON object file's content; None when missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _json_lines(raw: bytes):
    """(line, object) for each line of ``raw`` that holds a JSON object; lines end at "\\n" only
    (U+2028 and U+0085 are legal inside a JSON line, ``str.splitlines`` would split there), and a
    line cut by a crash (partial JSON, bad UTF-8) is skipped."""
    for line in raw.split(b"\n"):
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(row, dict):
            yield line, row


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file a job writes; a line that is not a JSON object (being written right
    now, or cut by a crash) is skipped. Lines end at "\\n" only: U+2028 and U+0085 are legal inside
    a JSON line (``str.splitlines`` would split there)."""
    try:
        raw = Path(path).read_bytes()
    except OSError:  # missing (not written yet) or unreadable
        return []
    return [row for _, row in _json_lines(raw)]


def truncate_jsonl(path: Path, step: int) -> None:
    """On resume, keep the rows up to ``step`` (the checkpoint's) and drop the rest, which will be
    recomputed. A line cut by a crash or a full disk (partial JSON, NUL bytes, bad UTF-8, no step)
    is dropped too, so the run can resume. Lines end at "\\n" only (U+2028 is legal inside a JSON
    line); the file is replaced atomically."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        return
    keep = [line.rstrip(b"\r") + b"\n" for line, row in _json_lines(raw)
            if isinstance(row.get("step"), int) and not isinstance(row["step"], bool) and row["step"] <= step]
    data = b"".join(keep)
    if data != raw:
        with atomic_output(path, "wb") as f:
            f.write(data)


def _write_json(path: Path, data: dict, *, indent: int | None = None, durable: bool = True) -> None:
    """Replace ``path`` atomically: readers see the old content or the new, never a part."""
    with atomic_output(path, durable=durable) as f:
        f.write(json.dumps(data, indent=indent))


def _append_jsonl(path: Path, rows: Iterable[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _file(name: str, doc: str | None = None) -> property:
    """A path property: ``name`` inside the folder."""
    return property(lambda self: self.path / name, doc=doc or name)


class RunFolder:
    """One run's folder. Properties are paths; methods read and write."""

    CONFIG, ENCODE_SETTINGS, TOKENIZER_INFO = CONFIG, ENCODE_SETTINGS, TOKENIZER_INFO

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- names (paths) -------------------------------------------------------------------------
    config = _file(CONFIG)
    owner = _file(OWNER)
    status = _file(STATUS)
    cancel_file = _file(CANCEL)
    metrics = _file(METRICS)
    samples = _file(SAMPLES)
    rollouts = _file(ROLLOUTS)
    validation = _file(VALIDATION)
    checkpoints = _file(CHECKPOINTS)
    adapters = _file(ADAPTERS)
    adapter = _file(ADAPTER, "the link to the newest adapter version")

    # -- the folder ----------------------------------------------------------------------------
    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def has_files(self) -> bool:
        return self.path.exists() and any(self.path.iterdir())

    def remove(self) -> None:
        shutil.rmtree(self.path)

    def remove_leftovers(self) -> None:
        """Temp files of a save or a rewrite that a kill interrupted: checkpoint and adapter folders
        being written (``.step-*``, never read: complete ones are renamed into place), the adapter
        link being swapped and partial rewrites of the trainer's files."""
        for folder in (self.checkpoints, self.adapters):
            for tmp in folder.glob(".step-*"):
                if tmp.is_dir() and not tmp.is_symlink():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink(missing_ok=True)
        for pattern in (".adapter-link-*", f".{METRICS}.*.part", f".{SAMPLES}.*.part", f".{CONFIG}.*.part"):
            for tmp in self.path.glob(pattern):
                if tmp.is_symlink() or tmp.is_file():
                    tmp.unlink(missing_ok=True)

    # -- config and owner ----------------------------------------------------------------------
    def has_config(self) -> bool:
        return self.config.exists()

    def read_config(self) -> dict | None:
        return read_json(self.config)

    def write_config(self, data: dict) -> None:
        _write_json(self.config, data, indent=1)

    def read_owner(self) -> dict | None:
        """Who started the run, or None (runs made before owners were kept, or by the CLI)."""
        return read_json(self.owner)

    def write_owner(self, data: dict) -> None:
        """Record the owner once; an existing owner is kept."""
        if not self.owner.exists():
            _write_json(self.owner, data)

    # -- status and cancel ---------------------------------------------------------------------
    def read_status(self) -> dict | None:
        return read_json(self.status)

    def write_status(self, data: dict) -> None:
        _write_json(self.status, data, durable=False)  # rewritten every step: atomic, not fsynced

    def request_cancel(self) -> None:
        self.cancel_file.write_text("cancel requested\n")

    def cancel_requested(self) -> bool:
        return self.cancel_file.exists()

    def clear_cancel(self) -> None:
        self.cancel_file.unlink(missing_ok=True)

    # -- logs ----------------------------------------------------------------------------------
    def append_metrics(self, row: dict) -> None:
        _append_jsonl(self.metrics, [row])

    def append_samples(self, rows: Iterable[dict]) -> None:
        _append_jsonl(self.samples, rows)

    def append_rollouts(self, row: dict) -> None:
        _append_jsonl(self.rollouts, [row])

    def append_validation(self, row: dict) -> None:
        _append_jsonl(self.validation, [row])

    def metric_rows(self) -> list[dict]:
        return read_jsonl(self.metrics)

    def sample_rows(self) -> list[dict]:
        return read_jsonl(self.samples)

    def rollout_rows(self) -> list[dict]:
        """The logged steps' rollouts (``logs_rollouts`` decides which steps), one row per step."""
        return read_jsonl(self.rollouts)

    def rollout_steps(self) -> list[int]:
        """The steps whose rollouts were logged, in order."""
        return [r["step"] for r in self.rollout_rows() if isinstance(r.get("step"), int)]

    def rollout_row(self, step: int) -> dict | None:
        """One logged step's rollouts, or None."""
        return next((r for r in self.rollout_rows() if r.get("step") == step), None)

    def validation_rows(self) -> list[dict]:
        return read_jsonl(self.validation)

    def truncate_logs(self, step: int) -> None:
        """On resume from ``step``: rows past it are recomputed; on a fresh start (step 0) the step-0
        probe rationales are written again, so the samples lose theirs too."""
        truncate_jsonl(self.metrics, step)
        truncate_jsonl(self.rollouts, step)
        truncate_jsonl(self.samples, step if step > 0 else -1)

    # -- checkpoints ---------------------------------------------------------------------------
    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step:06d}"

    def has_checkpoint(self, step: int) -> bool:
        return self.checkpoint(step).exists()

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (complete ones are published atomically)."""
        found = sorted(p for p in self.checkpoints.glob("step-*") if (p / STATE).exists())
        return found[-1] if found else None

    @staticmethod
    def checkpoint_step(ckpt: Path) -> int:
        return json.loads((ckpt / STATE).read_text())["step"]

    @staticmethod
    def checkpoint_weights(ckpt: Path) -> Path:
        return ckpt / ADAPTER / WEIGHTS

    @staticmethod
    def checkpoint_optimizer(ckpt: Path) -> Path:
        return ckpt / OPTIMIZER

    def resume_step(self) -> int:
        """The step a run resumes from: its newest checkpoint's, 0 without one."""
        ckpt = self.latest_checkpoint()
        return self.checkpoint_step(ckpt) if ckpt else 0

    def save_checkpoint(self, step: int, write_adapter: Callable[[Path], None],
                        write_optimizer: Callable[[Path], None]) -> Path:
        """Publish ``checkpoints/step-N`` (``write_adapter(folder)``, ``write_optimizer(file)``, then
        its step) atomically; the newest two are kept."""
        def write(folder: Path) -> None:
            write_adapter(folder / ADAPTER)
            write_optimizer(folder / OPTIMIZER)
            (folder / STATE).write_text(json.dumps({"step": step, "time": time.time()}))

        target = publish_dir(self.checkpoint(step), write)
        for old in sorted(self.checkpoints.glob("step-*"))[:-KEEP_CHECKPOINTS]:
            shutil.rmtree(old, ignore_errors=True)
        return target

    # -- adapter versions and the link ---------------------------------------------------------
    def adapter_versions(self) -> list[tuple[int, Path]]:
        """``(step, folder)`` of every published adapter version, oldest first."""
        return [(int(p.name.split("-")[1]), p) for p in sorted(self.adapters.glob("step-*"))]

    def has_adapter(self) -> bool:
        return self.adapter.exists()

    def publish_adapter(self, step: int, write_weights: Callable[[Path], None], *, config: dict,
                        encode_settings: dict, tokenizer_info: dict, keep: int) -> Path:
        """Publish ``adapters/step-N`` (the weights, the run's config, the inference settings the
        adapter was trained for, the tokenizer it was trained with), point ``adapter`` at it and
        prune all but the newest ``keep`` versions (0: keep all)."""
        def write(folder: Path) -> None:
            write_weights(folder)
            (folder / CONFIG).write_text(json.dumps(config, indent=1))
            (folder / ENCODE_SETTINGS).write_text(json.dumps(encode_settings, indent=1))
            (folder / TOKENIZER_INFO).write_text(json.dumps(tokenizer_info, indent=1))

        staged = publish_dir(self.adapters / f"step-{step:06d}", write)
        self._point_adapter_at(staged)
        for _, old in self.adapter_versions()[:-keep] if keep > 0 else []:
            if old.resolve() != self.adapter.resolve():
                shutil.rmtree(old, ignore_errors=True)
        return staged

    def _point_adapter_at(self, version: Path) -> None:
        """Swap the ``adapter`` link by one atomic rename: the app or the CLI loading it sees the
        old adapter or the new one, never none."""
        link = self.path / f".adapter-link-{os.getpid()}"
        link.unlink(missing_ok=True)
        try:
            os.symlink(version.relative_to(self.path), link)
            if self.adapter.is_dir() and not self.adapter.is_symlink():  # a run folder from before adapters/
                shutil.rmtree(self.adapter)
            os.replace(link, self.adapter)
        except BaseException:
            link.unlink(missing_ok=True)
            raise


class RunsFolder:
    """The folder of an app's runs: one ``RunFolder`` per name, and the active-job claim."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    active = _file(ACTIVE, "the running job's claim")

    def run(self, name: str) -> RunFolder:
        return RunFolder(self.path / name)

    def runs(self) -> list[RunFolder]:
        """Every run (a folder holding a config), newest config first."""
        found = []
        for config in self.path.glob(f"*/{CONFIG}"):
            with contextlib.suppress(OSError):  # removed meanwhile
                found.append((config.stat().st_mtime, RunFolder(config.parent)))
        return [run for _, run in sorted(found, key=lambda x: -x[0])]

    # -- the active-job claim ------------------------------------------------------------------
    def read_active(self) -> bytes | None:
        try:
            return self.active.read_bytes()
        except OSError:  # none (no job), or unreadable
            return None

    def write_active(self, data: dict) -> None:
        _write_json(self.active, data, durable=False)

    def remove_active(self) -> None:
        self.active.unlink(missing_ok=True)

    def claim_active(self, data: bytes) -> bool:
        """Publish the claim ``data`` unless a claim exists (False then); it never exists without
        its content (``publish_exclusive``)."""
        return publish_exclusive(self.active, data)

    def remove_active_if(self, raw: bytes) -> None:
        """Remove the claim only if it still holds ``raw`` (what was judged stale); a claim another
        start made meanwhile is kept."""
        remove_if_unchanged(self.active, raw)
