"""Rate three items with the keyboard in headless Chromium, then find them in the export."""

import json

import pytest

from analysis.annotations import AnnotationStore
from browser import browser_page, running_app, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_rate_three_items_with_the_keyboard(tiny_model_dir, tmp_path, monkeypatch):
    data = tmp_path / "data"
    store = AnnotationStore(data / "annotations.sqlite")
    for k in range(3):
        store.add_item(f"Text number {k} <script>window.__pwned=1</script>", f"rationale {k}", source="import")
    keys = ["534", "421", "255"]
    with running_app(str(tiny_model_dir), str(data)) as url, browser_page() as page:
        page.goto(url)
        page.click("button[role=tab]:has-text('Annotate')")
        page.fill("#ann-name input, #ann-name textarea", "keyboard-tester")
        page.click("#ann-start")
        page.wait_for_function("() => document.querySelector('#ann-progress').innerText.includes('0 of 3')")
        for n, k in enumerate(keys):
            page.wait_for_function(f"() => document.querySelector('#ann-text textarea').value.includes('Text number {n}')")
            page.locator("#ann-text textarea").blur()
            page.click("#ann-panel h1, #ann-panel p >> nth=0")  # focus the page, not a text field
            for d, ch in zip(("faithfulness", "informativeness", "fluency"), k):
                # the page says which dimension the next key fills, and outlines it
                page.wait_for_function(f"() => document.querySelector('#ann-next').innerText.endsWith('{d}')")
                assert "solid" in page.evaluate(f"() => document.querySelector('#ann-{d}').style.outline")
                page.keyboard.press(ch)
            if n == 1:
                page.keyboard.press("h")
            page.keyboard.press("Enter")
            page.wait_for_function(f"() => document.querySelector('#ann-progress').innerText.includes('{n + 1} of 3')")
        assert "Nothing left to rate" in page.inner_text("#ann-note")
        assert page.evaluate("window.__pwned") is None
        shot(page, "annotate")
    monkeypatch.setenv("GRACE_DATA_DIR", str(data))
    from grace.cli import main

    out = tmp_path / "export.jsonl"
    assert main(["annotations", "export", "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines() if '"rating"' in line]
    got = {r["text"][:13]: (r["faithfulness"], r["informativeness"], r["fluency"], r["hallucination"]) for r in rows}
    assert got == {"Text number 0": (5, 3, 4, False), "Text number 1": (4, 2, 1, True),
                   "Text number 2": (2, 5, 5, False)}
    assert {r["annotator"] for r in rows} == {"keyboard-tester"}
