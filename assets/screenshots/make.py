"""Remake the screenshots of the README and docs/app.md from the real app with the default model.

    python assets/screenshots/make.py      (about 8 minutes on 2 CPU cores)
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from browser import browser_page, running_app  # noqa: E402
from map_scale import write_file  # noqa: E402  (the 100,000-text benchmark's synthetic encode file)

OUT = Path(__file__).resolve().parent


def snap(page, name):
    page.screenshot(path=str(OUT / f"{name}.jpg"), full_page=True, type="jpeg", quality=70)
    print("wrote", OUT / f"{name}.jpg")


def snap_part(page, selectors, name):
    """A screenshot of the part of the page that holds ``selectors`` (a view, not the whole tab)."""
    boxes = [page.locator(sel).first.bounding_box() for sel in selectors]
    page_y = page.evaluate("() => window.scrollY")
    top, bottom = min(b["y"] for b in boxes) + page_y, max(b["y"] + b["height"] for b in boxes) + page_y
    page.screenshot(path=str(OUT / f"{name}.jpg"), full_page=True, type="jpeg", quality=75,
                    clip={"x": 0, "y": max(0, top - 8), "width": 1300, "height": bottom - top + 16})
    print("wrote", OUT / f"{name}.jpg")


def wait_text(page, sel, text, timeout=600_000):
    page.wait_for_function("([s, t]) => { const e = document.querySelector(s); return e && e.innerText.includes(t); }",
                           arg=[sel, text], timeout=timeout)


def main() -> None:
    data = Path(tempfile.mkdtemp(prefix="grace-shots-"))
    (data / "results").mkdir()
    for f in (ROOT / "results" / "reproduce").glob("*.json"):  # the reproduction's rows, for the Evaluate tab
        r = json.loads(f.read_text())
        if "tasks" in r and f.stem in ("base", "base-reasoning", "grace-sup", "cl-time", "minilm"):
            r["suite"] = "full"
            (data / "results" / f.name).write_text(json.dumps(r))
    with running_app("default", str(data), timeout=300) as url, browser_page() as page:
        page.set_viewport_size({"width": 1300, "height": 900})
        page.goto(url)
        wait_text(page, "#model-status", "Model ready")
        page.click("#explore-go")
        wait_text(page, "#explore-status", "Ranked")
        page.wait_for_function("() => document.querySelectorAll('#explore-dhl .tok').length > 3")
        snap(page, "explore")
        page.click("#explore-centre >> text=centred on the compared documents")
        wait_text(page, "#explore-summary", "centred cosine")
        page.click("text=Why does A rank above B?")
        page.click("#explore-pair-go")
        wait_text(page, "#explore-pair-msg", "split this difference")
        page.click("text=Which part of the rationale mattered?")
        page.click("#explore-ablate")
        wait_text(page, "#explore-ablate-msg", "text only")
        snap(page, "explore-why")
        page.click("button[role=tab]:has-text('Map')")
        page.click("text=direct forward vs with rationale")
        page.click("#map-go")
        wait_text(page, "#map-note", "texts mapped")
        page.wait_for_timeout(1500)
        point = page.locator("#map-left .scatterlayer .point").nth(5)
        point.scroll_into_view_if_needed()
        box = point.bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        wait_text(page, "#map-detail", "nearest neighbours")
        page.wait_for_timeout(1500)
        snap(page, "map")
        # clusters named by their rationales, one selected
        page.click("#map-colour input")
        page.click("li[role=option]:has-text('clusters')")
        page.wait_for_selector("#map-clusters [data-testid='cell-0-3']")
        page.click("#map-clusters [data-testid='cell-0-3']")
        wait_text(page, "#map-cluster-note", "Cluster")
        page.wait_for_timeout(1500)
        snap_part(page, ["#map-left", "#map-clusters"], "map-clusters")
        # the rationale's measured effect: colour and filter
        page.click("#map-colour input")
        page.click("li[role=option]:has-text('rationale shift')")
        page.fill("#map-shift-filter input[type=number]", "30")
        page.press("#map-shift-filter input[type=number]", "Enter")
        wait_text(page, "#map-cluster-note", "Showing the")
        page.wait_for_timeout(1500)
        snap_part(page, ["#map-shift-filter", "#map-left"], "map-shift")
        # 100,000 texts from a grace encode output (synthetic embeddings: no model makes 100,000 on a CPU here)
        big = data / "encoded-100k.jsonl"
        write_file(big, 100_000, 64)
        page.click("text=uploaded grace encode output")
        page.set_input_files("#map-upload input[type=file]", str(big))
        page.wait_for_timeout(2000)
        page.click("#map-go")
        wait_text(page, "#map-note", "100000 texts mapped")
        page.wait_for_selector("#map-left .js-plotly-plot .gl-container canvas")
        page.wait_for_timeout(2000)
        from browser import click_point
        click_point(page, "#map-left", 4242)
        wait_text(page, "#map-detail", " about ")
        page.wait_for_timeout(1500)
        snap_part(page, ["#map-note", "#map-left", "#map-detail"], "map-100k")
        page.click("button[role=tab]:has-text('Train')")
        page.fill("#train-name textarea, #train-name input", "screenshot-demo")
        page.fill("#train-steps input", "3")
        page.fill("#train-tokens input", "32")
        page.click("#train-start")
        wait_text(page, "#train-status", "finished")
        page.wait_for_timeout(2500)
        snap(page, "train")
        page.click("#train-inspector >> text=Rollout inspector")
        page.click("#train-inspect")
        wait_text(page, "#train-inspect-note", "Example 1")
        page.wait_for_timeout(1500)
        snap_part(page, ["#train-inspect-step", "#train-rollouts"], "train-inspector")
        page.click("button[role=tab]:has-text('Evaluate')")
        page.wait_for_timeout(1500)
        snap(page, "evaluate")
        page.click("button[role=tab]:has-text('Annotate')")
        page.fill("#ann-name input, #ann-name textarea", "reader")
        page.click("#ann-start")
        wait_text(page, "#ann-progress", "of")
        snap(page, "annotate")
    shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
