import json

import pytest

from grace.training.data import SAMPLE_PASSAGES, SAMPLE_TRIPLETS, load_passages, load_triplets
from grace.files.textio import InputError


def test_sample_assets_are_valid():
    t = load_triplets(SAMPLE_TRIPLETS)
    assert len(t.records) >= 48 and all(r.negatives for r in t.records)
    assert len({r.query for r in t.records}) == len(t.records)
    p = load_passages(SAMPLE_PASSAGES)
    assert len(p.records) >= 100
    assert "48 triplets loaded" in t.summary()


def test_triplet_formats(tmp_path):
    f = tmp_path / "t.jsonl"
    rows = [{"query": "q1", "positive": "p1", "negatives": ["n1", "n2"]},
            {"query": "q2", "positive": "p2", "negative": "n3"},
            {"query": "q3", "pos": ["p3"], "neg": ["n4"]}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recs = load_triplets(f).records
    assert [r.negatives for r in recs] == [["n1", "n2"], ["n3"], ["n4"]]
    assert recs[2].positive == "p3"


def test_bad_records_are_named_by_line(tmp_path):
    f = tmp_path / "t.jsonl"
    lines = [json.dumps({"query": "q", "positive": "p", "negatives": ["n"]}),
             json.dumps({"query": "q", "negatives": ["n"]}),
             json.dumps({"query": "", "positive": "p", "negatives": ["n"]}),
             json.dumps({"query": "q2", "positive": 3, "negatives": ["n"]}),
             json.dumps({"query": "q", "positive": "p", "negatives": ["n"]}),
             "{oops"]
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as exc:
        load_triplets(f)
    msg = str(exc.value)
    for part in ("line 2: missing field 'positive'", "line 3: field 'query' is empty",
                 "line 4: field 'positive' is a int", "line 5: duplicate", "line 6: not valid JSON", "--skip-bad"):
        assert part in msg
    rep = load_triplets(f, skip_bad=True)
    assert len(rep.records) == 1 and [n for n, _ in rep.bad] == [2, 3, 4, 5, 6]
    assert "5 bad line(s) skipped" in rep.summary()


def test_passages(tmp_path):
    f = tmp_path / "p.txt"
    f.write_text("one\ntwo\n\none\n")
    with pytest.raises(InputError, match="line 3: empty passage; line 4: duplicate"):
        load_passages(f)
    j = tmp_path / "p.jsonl"
    j.write_text('{"text": "a"}\n{"text": "b"}\n')
    assert load_passages(j).records == ["a", "b"]


def test_jsonl_lines_keep_unicode_line_separators(tmp_path):
    """U+2028, U+2029, U+0085, form feed and vertical tab are legal inside one JSON line."""
    import json

    from grace.files.textio import read_lines, read_texts

    texts = ["one\u2028two", "three\u0085four", "five\u2029six\x0c\x0bseven", "plain"]
    f = tmp_path / "t.jsonl"
    f.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    assert read_texts(f) == texts
    assert len(read_lines(f)) == 4
    triplets = tmp_path / "tr.jsonl"
    triplets.write_text(json.dumps({"query": "q\u2028x", "positive": "p\u0085y", "negatives": ["n"]},
                                   ensure_ascii=False) + "\r\n", encoding="utf-8")
    rec = load_triplets(triplets).records[0]
    assert (rec.query, rec.positive) == ("q\u2028x", "p\u0085y")


def test_corpus_csv_reports_the_physical_line(tmp_path):
    from grace.files.textio import read_corpus

    f = tmp_path / "c.csv"
    f.write_text('text,label\n"a cell\nover two lines",x\n"",y\n')
    with pytest.raises(InputError, match="line 4: empty text"):
        read_corpus(f)
