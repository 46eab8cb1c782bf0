"""Atomic publishing of folders and exclusive files: a reader sees nothing or the whole thing.

(``textio.atomic_output`` is the same for replacing one file.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Callable


def publish_dir(target: Path, write: Callable[[Path], None]) -> Path:
    """Fill a folder through ``write(tmp)`` in a temp dir, then rename it to ``target``.

    The rename is atomic: a concurrent first load either publishes the folder or finds it
    complete; nobody ever reads a half-written one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        write(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process published it first
            if not target.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def publish_exclusive(path: Path, data: bytes) -> bool:
    """Publish ``data`` as ``path`` unless it exists (False then).

    The content is written completely (and fsynced) to a temp file first, then hard-linked to its
    name (a link fails if the name exists), so the file never exists without its content: a kill or
    a full disk leaves no empty file behind."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".claim", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # no hard links on this filesystem: an exclusive create, then the content
            return _create_exclusive(path, data)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _create_exclusive(path: Path, data: bytes) -> bool:
    try:
        out = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(out, data)
    except OSError:
        path.unlink(missing_ok=True)
        raise
    finally:
        os.close(out)
    return True


def remove_if_unchanged(path: Path, raw: bytes) -> None:
    """Remove ``path`` only if it still holds ``raw``: it is first moved aside atomically, so a file
    another process published meanwhile is put back, not lost."""
    aside = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    try:
        if aside.read_bytes() != raw:  # a fresh file replaced the one judged stale: put it back
            try:
                os.link(aside, path)  # unless yet another one took the name meanwhile
            except FileExistsError:
                pass
            except OSError:  # no hard links on this filesystem
                os.rename(aside, path)
    finally:
        aside.unlink(missing_ok=True)
