"""The app's own data folder (runs, results, exports, annotations)."""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """``GRACE_DATA_DIR``, else /data/grace on a Hugging Face Space with persistent storage, else ./data."""
    env = os.environ.get("GRACE_DATA_DIR")
    if env:
        p = Path(env)
    elif Path("/data").is_dir() and os.access("/data", os.W_OK) and os.environ.get("SPACE_ID"):
        p = Path("/data/grace")
    else:
        p = Path("data")
    p.mkdir(parents=True, exist_ok=True)
    return p
