import json
import multiprocessing as mp
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from analysis.agreement import cohen_weighted_kappa, krippendorff_alpha_ordinal, pair_kappa, spearman, summarise
from analysis.annotations import MIGRATIONS, SCHEMA_VERSION, AnnotationError, AnnotationStore


def _store(tmp_path, name="a.sqlite"):
    return AnnotationStore(tmp_path / name)


def test_schema_created_with_wal_and_foreign_keys(tmp_path):
    s = _store(tmp_path)
    assert s.schema_version() == SCHEMA_VERSION
    conn = sqlite3.connect(tmp_path / "a.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert s._conn().execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_migration_from_the_first_version_keeps_data(tmp_path):
    path = tmp_path / "v1.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.executescript("INSERT INTO meta VALUES ('app', 'grace-studio-annotations');"
                       "INSERT INTO meta VALUES ('schema_version', '1');"
                       "INSERT INTO items (text, rationale, settings, source, created) VALUES ('t', 'r', '{}', 'explore', 1);"
                       "INSERT INTO annotators (name, created) VALUES ('ann', 1);"
                       "INSERT INTO ratings (item_id, annotator_id, faithfulness, informativeness, fluency, created, updated)"
                       " VALUES (1, 1, 4, 3, 5, 1, 1);")
    conn.commit()
    conn.close()
    s = AnnotationStore(path)
    assert s.schema_version() == SCHEMA_VERSION
    assert s.items()[0].content_hash and s.rating(1, "ann")["faithfulness"] == 4
    assert s.items()[0].rationale_shift is None  # not measured then
    # the migrated item de-duplicates like a new one
    assert s.add_item("t", "r", source="explore") == (1, False)
    s.rate(1, "ann", faithfulness=2, informativeness=3, fluency=5)
    assert s.history(1, "ann")[0]["faithfulness"] == 4


def test_refuses_foreign_or_newer_databases_without_touching_them(tmp_path):
    other = tmp_path / "other.sqlite"
    c = sqlite3.connect(other)
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()
    before = other.read_bytes()
    with pytest.raises(AnnotationError, match="another program"):
        AnnotationStore(other)
    assert other.read_bytes() == before
    text = tmp_path / "notes.sqlite"
    text.write_text("hello")
    with pytest.raises(AnnotationError, match="not SQLite"):
        AnnotationStore(text)
    assert text.read_text() == "hello"
    newer = _store(tmp_path, "newer.sqlite")
    with newer._tx() as conn:
        conn.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(AnnotationError, match="schema 99, newer"):
        AnnotationStore(tmp_path / "newer.sqlite")


def test_read_only_folder_gives_a_clear_message():
    # /proc is read-only even for root, unlike a chmod-ed folder
    with pytest.raises(AnnotationError, match="Cannot create the annotation folder"):
        AnnotationStore("/proc/grace-annotations/a.sqlite")


def test_items_ratings_queue_and_validation(tmp_path):
    s = _store(tmp_path)
    ids = [s.add_item(f"text {i}", f"rationale {i}", source="explore")[0] for i in range(4)]
    assert s.add_item("text 0", "rationale 0", source="explore") == (ids[0], False)  # de-duplicated
    assert s.next_item("ann").id == ids[0]
    s.rate(ids[0], "ann", faithfulness=5, informativeness=4, fluency=3, hallucination=True, comment="ok")
    assert s.next_item("ann").id == ids[1] and s.progress("ann") == (1, 4)
    shuffled = [s.next_item("ann", random_order=True, seed=1).id for _ in range(2)]
    assert shuffled[0] == shuffled[1] and shuffled[0] != ids[0]  # fixed order per annotator and seed
    with pytest.raises(AnnotationError, match="from 1 to 5"):
        s.rate(ids[1], "ann", faithfulness=6, informativeness=4, fluency=3)
    with pytest.raises(AnnotationError, match="Rate fluency"):
        s.rate(ids[1], "ann", faithfulness=2, informativeness=4)
    with pytest.raises(AnnotationError, match="Type your annotator name"):
        s.rate(ids[1], "  ", faithfulness=2, informativeness=4, fluency=1)
    with pytest.raises(AnnotationError, match="at most 100 characters"):
        s.rate(ids[1], "x" * 200, faithfulness=2, informativeness=4, fluency=1)
    assert s.progress("ann") == (1, 4)  # nothing half-written


def test_concurrent_threads_and_processes_lose_nothing(tmp_path):
    path = tmp_path / "c.sqlite"
    s = AnnotationStore(path)
    item_ids = [s.add_item(f"t{i}", "r", source="explore")[0] for i in range(40)]

    def rate_all(name):
        st = AnnotationStore(path)
        for i in item_ids:
            st.rate(i, name, faithfulness=1 + i % 5, informativeness=3, fluency=4)

    threads = [threading.Thread(target=rate_all, args=(f"thread{k}",)) for k in range(4)]
    procs = [mp.get_context("spawn").Process(target=_add_items_in_process, args=(str(path), k)) for k in range(2)]
    [t.start() for t in threads]
    [p.start() for p in procs]
    [t.join() for t in threads]
    [p.join() for p in procs]
    assert all(p.exitcode == 0 for p in procs)
    assert len(s.ratings()) == 4 * 40
    assert s.count_items() == 40 + 2 * 30


def _add_items_in_process(path, k):
    st = AnnotationStore(path)
    for i in range(30):
        st.add_item(f"process {k} item {i}", "r", source="import")


def test_killed_import_leaves_the_database_consistent(tmp_path):
    import os

    db = tmp_path / "annotations.sqlite"
    AnnotationStore(db).add_item("kept", "r", source="explore")
    big = tmp_path / "big.jsonl"
    n = 150_000
    big.write_text("".join(json.dumps({"text": f"t{i}", "rationale": "r" * 100}) + "\n" for i in range(n)))
    proc = subprocess.Popen([sys.executable, "-m", "grace", "annotations", "import", "--input", str(big)],
                            env={**os.environ, "GRACE_DATA_DIR": str(tmp_path), "PYTHONPATH": "."})
    wal = tmp_path / "annotations.sqlite-wal"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if wal.exists() and wal.stat().st_size > 2_000_000:  # the import's transaction is being written
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the import finished before it could be killed"
    proc.kill()
    proc.wait()
    s = AnnotationStore(db)
    assert s._conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert s.count_items() == 1  # the killed transaction left nothing behind
    assert s.items()[0].text == "kept"


def test_agreement_against_hand_computed_values():
    # Two annotators who swap 1 and 2: o_12 = o_21 = 2, n_1 = n_2 = 2, n = 4, d2_12 = (4 - 2)^2 = 4;
    # alpha = 1 - (n - 1) * (2*4 + 2*4) / (2*2*4 + 2*2*4) = 1 - 3 * 16 / 32 = -0.5
    assert krippendorff_alpha_ordinal([[1, 2], [2, 1]]) == pytest.approx(-0.5)
    assert krippendorff_alpha_ordinal([[3, 3], [5, 5], [1, 1]]) == pytest.approx(1.0)
    assert krippendorff_alpha_ordinal([[4], [2]]) is None  # no unit with two ratings
    # kappa: a = [1, 5], b = [5, 1]: observed weighted disagreement 1, expected 0.5 -> 1 - 1/0.5 = -1
    assert cohen_weighted_kappa([1, 5], [5, 1]) == pytest.approx(-1.0)
    assert cohen_weighted_kappa([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    ratings = [{"item_id": i, "annotator": a, "faithfulness": v, "informativeness": 3, "fluency": 3,
                "hallucination": 0, "similarity": 0.1 * i, "reward": None, "step": i}
               for i, (a, v) in enumerate([("x", 1), ("y", 2)])] + \
              [{"item_id": 0, "annotator": "y", "faithfulness": 2, "informativeness": 3, "fluency": 3,
                "hallucination": 1, "similarity": 0.0, "reward": None, "step": 0},
               {"item_id": 1, "annotator": "x", "faithfulness": 1, "informativeness": 3, "fluency": 3,
                "hallucination": 0, "similarity": 0.1, "reward": None, "step": 1}]
    summary = summarise(ratings)
    assert summary["dimensions"]["faithfulness"]["alpha"] == pytest.approx(-0.5)
    assert summary["dimensions"]["faithfulness"]["by_step"] == {0: 1.5, 1: 1.5}
    # x always says 1 and y always 2: observed = expected disagreement, so kappa = 0
    assert pair_kappa(ratings, "x", "y", "faithfulness") == pytest.approx(0.0)


def test_export_import_round_trip_is_identical(tmp_path):
    from analysis.annotation_io import import_file, write_export

    s = _store(tmp_path)
    a, _ = s.add_item("Machu Picchu is in Peru.", "history, Peru", settings={"model": "default"}, source="explore",
                      paired_text="Where is Machu Picchu?", similarity=0.91)
    b, _ = s.add_item("Stocks fell.", "finance", source="training", run="demo", step=3, reward=1.5)
    s.add_item("unrated", "nothing yet", source="import")
    s.rate(a, "ann", faithfulness=5, informativeness=4, fluency=5, comment='says "Peru", fine')
    s.rate(a, "bob", faithfulness=4, informativeness=4, fluency=3, hallucination=True)
    s.rate(b, "ann", faithfulness=2, informativeness=1, fluency=4)
    for fmt in ("jsonl", "csv"):
        first = tmp_path / f"one.{fmt}"
        write_export(s, first)
        fresh = _store(tmp_path, f"fresh-{fmt}.sqlite")
        res = import_file(fresh, first)
        assert res["items_added"] == 3 and res["ratings"] == 3 and not res["bad"]
        second = tmp_path / f"two.{fmt}"
        write_export(fresh, second)
        assert first.read_text() == second.read_text()
    rows = [json.loads(line) for line in (tmp_path / "one.jsonl").read_text().splitlines()]
    item_a = next(r for r in rows if r["kind"] == "item" and r["text"].startswith("Machu"))
    assert item_a["n_ratings"] == 2 and item_a["mean_faithfulness"] == 4.5


def test_import_refuses_bad_lines_unless_skipped(tmp_path, capsys, monkeypatch):
    from grace.cli import main

    monkeypatch.setenv("GRACE_DATA_DIR", str(tmp_path))
    f = tmp_path / "in.jsonl"
    f.write_text('{"text": "a", "rationale": "r"}\n{"text": "", "rationale": "r"}\n{oops\n'
                 '{"kind": "rating", "text": "b", "rationale": "r", "annotator": "x", "faithfulness": 9, '
                 '"informativeness": 1, "fluency": 1}\n{"text": "c", "rationale": "r"}\n')
    assert main(["annotations", "import", "--input", str(f)]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "line 3: not valid JSON" in err and "line 4" in err and "nothing imported" in err
    assert AnnotationStore(tmp_path / "annotations.sqlite").count_items() == 0
    assert main(["annotations", "import", "--input", str(f), "--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert "imported 2 new item(s)" in err and "skipped line 3" in err
    out = tmp_path / "export.csv"
    assert main(["annotations", "export", "--output", str(out)]) == 0
    assert out.read_text().splitlines()[0].startswith("kind,text,rationale")


def test_csv_export_neutralises_formulas_and_round_trips(tmp_path):
    import csv

    from analysis.annotation_io import import_file, write_export

    s = _store(tmp_path)
    texts = ["=HYPERLINK(\"http://x\")", "+1", "-2 degrees", "@SUM(A1)", "'=already quoted", "plain"]
    for t in texts:
        s.add_item(t, "=cmd|' /C calc'!A0", source="import")
    out = tmp_path / "e.csv"
    write_export(s, out)
    with open(out, newline="") as f:
        cells = [c for row in csv.reader(f) for c in row]
    assert not any(c.startswith(("=", "+", "-", "@")) for c in cells)
    fresh = _store(tmp_path, "fresh.sqlite")
    import_file(fresh, out)
    assert sorted(i.text for i in fresh.items()) == sorted(texts)
    assert {i.rationale for i in fresh.items()} == {"=cmd|' /C calc'!A0"}


def test_csv_import_reports_physical_line_numbers(tmp_path):
    from analysis.annotation_io import import_file

    f = tmp_path / "in.csv"
    f.write_text('kind,text,rationale\nitem,"first\nspans\nthree lines",r\nitem,,r\nitem,ok,"two\nlines"\n'
                 'rating,x,r\n')
    with pytest.raises(AnnotationError, match=r"line 5: missing or empty 'text'; line 8: "):
        import_file(_store(tmp_path), f)


def _open_new_store(path, barrier, errors):
    try:
        barrier.wait(10)
        AnnotationStore(path)
    except Exception as exc:  # collected: the test shows every error
        errors.append(repr(exc))


def test_several_first_openers_of_a_new_file_do_not_race(tmp_path):
    # the schema is read and migrated inside one write transaction: the others wait, then see it done
    for attempt in range(3):
        path = tmp_path / f"race-{attempt}.sqlite"
        barrier, errors = threading.Barrier(6), []
        threads = [threading.Thread(target=_open_new_store, args=(path, barrier, errors)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert AnnotationStore(path).schema_version() == SCHEMA_VERSION


def test_a_failed_commit_leaves_no_open_transaction(tmp_path):
    from analysis.annotations import _Transaction

    s = _store(tmp_path)
    conn = s._conn()
    conn.execute("PRAGMA defer_foreign_keys = ON")  # the violation below surfaces at COMMIT
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        with _Transaction(conn) as c:
            c.execute("INSERT INTO ratings (item_id, annotator_id, faithfulness, informativeness, fluency, created, "
                      "updated) VALUES (999, 999, 3, 3, 3, 0, 0)")
    assert not conn.in_transaction
    item, _ = s.add_item("a text", "its rationale")  # the connection still writes
    assert s.item(item).text == "a text" and s._conn().execute("SELECT COUNT(*) FROM ratings").fetchone()[0] == 0


def test_the_app_opens_its_store_once(tmp_path, monkeypatch):
    from analysis.annotations import default_store

    monkeypatch.setenv("GRACE_DATA_DIR", str(tmp_path / "d"))
    first = default_store()
    assert default_store() is first
    monkeypatch.setenv("GRACE_DATA_DIR", str(tmp_path / "other"))
    assert default_store() is not first


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _rating_row(annotator, f, i, fl, **extra):
    return {"kind": "rating", "text": "t", "rationale": "r", "annotator": annotator, "faithfulness": f,
            "informativeness": i, "fluency": fl, **extra}


def test_an_import_that_changes_a_rating_keeps_the_old_one_in_history(tmp_path):
    from analysis.annotation_io import import_file

    s = _store(tmp_path)
    item, _ = s.add_item("t", "r")
    s.rate(item, "alice", faithfulness=5, informativeness=4, fluency=3, comment="mine")
    f = _write_jsonl(tmp_path / "in.jsonl", [_rating_row("alice", 1, 1, 1, comment="overwritten", rated=1.0,
                                                          updated=2.0)])
    assert import_file(s, f)["ratings"] == 1
    assert s.rating(item, "alice")["faithfulness"] == 1 and s.rating(item, "alice")["comment"] == "overwritten"
    (old,) = s.history(item, "alice")
    assert (old["faithfulness"], old["informativeness"], old["fluency"], old["comment"]) == (5, 4, 3, "mine")
    import_file(s, f)  # the same rating again changes nothing
    assert len(s.history(item, "alice")) == 1


BAD_VALUES = [
    ("similarity", "abc"), ("similarity", True), ("reward", "NaN"), ("reward", "Infinity"), ("step", -1),
    ("step", 1.5), ("step", "3"), ("step", True), ("paired_text", 5), ("source", ["a"]), ("source", "x" * 65),
    ("run", {"a": 1}), ("created", "yesterday"), ("rated", "-Infinity"), ("updated", [1]), ("comment", 5),
    ("hallucination", "yes"), ("text", "x" * 20_001), ("paired_text", "x" * 20_001),
    ("rationale", "x" * 20_001), ("comment", "x" * 2_001), ("annotator", 7), ("faithfulness", True),
]


@pytest.mark.parametrize("field,value", BAD_VALUES, ids=[f"{k}={str(v)[:12]}" for k, v in BAD_VALUES])
def test_import_refuses_values_of_the_wrong_type_or_size(tmp_path, field, value):
    from analysis.annotation_io import import_file

    s = _store(tmp_path)
    row = json.dumps({**_rating_row("ann", 3, 3, 3), field: "PLACEHOLDER"}).replace(
        '"PLACEHOLDER"', value if value in ("NaN", "Infinity", "-Infinity") else json.dumps(value))
    f = _write_jsonl(tmp_path / "in.jsonl", [{"text": "good", "rationale": "r"}, row])
    with pytest.raises(AnnotationError, match=rf"1 bad line\(s\), nothing imported: line 2: .*{field}"):
        import_file(s, f)
    assert s.count_items() == 0 and s.ratings() == []


def test_csv_import_refuses_non_finite_numbers_by_line(tmp_path):
    from analysis.annotation_io import import_file

    f = tmp_path / "in.csv"
    f.write_text("kind,text,rationale,similarity,step\nitem,a,r,0.5,2\nitem,b,r,nan,1\nitem,c,r,0.1,-4\n")
    with pytest.raises(AnnotationError, match=r"line 3: 'similarity' must be a finite number.*; line 4: 'step'"):
        import_file(_store(tmp_path), f)


def test_an_import_of_too_many_rows_is_refused_whole(tmp_path):
    from analysis.annotation_io import MAX_IMPORT_ROWS, import_file

    s = _store(tmp_path)
    f = _write_jsonl(tmp_path / "big.jsonl", [{"text": f"t{k}", "rationale": "r"} for k in range(MAX_IMPORT_ROWS + 1)])
    with pytest.raises(AnnotationError, match="more than 5,000 rows; an import takes at most 5,000 rows, nothing imported"):
        import_file(s, f, max_rows=MAX_IMPORT_ROWS)
    assert s.count_items() == 0
    assert import_file(s, f)["items_added"] == MAX_IMPORT_ROWS + 1  # the CLI's import has no limit


def test_rate_bounds_comments_and_refuses_odd_scores(tmp_path):
    s = _store(tmp_path)
    item, _ = s.add_item("t", "r")
    with pytest.raises(AnnotationError, match="A comment is at most 2,000 characters"):
        s.rate(item, "ann", faithfulness=3, informativeness=3, fluency=3, comment="x" * 2_001)
    with pytest.raises(AnnotationError, match="A comment is text"):
        s.rate(item, "ann", faithfulness=3, informativeness=3, fluency=3, comment=["x"])
    for bad in (True, float("inf"), float("nan"), 10**400, "abc", [3], 2.5):
        with pytest.raises(AnnotationError, match="faithfulness"):
            s.rate(item, "ann", faithfulness=bad, informativeness=3, fluency=3)
    with pytest.raises(AnnotationError, match="annotator name is text"):
        s.rate(item, 5, faithfulness=3, informativeness=3, fluency=3)
    s.rate(item, "ann", faithfulness=3, informativeness=3, fluency=3, comment="x" * 2_000)
    assert s.progress("ann") == (1, 1)


GUEST = {"id": "anon:abc", "name": "guest:abc", "signed_in": False}


def _panel_note(out):
    return out[9]


def test_the_annotate_tab_in_public_mode_rates_as_the_visitor(tmp_path, monkeypatch):
    monkeypatch.setenv("GRACE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GRACE_PUBLIC", "1")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))  # the files below stand for uploads
    from analysis.annotations import default_store
    from grace.ui.annotate_tab import back, identity_name, import_items, save, skip, start, summary_view

    store = default_store()
    ids = [store.add_item(f"text {k}", f"rationale {k}", source="import")[0] for k in range(2)]
    store.rate(ids[0], "alice", faithfulness=5, informativeness=5, fluency=5, comment="alice's secret")
    assert identity_name(GUEST)["value"] == "guest:abc"
    assert start("alice", False, {"token": "t", "who": GUEST})[-1] == "anon:abc"  # the page State works too
    panel = start("alice", False, GUEST)  # the typed name is ignored; the key is the full id, the page shows the name
    assert panel[-1] == "anon:abc" and panel[0] == ids[0] and panel[8] == "" and "guest:abc" in panel[10]
    out = save(ids[0], "alice", 1, 1, 1, False, "", False, GUEST)
    assert "Saved" in _panel_note(out)
    assert store.rating(ids[0], "alice")["faithfulness"] == 5 and store.history(ids[0], "alice") == []
    assert store.rating(ids[0], "anon:abc")["faithfulness"] == 1 and store.rating(ids[0], "guest:abc") is None
    # without an identity (a bare API call) every handler answers in one line
    for out in (start("alice", False, None), save(ids[1], "alice", 1, 1, 1, False, "", False, None),
                skip(ids[1], "alice", False, None), back(ids[1], "alice", None)):
        assert "no visitor identity" in _panel_note(out) and out[0] is None
    assert "no visitor identity" in import_items(str(tmp_path), "alice", None)[0]
    assert store.rating(ids[1], "alice") is None
    # values no page sends are refused in one line
    for out in (save("1; DROP", "x", 1, 1, 1, False, "", False, GUEST),
                save(ids[1], "x", "abc", 1, 1, False, "", False, GUEST),
                save(ids[1], "x", 1, 1, 1, "yes", "", False, GUEST), save(ids[1], "x", 1, 1, 1, False, 5, False, GUEST),
                save(10**30, "x", 1, 1, 1, False, "", False, GUEST), skip(ids[0], "x", "on", GUEST),
                back([1], "x", GUEST), save(999, "x", 1, 1, 1, False, "", False, GUEST)):
        assert _panel_note(out).startswith("⚠️") and "\n" not in _panel_note(out)
    assert store.rating(ids[1], "anon:abc") is None
    assert summary_view(["a"], None)[0].startswith("⚠️")
    # an import may bring items, and ratings by the importing visitor only
    f = _write_jsonl(tmp_path / "in.jsonl", [{"text": "new", "rationale": "r"}, _rating_row("alice", 1, 1, 1),
                                            _rating_row("guest:abc", 2, 2, 2)])
    msg, _ = import_items(str(f), "alice", GUEST)
    assert "1 bad line" in msg and "line 2:" in msg and "only your own ratings" in msg and "line 3" not in msg
    assert store.count_items() == 2 and store.rating(ids[0], "alice")["faithfulness"] == 5
    _write_jsonl(f, [{"text": "new", "rationale": "r"}, _rating_row("guest:abc", 2, 2, 2)])
    assert import_items(str(f), None, GUEST)[0].startswith("Imported 2 new item")
    rated = next(it.id for it in store.items() if it.text == "t")
    # a rating by the name the page shows is stored under the full id, in the importer's own queue
    assert store.rating(rated, "anon:abc")["faithfulness"] == 2 and store.rating(rated, "alice") is None
    assert store.rating(rated, "guest:abc") is None and store.item(rated).owner == "anon:abc"


def test_the_annotate_tab_shows_names_and_messages_as_text(tmp_path, monkeypatch):
    monkeypatch.setenv("GRACE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("GRACE_PUBLIC", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    from analysis.annotations import default_store
    from grace.ui.annotate_tab import import_items, save, start, summary_view

    evil, other = "![x](http://evil/img.png)", "<img src=x onerror=alert(1)>"
    store = default_store()
    item, _ = store.add_item("t", "r")
    panel = start(evil, False)  # locally the typed name is the annotator, as before
    assert panel[-1] == evil and "![" not in panel[10] and "\\!\\[x\\]" in panel[10]
    save(item, evil, 3, 3, 3, False, "", False)
    save(item, other, 4, 4, 4, False, "", False)
    text = summary_view(evil, other)[0]
    assert "by 2 annotator(s)" in text and "![" not in text and "<img" not in text and "&lt;img" in text
    f = _write_jsonl(tmp_path / "in.jsonl", [{"kind": "<b>", "text": "t", "rationale": "r"}])
    msg, _ = import_items(str(f), evil)
    assert "line 1" in msg and "<b>" not in msg and "![" not in msg


def test_faithfulness_against_the_measured_shift(tmp_path):
    """Items carry their rationale's measured shift; the summary correlates ratings with it
    (Spearman over the items that have one, with their number), and it survives export and import."""
    from analysis.agreement import summarise
    from analysis.annotation_io import import_file, write_export

    s = AnnotationStore(tmp_path / "a.sqlite")
    for i, (shift, faith) in enumerate([(0.01, 1), (0.05, 2), (0.2, 4), (0.3, 5), (None, 3)]):
        item, _ = s.add_item(f"t{i}", f"r{i}", source="explore", rationale_shift=shift)
        s.rate(item, "ann", faithfulness=faith, informativeness=3, fluency=3)
    d = summarise(s.ratings())["dimensions"]
    assert d["faithfulness"]["spearman_shift"] == pytest.approx(1.0) and d["faithfulness"]["n_shift"] == 4
    assert d["fluency"]["spearman_shift"] is None  # constant ratings: no correlation
    with pytest.raises(AnnotationError, match="rationale_shift is a number"):
        s.add_item("bad", "r", rationale_shift="high")
    for fmt in ("jsonl", "csv"):
        out = tmp_path / f"a.{fmt}"
        write_export(s, out)
        t = AnnotationStore(tmp_path / f"b-{fmt}.sqlite")
        import_file(t, out)
        assert sorted(i.rationale_shift or -1 for i in t.items()) == [-1, 0.01, 0.05, 0.2, 0.3]


# --- identity and ownership (#26 §4) ---

def test_migration_to_v4_keeps_old_short_names_nobodys_in_public_mode(tmp_path, monkeypatch):
    """A store of schema 3 whose public guests were keyed by 'guest:' + 8 hex: after the migration
    their ratings stay (statistics), and a visitor whose short name matches edits nothing of theirs."""
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "annotations.sqlite"
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:3]:
        conn.executescript(script)
    conn.executescript("INSERT INTO meta VALUES ('app', 'grace-studio-annotations');"
                       "INSERT INTO meta VALUES ('schema_version', '3');"
                       "INSERT INTO items (text, rationale, settings, source, created, content_hash)"
                       " VALUES ('t', 'r', '{}', 'explore', 1, 'h1');"
                       "INSERT INTO annotators (name, created) VALUES ('guest:1a2b3c4d', 1);"
                       "INSERT INTO ratings (item_id, annotator_id, faithfulness, informativeness, fluency, comment,"
                       " created, updated) VALUES (1, 1, 4, 4, 4, 'victim''s note', 1, 1);")
    conn.commit()
    conn.close()
    monkeypatch.setenv("GRACE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("GRACE_PUBLIC", "1")
    from analysis.annotations import default_store
    from grace.ui.annotate_tab import save, start

    s = default_store()
    assert s.schema_version() == SCHEMA_VERSION == 4
    assert s.display_names() == {"guest:1a2b3c4d": "guest:1a2b3c4d"} and len(s.ratings()) == 1
    collider = {"id": "anon:" + "9" * 20, "name": "guest:1a2b3c4d", "signed_in": False}  # the same short name
    panel = start(None, False, collider)
    assert panel[8] == "" and "victim" not in json.dumps(panel)  # the old rating is not shown as theirs
    save(1, None, 1, 1, 1, False, "overwritten", False, collider)
    store = s
    assert store.rating(1, "guest:1a2b3c4d")["comment"] == "victim's note"
    assert store.rating(1, collider["id"])["comment"] == "overwritten"


def test_an_owned_item_is_only_in_its_owners_queue(tmp_path):
    s = _store(tmp_path)
    shared, _ = s.add_item("shared text", "r")
    (mine, new), = s.add_items([{"text": "alice's text", "rationale": "r"}], owner="anon:alice")
    assert new and s.item(mine).owner == "anon:alice"
    (copy, new), = s.add_items([{"text": "alice's text", "rationale": "r"}], owner="anon:bob")
    assert new and copy != mine  # bob's copy, not "already there" (which would say alice sent it)
    assert s.next_item("anon:bob").id == shared
    s.rate(shared, "anon:bob", faithfulness=3, informativeness=3, fluency=3)
    assert s.next_item("anon:bob").id == copy and s.progress("anon:bob") == (1, 2)
    with pytest.raises(AnnotationError, match=f"No item {mine}"):
        s.item(mine, "anon:bob")
    with pytest.raises(AnnotationError, match=f"No item {mine}"):
        s.rate(mine, "anon:bob", faithfulness=1, informativeness=1, fluency=1)
    assert s.next_item("anon:alice").id == shared and s.item(mine, "anon:alice").text == "alice's text"
    assert s.next_item("local name").id == shared and s.progress("local name") == (0, 1)


def test_an_import_changes_only_the_importers_rows_by_full_id(tmp_path):
    from analysis.annotation_io import import_file

    s = _store(tmp_path)
    item, _ = s.add_item("t", "r")
    s.rate(item, "anon:victim", faithfulness=5, informativeness=5, fluency=5, display="guest:1a2b3c4d")
    f = _write_jsonl(tmp_path / "in.jsonl", [_rating_row("anon:victim", 1, 1, 1), _rating_row("guest:1a2b3c4d", 1, 1, 1)])
    with pytest.raises(AnnotationError, match="only your own ratings"):
        import_file(s, f, annotator="anon:mallory", aliases=("guest:1a2b3c4d",), owner="anon:mallory")
    assert s.rating(item, "anon:victim")["faithfulness"] == 5
    _write_jsonl(f, [_rating_row("guest:1a2b3c4d", 2, 2, 2)])  # the name mallory's page shows
    res = import_file(s, f, annotator="anon:mallory", aliases=("guest:1a2b3c4d",), owner="anon:mallory")
    assert res["ratings"] == 1 and s.rating(item, "anon:victim")["faithfulness"] == 5
    assert s.rating(item, "guest:1a2b3c4d") is None  # stored under mallory's id, in her own queue
    assert [r["annotator"] for r in s.ratings() if r["faithfulness"] == 2] == ["anon:mallory"]
