"""Helpers for the browser tests: start the app on a free port, drive Debian's Chromium."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(model_dir: str, data_dir: str, timeout: float = 120, env: dict | None = None, pid: list | None = None):
    """The app on a free port (its URL); ``env`` adds variables, ``pid`` (a list) receives its PID."""
    port = free_port()
    env = {**os.environ, "GRACE_MODEL": str(model_dir), "GRACE_DATA_DIR": str(data_dir),
           "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "HF_HUB_OFFLINE": "1",
           "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    root = Path(__file__).resolve().parents[1]
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    log = open(Path(data_dir) / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    if pid is not None:
        pid.append(proc.pid)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError("the app exited: " + (Path(data_dir) / "app.log").read_text()[-2000:])
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise TimeoutError("the app did not start in time")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        try:
            yield page
        finally:
            browser.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


POINT_JS = """([sel, idx]) => {
  const gd = document.querySelector(sel + ' .js-plotly-plot');
  if (!gd || !gd._fullLayout) return null;
  gd.scrollIntoView();
  const fl = gd._fullLayout, box = gd.getBoundingClientRect();
  for (const t of gd.data) {
    const j = Array.from(t.customdata || []).indexOf(idx);
    if (j >= 0) return [box.left + fl.xaxis._offset + fl.xaxis.l2p(t.x[j]),
                        box.top + fl.yaxis._offset + fl.yaxis.l2p(t.y[j])];
  }
  return null;
}"""


def click_point(page, plot: str, index: int) -> None:
    """Click item ``index`` of a plotly map inside ``plot`` (a selector) where it is drawn, SVG or
    WebGL alike (a WebGL point is not an element: its place comes from the plot's axes)."""
    xy = page.evaluate(POINT_JS, [plot, index])
    if xy is None:
        raise AssertionError(f"item {index} is not on the map {plot}")
    page.mouse.click(*xy)
