"""``pip install`` of the checkout into a fresh virtual environment, used from outside the checkout:
the shipped adapter comes with the package, ``grace encode --adapter NAME`` finds it, and the
app lists it. The venv sees the system's site-packages (torch and the rest are not downloaded);
the real default model is needed because the shipped adapter was trained on it (converted once
into GRACE_CACHE, as in test_default_model.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = "grace-wordnet-sup"


def _checkout_copy(dest: Path) -> Path:
    """The checkout's files as a clone would have them (tracked and new, not the ignored build
    outputs), so the build writes nothing into the working tree and reads no stale build/."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _run(args: list, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    out = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{args[:3]} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


def test_pip_install_ships_the_adapter_to_the_cli_and_the_app(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", GRACE_DATA_DIR=str(tmp_path / "data"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.setdefault("GRACE_CACHE", str(Path.home() / ".cache" / "grace"))  # the converted default model
    env_dir, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    # no pip of its own: ensurepip would also bring an old setuptools that shadows the system's
    venv.create(env_dir, system_site_packages=True, with_pip=False)
    python = env_dir / "bin" / "python"
    src = _checkout_copy(tmp_path / "src")
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", src], work, env)

    # the package imported in the venv is the installed copy, not the checkout (an editable
    # install of it may sit in the system's site-packages)
    probe = ("import json, grace; from grace.model.backbone import shipped_adapters; "
             "from grace.ui.common import adapter_choices; "
             "print(json.dumps({'grace': grace.__file__, 'shipped': {k: str(v) for k, v in shipped_adapters().items()}, "
             "'choices': adapter_choices()}))")
    seen = json.loads(_run([python, "-c", probe], work, env).stdout.strip().splitlines()[-1])
    site = str(env_dir.resolve())
    assert seen["grace"].startswith(site) and not seen["grace"].startswith(str(ROOT))
    assert seen["shipped"][SHIPPED].startswith(site)
    assert f"shipped: {SHIPPED}" in seen["choices"]

    texts, out = work / "in.txt", work / "out.jsonl"
    texts.write_text("a small boat\n")
    _run([env_dir / "bin" / "grace", "encode", "--adapter", SHIPPED, "--input", texts, "--output", out,
          "--max-new-tokens", "4", "--device", "cpu"], work, env)
    row = json.loads(out.read_text())
    assert row["text"] == "a small boat" and len(row["embedding"]) == 640
