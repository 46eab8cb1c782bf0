"""The app in headless Chromium (Debian's package) driven by Playwright: Explore, Train, Map."""

import json

import pytest

from analysis.rollouts import HEADERS
from browser import browser_page, click_point, running_app, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def app_data(tmp_path_factory):
    return tmp_path_factory.mktemp("appdata")


@pytest.fixture(scope="module")
def app_url(tiny_model_dir, app_data):
    with running_app(str(tiny_model_dir), str(app_data)) as url:
        yield url


def _wait_text(page, selector, text, timeout=90_000):
    page.wait_for_function(
        "([sel, t]) => { const e = document.querySelector(sel); return e && e.innerText.includes(t); }",
        arg=[selector, text], timeout=timeout)


def test_explore_ranks_shows_rationales_and_tokens(app_url):
    with browser_page() as page:
        page.goto(app_url)
        page.fill("#explore-query textarea", "Where is Machu Picchu?")
        page.fill("#explore-docs textarea", "Machu Picchu is in Peru.\n<b>bold</b><img src=x onerror=\"window.__pwned=1\">")
        page.click("#explore-go")
        _wait_text(page, "#explore-status", "Ranked by GRACE cosine")
        table = page.inner_text("#explore-table")
        assert "Machu Picchu is in Peru." in table and "GRACE cosine" in table and "MiniLM" in table
        assert "[query]" in page.input_value("#explore-rationales textarea")
        _wait_text(page, "#explore-summary", "rationale")
        page.wait_for_function("() => document.querySelectorAll('#explore-dhl .tok').length > 3", timeout=30_000)
        # every token carries its value on hover
        assert page.get_attribute("#explore-dhl .tok >> nth=0", "title").startswith(("+", "-"))
        # user text is shown as text, never run as HTML
        assert page.evaluate("window.__pwned") is None
        assert "<b>bold</b>" in table  # the second document, as literal text
        shot(page, "explore")
        # what-if: edit the document's rationale and re-score without generating
        page.click("text=What if the rationale said something else?")
        page.fill("#whatif-d textarea", "Peru, Andes, Inca citadel")
        page.click("#whatif-go")
        _wait_text(page, "#whatif-msg", "after")
        assert "before" in page.inner_text("#whatif-msg")
        shot(page, "explore-whatif")


def test_explore_pair_centred_and_ablation(app_url):
    with browser_page() as page:
        page.goto(app_url)
        page.fill("#explore-query textarea", "Where is Machu Picchu?")
        page.fill("#explore-docs textarea", "Machu Picchu is in Peru.\nThe stock market fell.\nThe Andes are high.")
        page.click("#explore-go")
        _wait_text(page, "#explore-status", "Ranked by GRACE cosine")
        # why A over B: the top two are preselected
        page.click("text=Why does A rank above B?")
        page.click("#explore-pair-go")
        _wait_text(page, "#explore-pair-msg", "The query's tokens below split this difference exactly")
        assert page.locator("#explore-pair-q .tok").count() > 3
        shot(page, "explore-pair")
        # centred attributions: the summary says so and the values change
        before = page.get_attribute("#explore-dhl .tok >> nth=0", "title")
        page.click("#explore-centre >> text=centred on the compared documents")
        _wait_text(page, "#explore-summary", "centred cosine")
        assert page.get_attribute("#explore-dhl .tok >> nth=0", "title") != before
        shot(page, "explore-centred")
        # ablation of the inspected document's rationale
        page.click("text=Which part of the rationale mattered?")
        page.click("#explore-ablate")
        _wait_text(page, "#explore-ablate-msg", "text only", timeout=60_000)
        assert "cosine without it" in page.inner_text("#explore-ablate-table")
        shot(page, "explore-ablation")


def test_explore_bad_input_shows_a_message(app_url):
    with browser_page() as page:
        page.goto(app_url)
        _wait_text(page, "#model-status", "Model ready (loaded in")  # loaded as the app started
        page.fill("#explore-query textarea", "   ")
        page.click("#explore-go")
        _wait_text(page, "#explore-status", "Type a query.")


def test_train_job_shows_curves(app_url, app_data):
    with browser_page() as page:
        page.goto(app_url)
        page.click("button[role=tab]:has-text('Train')")
        page.fill("#train-name textarea, #train-name input", "browser-run")
        page.fill("#train-steps input", "2")
        page.fill("#train-tokens input", "6")
        page.click("#train-start")
        _wait_text(page, "#train-status", "finished", timeout=180_000)
        page.wait_for_selector("#train-curves .js-plotly-plot", timeout=30_000)
        assert "step 2 of 2" in page.inner_text("#train-status")
        shot(page, "train")
        # a refusal stays on the page through several 2-second refreshes
        page.click("#train-start")
        _wait_text(page, "#train-msg", "has finished; choose a new name")
        page.wait_for_timeout(6000)
        assert "has finished; choose a new name" in page.inner_text("#train-msg")
        page.fill("#train-steps input", "0")
        page.click("#train-start")
        _wait_text(page, "#train-msg", "Steps must be at least 1.")
        page.wait_for_timeout(5000)
        assert "Steps must be at least 1." in page.inner_text("#train-msg")
    # after a reload, a finished run opens from the runs table: curves, probe rationales, settings
    with browser_page() as page:
        page.goto(app_url)
        page.click("button[role=tab]:has-text('Train')")
        page.locator("#train-runs .cell-wrap:has-text('browser-run') >> visible=true").first.click()
        _wait_text(page, "#train-status", "browser-run**: finished".replace("**", ""), timeout=30_000)
        _wait_text(page, "#train-settings", "Settings of browser-run")
        assert "max_new_tokens" in page.inner_text("#train-settings")
        page.wait_for_selector("#train-curves .js-plotly-plot", timeout=30_000)
        page.wait_for_function("() => document.querySelectorAll('#train-samples tbody tr').length > 0", timeout=30_000)
        page.click("#train-send")
        _wait_text(page, "#train-msg", "probe rationale(s) of 'browser-run'")
        shot(page, "train-reopened")
        # the rollout inspector: step 2's first example, its K rollouts by advantage, as the run logged them
        page.click("#train-inspector >> text=Rollout inspector")
        page.click("#train-inspect")
        _wait_text(page, "#train-inspect-note", "Step 2", timeout=30_000)
        _wait_text(page, "#train-inspect-note", "Example 1")
        logged = [json.loads(x) for x in (app_data / "runs" / "browser-run" / "rollouts.jsonl").read_text().splitlines()]
        first = logged[-1]["examples"][0]["rollouts"]
        k = len(first)
        page.wait_for_selector(f"#train-rollouts [data-testid='cell-{k}-0']", timeout=30_000)
        cells = [[page.inner_text(f"#train-rollouts [data-testid='cell-{r}-{c}']").strip() for c in range(len(HEADERS))]
                 for r in range(k + 1)]  # the table is virtual: cells, not <tr>s
        col = HEADERS.index("advantage")
        shown = [float(row[col]) for row in cells[1:]]
        assert shown == pytest.approx(sorted((r["advantage"] for r in first), reverse=True), abs=1e-4)
        assert [row[1] for row in cells[1:]] == [str(i) for i in range(1, k + 1)]
        shot(page, "train-inspector")


def test_map_click_shows_neighbours_in_both_maps(app_url, tmp_path):
    corpus = tmp_path / "corpus.csv"
    rows = ["text,label,source"] + [f"a sentence about {w} number {i},{w},s{i % 3}" for i in range(6)
                                    for w in ("cats", "stocks")]
    corpus.write_text("\n".join(rows) + "\n")
    with browser_page() as page:
        page.goto(app_url)
        page.click("button[role=tab]:has-text('Map')")
        page.set_input_files("#map-upload input[type=file]", str(corpus))
        page.wait_for_timeout(1500)
        page.click("text=direct forward vs with rationale")
        page.click("#map-go")
        _wait_text(page, "#map-note", "12 texts mapped", timeout=180_000)
        page.wait_for_selector("#map-right .js-plotly-plot .scatterlayer .point", timeout=30_000)
        page.wait_for_timeout(1000)  # the click handler attaches within half a second
        point = page.locator("#map-left .scatterlayer .point").first
        point.scroll_into_view_if_needed()
        box = point.bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        _wait_text(page, "#map-detail", "nearest neighbours are the same", timeout=60_000)
        table = page.inner_text("#map-neighbours")
        assert "direct forward" in table and "with rationale" in table and "a sentence about" in table
        # the clicked item is starred in both maps, with the dashed line in each
        for side in ("left", "right"):
            page.wait_for_function(
                f"() => [...document.querySelectorAll('#map-{side} .legendtext')].some(e => e.textContent.startsWith('#'))",
                timeout=30_000)
        assert "moved from" in page.inner_text("#map-right")
        shot(page, "map-click")
        # colour by another column and switch to PCA: no model call, the maps follow
        page.click("#map-projection >> text=PCA")
        page.wait_for_function("() => document.querySelector('#map-left .gtitle')?.textContent.includes('PCA')",
                               timeout=30_000)
        # clusters named by their rationales: labels drawn at the centres, a table row rings its points
        page.click("#map-colour input")
        page.click("li[role=option]:has-text('clusters')")
        page.wait_for_function("() => document.querySelectorAll('#map-right .annotation-text').length >= 2",
                               timeout=30_000)
        page.wait_for_selector("#map-clusters [data-testid='cell-0-0']", timeout=30_000)
        first = [page.inner_text(f"#map-clusters [data-testid='cell-0-{c}']").strip() for c in range(4)]
        page.click("#map-clusters [data-testid='cell-0-3']")
        _wait_text(page, "#map-cluster-note", f"Cluster {first[1]}", timeout=30_000)
        assert f"{first[2]} texts" in page.inner_text("#map-cluster-note")
        page.wait_for_function(
            "n => [...document.querySelectorAll('#map-left .legendtext')].some(e => e.textContent === n)",
            arg=f"cluster {first[1]} ({first[2]})", timeout=30_000)
        shot(page, "map-clusters")
        # the rationale's measured effect: colour by it (a colour scale), then keep the texts it moved most
        page.click("#map-colour input")
        page.click("li[role=option]:has-text('rationale shift')")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#map-right .cbtitle')].some(e => e.textContent.includes('rationale shift'))",
            timeout=30_000)
        page.fill("#map-shift-filter input[type=number]", "50")
        page.press("#map-shift-filter input[type=number]", "Enter")
        _wait_text(page, "#map-cluster-note", "Showing the 6 texts whose rationale moved them most", timeout=30_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('#map-left .legendtext')].some(e => e.textContent === 'filtered out (6)')",
            timeout=30_000)
        shot(page, "map-shift")




def test_evaluate_twice_is_one_row_and_a_row_can_be_removed(app_url):
    with browser_page() as page:
        page.goto(app_url)
        page.click("button[role=tab]:has-text('Evaluate')")
        for box in page.locator("label:has-text('WordNetClustering'), label:has-text('WordNetClassification'), "
                                "label:has-text('WordNetPairClassification')").all():
            box.click()  # keep only retrieval: quick
        page.click("#eval-go")
        _wait_text(page, "#eval-status", "average", timeout=120_000)
        page.click("#eval-go")
        _wait_text(page, "#eval-status", "it replaces the earlier row", timeout=120_000)
        assert page.inner_text("#eval-table").count("w/ reasoning") == 2  # one row in each of the two tables
        page.click("#eval-rows input")
        page.keyboard.press("ArrowDown")
        page.keyboard.press("Enter")
        page.click("#eval-remove")
        _wait_text(page, "#eval-status", "Removed")
        _wait_text(page, "#eval-table", "No saved results yet.")


def test_map_cancel_stops_the_work_and_writes_nothing(app_url, tmp_path):
    corpus = tmp_path / "big.txt"
    corpus.write_text("".join(f"text number {i} about topic {i % 7}\n" for i in range(2000)))
    with browser_page() as page:
        page.goto(app_url)
        page.click("button[role=tab]:has-text('Map')")
        page.set_input_files("#map-upload input[type=file]", str(corpus))
        page.wait_for_timeout(1500)
        page.click("#map-go")
        _wait_text(page, "#map-note", "/2000 texts", timeout=60_000)
        page.click("#map-cancel")
        _wait_text(page, "#map-note", "nothing was written", timeout=60_000)
        done = int(page.inner_text("#map-note").split("Cancelled after ")[1].split(" ")[0])
        assert done < 2000
        assert page.locator("#map-download a").count() == 0  # no export
        # the model slot is free again at once: an Explore comparison runs
        page.click("button[role=tab]:has-text('Explore')")
        page.click("#explore-go")
        _wait_text(page, "#explore-status", "Ranked by GRACE cosine", timeout=60_000)


def test_map_draws_a_100000_row_encode_file_and_a_click_shows_neighbours(app_url, tmp_path):
    """A grace encode output of 100,000 texts: drawn with WebGL from its own embeddings (no model
    call), a click on a point shows its text and neighbours."""
    import numpy as np

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16)) * 3
    words = ["lava", "violin", "tax", "orbit", "pasta"]
    f = tmp_path / "big.jsonl"
    with open(f, "w") as out:
        for i in range(100_000):
            k = i % 5
            e = centres[k] + rng.normal(size=16)
            out.write(json.dumps({"text": f"text {i} about {words[k]}", "rationale": f"{words[k]} things",
                                  "embedding": [round(float(v), 4) for v in e], "shift": round(float(i % 97) / 97, 4)})
                      + "\n")
    with browser_page() as page:
        page.goto(app_url)
        page.click("button[role=tab]:has-text('Map')")
        page.set_input_files("#map-upload input[type=file]", str(f))
        page.wait_for_timeout(1500)
        page.click("text=uploaded grace encode output")
        page.click("#map-go")
        _wait_text(page, "#map-note", "100000 texts mapped", timeout=300_000)
        assert "PCA first" in page.inner_text("#map-note")
        page.wait_for_selector("#map-left .js-plotly-plot .gl-container canvas", timeout=60_000)
        page.wait_for_timeout(1000)  # the click handler attaches within half a second
        assert page.is_checked("#map-projection input[value=PCA]")  # the radio says what is drawn
        click_point(page, "#map-left", 12_345)
        _wait_text(page, "#map-detail", " about ", timeout=60_000)
        assert "text " in page.inner_text("#map-detail") and "about" in page.inner_text("#map-neighbours")
        shot(page, "map-100k")
