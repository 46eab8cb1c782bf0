"""Each tab's callbacks on the tiny random model: results, and readable messages for bad input."""

import time
from pathlib import Path

import gradio as gr
import numpy as np
import pytest


@pytest.fixture()
def ui_env(tmp_path, monkeypatch, tiny_model_dir):
    monkeypatch.setenv("GRACE_DATA_DIR", str(tmp_path / "data"))
    from grace.ui.common import APP_DEFAULTS, panel_values

    return panel_values(APP_DEFAULTS.with_(model=str(tiny_model_dir), max_new_tokens=4))


def _last(gen):
    out = None
    for out in gen:
        pass
    return out


def _compare(*args):
    """Explore's Compare to the end, with the kept comparison in place of its key."""
    from grace.ui.explore import _comp, run_compare

    out = list(_last(run_compare(None, *args)))
    out[9] = _comp(out[9])
    return tuple(out)


def test_explore_input_checks():
    from grace.ui.explore import parse_inputs

    with pytest.raises(ValueError, match="Type a query"):
        parse_inputs(" ", "doc")
    with pytest.raises(ValueError, match="at least one document"):
        parse_inputs("q", "\n \n")
    with pytest.raises(ValueError, match="51 documents: the limit is 50"):
        parse_inputs("q", "\n".join(f"d{i}" for i in range(51)))
    q, docs, notes = parse_inputs("q", "x" * 100_000)
    assert len(docs[0]) == 20_000 and "cut to their first 20,000 characters" in notes[0]


def test_explore_compare_and_what_if(ui_env):
    from grace.ui.explore import ATTRIBUTIONS, select_doc, what_if

    out = _compare("Where is Machu Picchu?", "Machu Picchu is in Peru.\nStocks fell.", ATTRIBUTIONS[0],
                            *ui_env)
    status, rows, stream, q_hl, d_hl, summary, pick, q_rat, d_rat, comp, pair_a, pair_b = out
    assert status.startswith("Ranked by GRACE cosine")
    assert [r[0] for r in rows] == [1, 2] and rows[0][3] >= rows[1][3]
    assert sorted(r[1] for r in rows) == [1, 2]  # the input number beside the rank
    assert all(len(r) == 12 and r[7] is not None and r[9] is not None for r in rows)  # MiniLM and shift filled
    assert all(r[4] is None and r[5] is None for r in rows)  # greedy and no adapter: no spread, no base column
    assert "[query]" in stream and "[#2]" in stream
    assert 'class="tok"' in d_hl and "⟦rationale⟧" in d_hl and "cosine" in summary
    assert pair_a["value"] != pair_b["value"]  # the pair view starts on the top two
    choice = pick["choices"][1] if isinstance(pick, dict) else pick.choices[1]
    q2, d2, summary2, rat2 = select_doc(choice, comp)
    assert rat2 == comp.docs[comp.order()[1]].rationale
    msg, wq, wd = what_if(choice, "history of Peru", "Peru, Andes", comp, *ui_env)
    assert "before" in msg and "after" in msg and 'class="tok"' in wd


def test_explore_pair_centred_and_ablation_views(ui_env):
    import re

    from analysis.contrast import ablate_rationale, explain_pair
    from grace.ui.common import encoder_for, settings_from
    from grace.ui.explore import ATTRIBUTIONS, ablate, explain_choice, select_doc

    docs = "Machu Picchu is in Peru.\nStocks fell.\nThe Andes are high."
    *_, comp, pair_a, pair_b = _compare("Where is Machu Picchu?", docs, ATTRIBUTIONS[1], *ui_env)
    choices = pair_a["choices"]
    # why A over B: the shown difference and the query tokens' values are those of explain_pair
    msg, hq, ha, hb = explain_choice(choices[0], choices[2], comp)
    a, b = comp.order()[0], comp.order()[2]
    ref = explain_pair(comp.query, comp.docs[a], comp.docs[b])
    assert f"= {ref['difference']:+.4f}" in msg and f"#{a + 1}" in msg
    shown = [float(v) for v in re.findall(r'data-value="([^"]+)"', hq)]
    assert abs(sum(shown) - ref["difference"]) < 1e-4
    assert explain_choice(choices[0], choices[0], comp)[0] == "Pick two different documents."
    # raw vs centred: a different decomposition of a different cosine
    raw = select_doc(choices[0], comp, ATTRIBUTIONS[0])
    centred = select_doc(choices[0], comp, ATTRIBUTIONS[1])
    assert "centred cosine" in centred[2] and "centred" not in raw[2] and raw[1] != centred[1]
    # ablation: the rows are ablate_rationale's, most harmful first
    msg, rows = ablate(choices[0], comp, *ui_env)
    s = settings_from(*ui_env)
    ref = ablate_rationale(encoder_for(s), s, comp.query, comp.docs[a])
    assert "text only" in msg and "rationale only" in msg
    assert [r[0] for r in rows] == [p["removed"] for p in ref["pieces"]]
    assert [r[2] for r in rows] == sorted(r[2] for r in rows)
    # one document cannot be centred: a message, and the raw view instead
    status = _compare("q", "just one", ATTRIBUTIONS[1], *ui_env)[0]
    assert "Centring needs at least 2 documents" in status


def test_explore_unloadable_model_is_a_message(ui_env):
    bad = ["no-such-org/no-such-model"] + ui_env[1:]
    status = _compare("q", "d", "raw cosine", *bad)[0]
    assert status.startswith("⚠️") and "no-such-org/no-such-model" in status


def _quiet(*a, **k):
    return None


def test_map_callbacks(ui_env, tmp_path):
    from grace.ui.map_tab import CLUSTERS, SHIFT, SOURCES, _map, filter_shift, make_map, on_click, render

    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("title,label\nx,y\n")
    assert "no 'text' column" in make_map(None, SOURCES[2], str(bad_csv), "with rationale", "UMAP", "", *ui_env)[0]
    binary = tmp_path / "blob.txt"
    binary.write_bytes(b"\x00\x01\x02binary")
    assert "binary" in make_map(None, SOURCES[2], str(binary), "with rationale", "UMAP", "", *ui_env)[0]
    good = tmp_path / "c.csv"
    good.write_text("text,topic,source\n" + "".join(f"sentence number {i},{'ab'[i % 2]},s{i}\n" for i in range(6)))
    note, left, right, csv_path, state, colour, _, _, clusters, drawn = make_map(
        None, SOURCES[2], str(good), "direct forward vs with rationale", "UMAP", "number 3", *ui_env, progress=_quiet)
    assert note.startswith("6 texts mapped") and "PCA" in note and "1 of 6 texts contain 'number 3'" in note
    assert left is not None and right is not None
    assert colour["choices"] == ["topic", "source", SHIFT, CLUSTERS] and colour["value"] == "topic"  # any column
    # the rationale's effect: the rationale map's shifts, shown in both maps; the filter keeps the top half
    direct_panel, rationale_panel = _map(state)["panels"]
    assert direct_panel.data.shift is None and (rationale_panel.data.shift > 0).all()
    shaded, shaded_right, _ = render(state, "UMAP", SHIFT, "")
    scale = [t for t in shaded.data if t.marker.colorscale is not None]
    assert len(scale) == 1 and list(scale[0].marker.color) == pytest.approx(
        [rationale_panel.data.shift[i] for i in scale[0].customdata])
    half, _, note = filter_shift(50, state, "UMAP", SHIFT, "")
    grey = [t for t in half.data if t.name.startswith("filtered out")]
    top3 = set(np.argsort(-rationale_panel.data.shift)[:3].tolist())
    assert grey[0].name == "filtered out (3)" and not top3 & set(grey[0].customdata) and "top 50 %" in note
    assert filter_shift(0, state, "UMAP", SHIFT, "")[2].startswith("⚠️")
    filter_shift(100, state, "UMAP", SHIFT, "")
    # each map's clusters: sizes that add up, the direct-forward map's named from its texts (no rationales)
    for title in ("direct forward", "with rationale"):
        mine = [r for r in clusters if r[0] == title]
        assert sum(r[2] for r in mine) == 6 and [r[2] for r in mine] == sorted((r[2] for r in mine), reverse=True)
    coloured, _, _ = render(state, "UMAP", CLUSTERS, "")
    k = sum(1 for r in clusters if r[0] == "direct forward")
    assert len(coloured.layout.annotations) == k and all(t.name.split(":")[0].isdigit() for t in coloured.data)
    assert {t.name for t in left.data} >= {"a", "b", "search (1)"}
    lines = open(csv_path).read().splitlines()
    assert len(lines) == 1 + 12 and lines[0].startswith("panel,text,topic,source,rationale,x,y,e0")
    # a click (item 3, with the page's nonce) marks it in both maps and lists its neighbours in each
    left2, right2, detail, near = on_click("2:1700000000", state, "UMAP", "topic", "")
    assert detail.startswith("**#3** sentence number 2") and "nearest neighbours are the same" in detail
    assert [r[0] for r in near] == ["direct forward"] * 5 + ["with rationale"] * 5
    assert all(r[2] != 3 for r in near) and [r[4] for r in near[:5]] == sorted((r[4] for r in near[:5]), reverse=True)
    right2 = right2["value"]  # the second map is shown (a single map hides it)
    assert any(t.name == "#3" for t in right2.data) and any(t.name == "moved from (other map)" for t in right2.data)
    # re-projecting and re-colouring use the kept embeddings: no model is needed
    pca_left, _, _ = render(state, "PCA", "source", "")
    assert "(PCA)" in pca_left.layout.title.text and len(pca_left.data) == 6 + 2  # 6 sources, the moved line, the star


def test_map_cancel_stops_within_a_batch_and_writes_nothing(ui_env, tmp_path, monkeypatch):
    """Cancel pressed as the first batch starts: the engine drops the map's rows at the batch's
    next decode step (so not even that batch completes), and nothing is written."""
    import analysis.corpus_map as cm
    from grace.files.paths import data_dir
    from grace.ui import map_tab

    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"text number {i}\n" for i in range(40)))
    calls = []
    real = cm.embed_corpus

    def counting(enc, settings, texts, **kw):
        class Spy:
            def encode(self, batch, *a, **k):
                if k.get("rationales") is None:  # a generating call (not the shift's text-only pass)
                    calls.append(len(batch))
                map_tab.cancel_map("visitor-a")  # the visitor presses Cancel during the first batch
                return enc.encode(batch, *a, **k)
        return real(Spy(), settings, texts, **kw)

    monkeypatch.setattr(map_tab, "embed_corpus", counting)
    note = map_tab.make_map("visitor-a", map_tab.SOURCES[2], str(corpus), "with rationale", "UMAP", "", *ui_env,
                            progress=_quiet)[0]
    assert note.startswith("Cancelled after 0 of 40 texts") and "nothing was written" in note
    assert calls == [cm.BATCH]
    assert not map_tab.CANCELS.start("visitor-b").is_set()  # another visitor's map is not cancelled
    assert not (data_dir() / "exports").exists() or not list((data_dir() / "exports").glob("map-*.csv"))
    # the next map starts with a fresh flag and runs to the end
    monkeypatch.setattr(map_tab, "embed_corpus", real)
    assert map_tab.make_map("visitor-a", map_tab.SOURCES[2], str(corpus), "with rationale", "PCA", "", *ui_env,
                            progress=_quiet)[0].startswith("40 texts mapped")


def test_train_callbacks_one_job_at_a_time(ui_env, tiny_model_dir):
    from grace.ui.train_tab import cancel, estimate, refresh, start

    args = ("grace / supervised", None, 200, 2, 2, 0.2, 0.2, 0.1, 4, 4, str(tiny_model_dir))
    msg, name = start("first", *args)
    assert msg.startswith("Started") and name == "first"
    refused, _ = start("second", *args)
    assert "still running" in refused
    assert "Cancelling" in cancel("first")
    deadline = time.time() + 120
    while time.time() < deadline:
        line, fig, samples, settings, table, adapters, current, drawn = refresh("first")
        if "cancelled" in line:
            break
        time.sleep(1)
    assert "cancelled" in line and table[0][0] == "first"
    assert "first" in adapters["choices"]
    again = refresh("first", None, drawn)  # the page's next tick: nothing changed, nothing rebuilt
    assert again[1] == gr.skip() and again[5] == gr.skip() and again[7] == drawn
    # the cancelled run's name with the same settings resumes it, and says so
    msg, _ = start("first", *args)
    assert msg.startswith("Resuming **first** from step")
    cancel("first")
    while "cancelled" not in refresh("first")[0] and time.time() < deadline:
        time.sleep(1)
    other = ("grace / supervised", None, 200, 2, 3, 0.2, 0.2, 0.1, 4, 4, str(tiny_model_dir))
    refused, _ = start("first", *other)
    assert "other settings; choose a new name, e.g. 'first-2'" in refused
    bad, _ = start("bad name!", *args)
    assert bad.startswith("⚠️")
    zero = ("grace / supervised", None, 0) + args[3:]
    assert start("third", *zero)[0] == "⚠️ Steps must be at least 1."  # the form's words, not the CLI's
    assert "**rollouts**: 2" in settings and "**steps**: 200" in settings  # what differs from the defaults
    # 1 step of the default model: about a minute to start plus the measured step (a 1-step job took 69 s)
    assert "about **1.1 min**" in estimate("grace / supervised", 1, 2, 4, 48, "default")


def test_failed_job_leaves_the_app_running(ui_env):
    from grace.ui.train_tab import refresh, start

    msg, _ = start("broken", "cl / supervised", None, 2, 2, 2, 0.2, 0.2, 0.1, 4, 4, "/nonexistent/model")
    assert msg.startswith("Started")
    deadline = time.time() + 120
    while time.time() < deadline:
        line = refresh("broken")[0]
        if "failed" in line:
            break
        time.sleep(1)
    assert "failed" in line and "/nonexistent/model" in line


def test_evaluate_callback(ui_env, monkeypatch):
    from grace.ui import evaluate_tab
    from grace.ui.common import _panel_fields
    from grace.ui.evaluate_tab import remove, run_eval

    status, table, fig, rows = run_eval(None, "quick", ["WordNetRetrieval"], *ui_env, progress=_quiet)
    assert "average" in status and "w/ reasoning [4 tokens]" in table  # the row names its settings
    # the same settings again replace their row instead of adding an identical one
    status, table, fig, rows = run_eval(None, "quick", ["WordNetRetrieval"], *ui_env, progress=_quiet)
    assert len(rows["choices"]) == 1 and table.count("w/ reasoning [4 tokens]") == 2  # category + per-task table
    other = list(ui_env)
    other[_panel_fields().index("max_new_tokens")] = 6
    status, table, fig, rows = run_eval(None, "quick", ["WordNetRetrieval"], *other, progress=_quiet)
    assert len(rows["choices"]) == 2
    status, table, fig, rows = remove(rows["choices"][0][1])  # (label, file key): removed by its key
    assert status.startswith("Removed") and len(rows["choices"]) == 1 and "[6 tokens]" in table
    status = run_eval(None, "quick", [], *ui_env, progress=_quiet)[0]
    assert status.startswith("⚠️")
    # Cancel: the evaluation stops at its next chunk of texts and saves nothing
    monkeypatch.setattr(evaluate_tab.CANCELS, "start", lambda token, kind, session=None: _set_flag())
    before = sorted(evaluate_tab.results_dir().glob("*.json"))
    status = run_eval(None, "quick", ["WordNetClustering"], *ui_env, progress=_quiet)[0]
    assert status == "Cancelled; nothing was saved."
    assert sorted(evaluate_tab.results_dir().glob("*.json")) == before


def _set_flag():
    import threading

    flag = threading.Event()
    flag.set()
    return flag


def test_annotate_callbacks(tmp_path, monkeypatch):
    monkeypatch.setenv("GRACE_DATA_DIR", str(tmp_path / "data"))
    from analysis.annotations import default_store
    from grace.ui.annotate_tab import back, save, start, summary_view

    store = default_store()
    ids = [store.add_item(f"text {k}", f"rationale {k}", source="import", similarity=0.1 * k)[0] for k in range(3)]
    assert "Type your annotator name" in start("", False)[9]
    panel = start("ann", False)
    item_id, name = panel[0], panel[-1]
    assert item_id == ids[0] and name == "ann" and panel[1] == "text 0"
    out = save(item_id, name, 4, None, 2, False, "", False)
    assert "Rate informativeness" in out[9] and out[0] == ids[0]  # nothing lost, same item shown
    out = save(item_id, name, 4, 3, 2, True, "meh", False)
    assert out[0] == ids[1] and "Saved" in out[9] and "1 of 3" in out[10]
    prev = back(out[0], name)
    assert prev[0] == ids[0] and prev[4:9] == (4, 3, 2, True, "meh")  # loaded for editing
    save(ids[1], name, 5, 5, 5, False, "", False)
    save(ids[0], "other", 3, 3, 3, False, "", False)
    text, dist, steps, a, b = summary_view("ann", "other")
    assert "ratings of 2 items by 2 annotator(s)" in text and "weighted κ" in text
    assert "(n = 3)" in text and "Spearman vs similarity" in text and "(n = 2 items)" in text
    from grace.ui.annotate_tab import import_items
    from grace.ui.text import md_escape

    bad = tmp_path / "my ratings.jsonl"
    bad.write_text('{"text": "", "rationale": "r"}\n{"text": "t", "rationale": "r", "source": "my-own-label"}\n')
    msg, _ = import_items(str(bad), "ann")  # a Markdown note: the file's text is escaped
    assert msg.startswith(md_escape("⚠️ my ratings.jsonl: 1 bad line(s)")) and md_escape(str(tmp_path)) not in msg
    assert "--skip-bad" not in msg and "Fix those lines" in msg
    bad.write_text('{"text": "t", "rationale": "r", "source": "my-own-label"}\n')
    assert import_items(str(bad), "ann")[0].startswith("Imported 1 new item")


def test_cached_encoder_follows_a_retrained_adapter(tiny_model_dir, tmp_path):
    from grace.training.config import GraceConfig
    from grace.training.data import SAMPLE_TRIPLETS
    from grace.training.trainer import train
    from grace.model.settings import EncodeSettings
    from grace.ui.common import encoder_for

    cfg = dict(data=str(SAMPLE_TRIPLETS), output=str(tmp_path / "run"), model=str(tiny_model_dir), steps=1,
               rollouts=2, max_new_tokens=4, sample_every=0, device="cpu", lr=1e-2, truncation="none")
    adapter = str(train(GraceConfig(**cfg)).adapter)
    s = EncodeSettings(model=str(tiny_model_dir), adapter=adapter)
    first = encoder_for(s)
    assert encoder_for(s.with_(prompt="paper", max_new_tokens=8)) is first  # loaded once, for every prompt
    train(GraceConfig(**{**cfg, "seed": 5}), overwrite=True)  # the same name, new weights
    second = encoder_for(s)
    assert second is not first
    x = "Machu Picchu is in Peru."
    assert not (first.encode(x, rationale=False) == second.encode(x, rationale=False)).all()


def test_a_public_app_serves_only_the_embedded_models(monkeypatch, tmp_path, tiny_model_dir):
    from grace.ui.common import check_model_choice, encoder_for, settings_from, panel_values, APP_DEFAULTS
    from grace.ui.train_tab import start

    monkeypatch.setenv("GRACE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GRACE_PUBLIC", "1")
    monkeypatch.delenv("GRACE_ALLOW_ANY_MODEL", raising=False)
    assert check_model_choice(" default ") == "default"
    for bad in (str(tiny_model_dir), "some-org/some-model", "/etc"):
        with pytest.raises(ValueError, match="serves only the embedded models"):
            settings_from(*panel_values(APP_DEFAULTS.with_(model=bad)))
        with pytest.raises(ValueError, match="GRACE_ALLOW_ANY_MODEL=1"):
            encoder_for(APP_DEFAULTS.with_(model=bad))
    assert "no visitor identity" in start("r1", "grace / supervised", None, 2, 2, 4, 0.2, 0.2, 0.1, 8, 8,
                                          "default")[0]  # a bare API call that skipped the page's identify
    who = {"id": "hf:0123", "name": "someone", "signed_in": True}  # public training needs an account
    msg, _ = start("r1", "grace / supervised", None, 2, 2, 4, 0.2, 0.2, 0.1, 8, 8, str(tiny_model_dir), who)
    assert "serves only the embedded models" in msg and not (tmp_path / "runs" / "r1").exists()
    monkeypatch.setenv("GRACE_ALLOW_ANY_MODEL", "1")
    assert check_model_choice(str(tiny_model_dir)) == str(tiny_model_dir)


def test_the_encoder_cache_keeps_two_backbones(monkeypatch, tmp_path):
    from grace.ui import common

    monkeypatch.delenv("GRACE_PUBLIC", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setattr(common.ENGINE, "_encoders", common.OrderedDict())
    loaded = []
    import grace.model.loading as loading

    monkeypatch.setattr(loading, "load_encoder", lambda s: loaded.append(s.model) or object())
    for m in ("a", "b", "a", "c", "minilm", "a"):
        common.encoder_for(common.APP_DEFAULTS.with_(model=m))
    assert loaded == ["a", "b", "c", "minilm"]  # "a" stayed (used last), "b" went out first
    assert [k[0] for k in common.ENGINE._encoders] == ["c", "minilm", "a"]
    common.encoder_for(common.APP_DEFAULTS.with_(model="b"))
    assert loaded[-1] == "b" and [k[0] for k in common.ENGINE._encoders] == ["minilm", "a", "b"]


def test_uploads_are_limited_and_named_safely(ui_env, tmp_path, monkeypatch):
    from grace.ui import common
    from grace.ui.train_tab import _config

    big = tmp_path / "big.jsonl"
    big.write_bytes(b"x" * 2_100_000)
    monkeypatch.setattr(common, "LOCAL_MAX_UPLOAD_MB", 2)  # on one's own machine (MAX_UPLOAD_MB on a Space)
    with pytest.raises(ValueError, match="The file is 2.1 MB; uploads are limited to 2 MB"):
        common.upload_path(str(big))
    from grace.ui.map_tab import make_map

    note = make_map(None, "uploaded file", str(big), "with rationale", "UMAP", "", *ui_env)[0]
    assert "limited to 2 MB" in note
    nodot = tmp_path / "tripletsjsonl"
    nodot.write_text('{"query": "q", "positive": "p", "negatives": ["n"]}\n')
    cfg = _config("grace / supervised", str(nodot), 2, 2, 2, 0.2, 0.2, 0.1, 4, 4, ui_env[0])
    assert cfg.data.endswith(".txt") and "tripletsjsonl"[-1] not in cfg.data.rsplit(".", 1)[1]


def test_explore_says_what_the_model_reads_of_a_long_document(ui_env):
    from grace.ui.explore import parse_inputs

    long_doc = " ".join(["Machu Picchu is an Inca citadel."] * 200)  # far over 512 tokens
    out = _compare("Where is Machu Picchu?", f"A short one.\n{long_doc}", "raw cosine", *ui_env)
    assert "Document 2 is longer than the model reads: it sees the first 512 tokens of that text." in out[0]
    _, docs, _ = parse_inputs("q", "one\u2028still one\ntwo")
    assert docs == ["one\u2028still one", "two"]


def test_a_click_during_the_warm_up_says_why_it_waits(ui_env, monkeypatch):
    import threading

    from grace.ui import common, explore

    gate = threading.Event()
    warm = common.Warmup()
    monkeypatch.setattr(explore, "WARMUP", warm)
    warm.start("default", load=lambda model: gate.wait(30))
    gen = explore.run_compare(None, "q", "a document", "raw cosine", *ui_env)
    first = next(gen)[0]
    assert first.startswith("⏳") and "starts as soon as it is ready" in first
    assert "about a minute, once" in first or "Loading the model default" in first
    gate.set()
    assert _last(gen)[0].startswith("Ranked by GRACE cosine")
    assert warm.state == "ready" and warm.message.startswith("Model ready")
    failing = common.Warmup()
    failing.start("x", load=lambda model: (_ for _ in ()).throw(OSError("no such model: x")))
    failing.done.wait(10)
    assert failing.state == "failed" and failing.message == "⚠️ The model did not load: no such model: x"
    assert failing.waiting() is None  # a click no longer waits; it reports its own error


def test_explore_datapoint_table_across_models_and_seeds(ui_env, tiny_model_dir, tmp_path):
    import csv

    from analysis.explore import HEADERS, compare_documents
    from grace.model.loading import load_encoder
    from grace.training.trainer import train
    from grace.training.config import GraceConfig
    from grace.model.settings import EncodeSettings
    from grace.ui.explore import export_table

    docs = ["Machu Picchu is in Peru.", "Stocks fell.", "The Andes are high."]
    cfg = GraceConfig(method="cl", data=str(tmp_path / "t.jsonl"), output=str(tmp_path / "run"), model=str(tiny_model_dir),
                      steps=2, batch_size=2, device="cpu")
    (tmp_path / "t.jsonl").write_text("".join(
        '{"query": "q%d", "positive": "p%d", "negatives": ["n%d"]}\n' % (i, i, i) for i in range(4)))
    adapter = str(train(cfg).adapter)
    s = EncodeSettings(model=str(tiny_model_dir), max_new_tokens=4, device="cpu")
    base = load_encoder(s)
    # with an adapter: the base column is GRACE without it, computed by the same path
    tuned = load_encoder(s.with_(adapter=adapter))
    comp = compare_documents(tuned, "Where is Machu Picchu?", docs, settings=s.with_(adapter=adapter), base_encoder=base)
    plain = compare_documents(base, "Where is Machu Picchu?", docs, settings=s)
    assert comp.base == pytest.approx(plain.grace, abs=1e-5) and comp.grace != pytest.approx(plain.grace, abs=1e-5)
    # the rationale's measured effect: the cosine without the document's rationale is the ablation's
    # "text only"; a document that is the query itself (the same greedy rationale) has a shift of
    # 1 - its cosine without the rationale, the query's own shift
    from analysis.contrast import ablate_rationale

    for i, d in enumerate(plain.docs):
        assert plain.without[i] == pytest.approx(ablate_rationale(base, s, plain.query, d)["text_only"], abs=1e-5)
    itself = compare_documents(base, "Where is Machu Picchu?", ["Where is Machu Picchu?"], settings=s)
    assert itself.shift[0] == pytest.approx(1 - itself.without[0], abs=1e-6)
    assert itself.shift[0] == pytest.approx(itself.query_shift, abs=1e-9)
    assert itself.shift[0] > 1e-6  # the rationale moved it
    assert plain.rows()[0][HEADERS.index("moved by rationale")] == round(plain.shift[plain.order()[0]], 4)
    assert compare_documents(base, "q", docs, settings=s.with_(rationale=False)).shift is None
    # a rationale-only embedding has nothing left without its rationale: no shift, no failure
    assert compare_documents(base, "q", docs, settings=s.with_(pooling="rationale-mean")).shift is None
    # sampled: the spread over 3 seeds is their standard deviation
    sampled = s.with_(sample=True, seed=5)
    comp3 = compare_documents(base, "Where is Machu Picchu?", docs, settings=sampled)
    runs = [compare_documents(base, "Where is Machu Picchu?", docs, settings=sampled.with_(seed=k)).grace
            for k in (5, 6, 7)]
    assert comp3.spread == pytest.approx([float(np.std(col)) for col in zip(*runs)], abs=1e-6)
    # the CSV holds every column and the full texts
    msg, path = export_table(comp)
    rows = list(csv.reader(open(path["value"], encoding="utf-8")))
    assert rows[0] == ["query"] + HEADERS and len(rows) == 4 and msg == "Exported 3 rows."
    assert {r[3] for r in rows[1:]} == set(docs)


def test_shipped_adapters_are_offered_and_load(ui_env, tiny_model_dir, tmp_path, monkeypatch):
    import shutil

    from grace.model import backbone
    from grace.training.config import GraceConfig
    from grace.training.trainer import train
    from grace.ui import common

    (tmp_path / "t.jsonl").write_text("".join(
        '{"query": "q%d", "positive": "p%d", "negatives": ["n%d"]}\n' % (i, i, i) for i in range(4)))
    run = train(GraceConfig(method="cl", data=str(tmp_path / "t.jsonl"), output=str(tmp_path / "run"),
                            model=str(tiny_model_dir), steps=1, batch_size=2, device="cpu"))
    shipped = tmp_path / "assets" / "demo-adapter"
    shutil.copytree(run.adapter, shipped)
    monkeypatch.setattr(backbone, "SHIPPED_DIR", shipped.parent)
    assert common.adapter_choices()[:2] == ["(none)", "shipped: demo-adapter"]
    values = list(ui_env)
    values[common._panel_fields().index("adapter")] = "shipped: demo-adapter"
    s = common.settings_from(*values)
    assert Path(s.adapter) == shipped and common.adapter_name(s) == "demo-adapter"
    base = common.encoder_for(s.with_(adapter=None)).encode(["a text"], s.with_(adapter=None))
    tuned = common.encoder_for(s).encode(["a text"], s)
    assert not np.allclose(base, tuned, atol=1e-6)  # the shipped weights are applied
    values[common._panel_fields().index("adapter")] = "shipped: nothing-here"
    with pytest.raises(ValueError, match="no shipped adapter 'nothing-here'"):
        common.settings_from(*values)


def test_a_closed_compare_stops_its_generation_before_the_slot_frees(ui_env, monkeypatch):
    """Gradio closes a cancelled event's generator; a visitor's new Compare replaces their last:
    either way the engine stops the work at its next token, and only then is the model free."""
    from grace.ui import explore
    from grace.ui.common import ENGINE

    tokens = []

    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            return "x" * len(ids)

    class Slow:  # a generation of 10 s unless it is stopped
        tokenizer = Tok()

        def encode(self, texts, s=None, return_details=False, on_token=None, **kw):
            for i in range(1000):
                tokens.append(i)
                on_token(0, [1] * (i + 1))
                time.sleep(0.01)
            raise AssertionError("the generation was not stopped")

    monkeypatch.setattr(explore, "encoder_for", lambda s: None if s.model == "minilm" else Slow())

    def generating(gen):
        for out in gen:
            if out[0] == "Generating rationales…":
                return
        raise AssertionError("never generated")

    gen = explore.run_compare("page-a", "q", "a document", "raw cosine", *ui_env)
    generating(gen)
    assert ENGINE.busy
    gen.close()  # what Gradio does to a cancelled event
    n = len(tokens)
    time.sleep(0.3)
    assert not ENGINE.busy and len(tokens) <= n + 1
    # the same page's next Compare stops the one before it, which says so
    first = explore.run_compare("page-b", "q", "a document", "raw cosine", *ui_env)
    generating(first)
    second = explore.run_compare("page-b", "q", "a document", "raw cosine", *ui_env)
    next(second)  # it starts: the first page's flag is set
    assert _last(first)[0] == "Stopped."
    generating(second)
    another = explore.run_compare("page-c", "q", "a document", "raw cosine", *ui_env)
    assert next(another)[0].startswith("⏳ The model is serving other visitors")  # told so
    another.close()
    second.close()
    time.sleep(0.3)
    assert not ENGINE.busy


def test_a_grace_encode_file_is_mapped_without_the_model(ui_env, tmp_path, monkeypatch):
    """The Map draws what grace encode wrote (no model call): colours by its shifts and clusters,
    exports it for Embedding Atlas; a bad or too long file is refused in one line."""
    import json

    import pyarrow.parquet as pq

    from grace.ui import map_tab

    def no_model(*a, **k):
        raise AssertionError("the model was called")

    monkeypatch.setattr(map_tab, "encoder_for", no_model)
    rng = np.random.default_rng(0)
    rows = [{"text": f"{w} text {i}", "rationale": f"about {w}", "embedding": (rng.normal(size=8) * 0.2
                                                                              + 3 * np.eye(8)[k]).tolist(),
             "shift": float(i) / 40} for k, w in enumerate(["lava", "violin"]) for i in range(20)]
    f = tmp_path / "enc.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    note, left, right, download, state, colour, _, _, clusters, drawn = map_tab.make_map(
        None, map_tab.SOURCES[3], str(f), map_tab.MODES[0], "UMAP", "", *ui_env, progress=_quiet)
    assert note.startswith("40 texts mapped") and download is None and right["visible"] is False
    assert colour["choices"] == [map_tab.SHIFT, map_tab.CLUSTERS] and colour["value"] == map_tab.CLUSTERS
    assert sorted(r[2] for r in clusters) == [20, 20] and {r[3] for r in clusters} == {"lava", "violin"}
    msg, path = map_tab.export_atlas(state, "UMAP", None, progress=_quiet)
    assert "embedding-atlas " in msg and "--neighbors neighbors" in msg
    table = pq.read_table(path)
    assert table.num_rows == 40 and table.column("rationale_shift").to_pylist()[5] == pytest.approx(5 / 40)
    f.write_text(json.dumps(rows[0]) + "\n" + '{"text": "no embedding"}\n')
    assert "line 2: needs 'text' and 'embedding'" in map_tab.make_map(
        None, map_tab.SOURCES[3], str(f), map_tab.MODES[0], "UMAP", "", *ui_env, progress=_quiet)[0]
    f.write_text(json.dumps(rows[0]) + "\n")  # one row: a one-line refusal, not a traceback
    assert map_tab.make_map(None, map_tab.SOURCES[3], str(f), map_tab.MODES[0], "UMAP", "", *ui_env,
                            progress=_quiet)[0].startswith("⚠️ A map needs at least 2 texts")
    same = [{**rows[0], "shift": float("nan")}] * 8  # identical rows: drawn without clusters; a NaN shift is none
    f.write_text("".join(json.dumps(r) + "\n" for r in same))
    out = map_tab.make_map(None, map_tab.SOURCES[3], str(f), map_tab.MODES[0], "PCA", "", *ui_env, progress=_quiet)
    assert out[0].startswith("8 texts mapped") and out[8] == [] and out[5]["choices"] == []
    monkeypatch.setattr(map_tab, "MAX_ENCODED", 1)
    f.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    assert "more than 1 rows" in map_tab.make_map(None, map_tab.SOURCES[3], str(f), map_tab.MODES[0], "UMAP", "",
                                                 *ui_env, progress=_quiet)[0]


def test_an_explore_request_past_its_clock_says_which_limit_stopped_it(ui_env, monkeypatch):
    from grace.ui import explore

    class Slow:  # a generation that would take 10 s
        def encode(self, texts, s=None, return_details=False, on_token=None, **kw):
            for i in range(1000):
                if on_token is not None:
                    on_token(0, [1])
                time.sleep(0.01)
            raise AssertionError("the clock did not stop it")

    monkeypatch.setattr(explore, "encoder_for", lambda s: Slow())
    monkeypatch.setenv("GRACE_LIMIT_EXPLORE", "1")
    t0 = time.time()
    final = _last(explore.run_compare("page-clock", "q", "a document", "raw cosine", *ui_env))
    assert final[0].startswith("⚠️ Stopped: explore requests are limited to 1 s"), final[0]
    assert time.time() - t0 < 5
