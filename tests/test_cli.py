import json
import subprocess
import sys

import pytest

from grace.cli import main


def _run(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_encode_txt_and_jsonl(tiny_model_dir, tmp_path, capsys):
    txt = tmp_path / "in.txt"
    txt.write_text("Machu Picchu is in Peru.\nStocks fell today.\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, _, err = _run(["encode", "--input", str(txt), "--output", str(out), "--model", str(tiny_model_dir),
                         "--max-new-tokens", "4"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == ["Machu Picchu is in Peru.", "Stocks fell today."]
    assert all(len(r["embedding"]) == 32 and r["rationale"] for r in rows)

    jl = tmp_path / "in.jsonl"
    jl.write_text('{"text": "one"}\n{"text": "two", "id": 3}\n', encoding="utf-8")
    code, _, _ = _run(["encode", "--input", str(jl), "--output", str(out), "--model", str(tiny_model_dir),
                       "--no-rationale"], capsys)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert code == 0 and [r["rationale"] for r in rows] == ["", ""]


def test_encode_resumes_without_redoing_finished_chunks(tiny_model_dir, tmp_path, capsys, monkeypatch):
    """A run stopped after two chunks of three goes on from the third when the same command runs
    again; the output equals an uninterrupted run's; another input under the same output is refused."""
    from grace.model.encoder import GraceEncoder

    txt = tmp_path / "in.txt"
    txt.write_text("".join(f"text number {i}\n" for i in range(5)), encoding="utf-8")
    whole, out = tmp_path / "whole.jsonl", tmp_path / "out.jsonl"
    args = ["--model", str(tiny_model_dir), "--max-new-tokens", "3", "--chunk-size", "2", "--batch-size", "2"]
    assert _run(["encode", "--input", str(txt), "--output", str(whole)] + args, capsys)[0] == 0
    real, generated = GraceEncoder.encode, []

    def dies_on_the_third_chunk(self, texts, *a, **k):
        if k.get("rationales") is None:  # a generating call (the shift's text-only pass is not one)
            if len(generated) == 2:
                raise KeyboardInterrupt  # the user presses Ctrl-C
            generated.append(list(texts))
        return real(self, texts, *a, **k)

    monkeypatch.setattr(GraceEncoder, "encode", dies_on_the_third_chunk)
    assert main(["encode", "--input", str(txt), "--output", str(out)] + args) == 130  # "interrupted"
    parts = tmp_path / "out.jsonl.parts"
    assert not out.exists() and sorted(p.name for p in parts.glob("chunk-*")) == ["chunk-000000.jsonl",
                                                                                  "chunk-000001.jsonl"]
    generated.clear()
    monkeypatch.setattr(GraceEncoder, "encode", lambda self, texts, *a, **k: (
        generated.append(list(texts)) if k.get("rationales") is None else None) or real(self, texts, *a, **k))
    resumed = [a if a != "2" or args[i - 1] != "--batch-size" else "1" for i, a in enumerate(args)]
    code, _, err = _run(["encode", "--input", str(txt), "--output", str(out)] + resumed, capsys)  # smaller batches
    assert code == 0 and "resuming: 2 of 3 chunks" in err and "5/5" in err  # the bar ends at every text
    assert generated == [["text number 4"]]  # only the unfinished chunk was generated
    assert out.read_text() == whole.read_text() and not parts.exists()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(0 < r["shift"] < 2 for r in rows)  # how far each rationale moved its text
    txt.write_text("other text\n", encoding="utf-8")
    parts.mkdir()
    (parts / "manifest.json").write_text('{"fingerprint": "x", "total": 1, "chunk_size": 2}')
    (parts / "chunk-000000.jsonl").write_text('{"text": "from the other run"}\n')
    code, _, err = _run(["encode", "--input", str(txt), "--output", str(out)] + args, capsys)
    assert code == 2 and "holds a run with another input" in err and err.count("\n") == 1  # before loading
    (parts / "chunk-000000.jsonl").unlink()  # a start that stopped before its first chunk: begins afresh
    code, _, err = _run(["encode", "--input", str(txt), "--output", str(out)] + args, capsys)
    assert code == 0 and [json.loads(x)["text"] for x in out.read_text().splitlines()] == ["other text"]


@pytest.mark.parametrize("content,message", [
    (b"", "the file is empty"),
    (b"fine\n   \nalso fine\n", "line 2: empty text"),
    (b"caf\xe9\n", "not UTF-8"),
    (b'{"text": "ok"}\n{"title": "no text"}\n', "line 2: no 'text' field"),
    (b'{"text": "ok"}\n{broken\n', "line 2: not valid JSON"),
])
def test_bad_input_files(tiny_model_dir, tmp_path, capsys, content, message):
    f = tmp_path / ("in.jsonl" if content.startswith(b"{") else "in.txt")
    f.write_bytes(content)
    out = tmp_path / "out.jsonl"
    code, _, err = _run(["encode", "--input", str(f), "--output", str(out), "--model", str(tiny_model_dir)],
                        capsys)
    assert code == 2
    assert message in err and err.count("\n") == 1 and err.startswith("error:")
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_bad_options(tiny_model_dir, tmp_path, capsys):
    f = tmp_path / "in.txt"
    f.write_text("hello\n")
    base = ["encode", "--input", str(f), "--output", str(tmp_path / "o.jsonl"), "--model", str(tiny_model_dir)]
    code, _, err = _run(base + ["--adapter", str(tmp_path / "missing")], capsys)
    assert code == 2 and "Adapter folder not found" in err
    with pytest.raises(SystemExit) as exc:
        main(base + ["--pooling", "median"])
    assert exc.value.code == 2
    code, _, err = _run(["similarity", "--query", " ", "--doc", "x", "--model", str(tiny_model_dir)], capsys)
    assert code == 2 and "The query is empty." in err


def test_similarity_json_contributions_sum(tiny_model_dir, capsys):
    code, out, _ = _run(["similarity", "--query", "Where is Machu Picchu?", "--doc", "Machu Picchu is in Peru.",
                         "--doc", "Stocks fell.", "--json", "--model", str(tiny_model_dir),
                         "--max-new-tokens", "5"], capsys)
    assert code == 0
    report = json.loads(out)
    cos = [d["cosine"] for d in report["docs"]]
    assert cos == sorted(cos, reverse=True)
    for d in report["docs"]:
        for side in ("query", "doc"):
            assert abs(sum(v for _, v in d["contributions"][side]) - d["cosine"]) < 1e-5
        assert abs(d["segments"]["text"] + d["segments"]["rationale"] - d["cosine"]) < 1e-5


def test_help_explains_options():
    out = subprocess.run([sys.executable, "-m", "grace", "encode", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for flag in ("--no-rationale", "--pooling", "--prompt", "--adapter", "--layer", "--seed"):
        assert flag in out.stdout


def test_vllm_backend_is_refused_on_cpu_in_one_line(tmp_path, capsys, tiny_model_dir):
    f = tmp_path / "t.txt"
    f.write_text("a text\n")
    code = main(["encode", "--input", str(f), "--output", str(tmp_path / "o.jsonl"), "--model", str(tiny_model_dir),
                 "--device", "cpu", "--backend", "vllm"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "error: vLLM generation runs on a CUDA GPU only; on CPU the encoder uses transformers."
    assert not (tmp_path / "o.jsonl").exists()


def test_similarity_explains_a_pair_centres_and_ablates(tiny_model_dir, capsys):
    docs = ["Machu Picchu is in Peru.", "Stocks fell.", "A dog runs in the park."]
    argv = ["similarity", "--query", "Where is Machu Picchu?", "--json", "--model", str(tiny_model_dir),
            "--max-new-tokens", "6", "--explain-pair", "3", "1", "--centred", "--ablate-rationale"]
    for d in docs:
        argv += ["--doc", d]
    code, out, _ = _run(argv, capsys)
    assert code == 0
    report = json.loads(out)
    by_input = {d["input"]: d for d in report["docs"]}
    assert [by_input[i]["text"] for i in (1, 2, 3)] == docs
    pair = report["pair"]
    assert (pair["a"], pair["b"]) == (3, 1)
    assert abs(pair["difference"] - (by_input[3]["cosine"] - by_input[1]["cosine"])) < 1e-5
    assert abs(sum(v for _, v in pair["contributions"]["query"]) - pair["difference"]) < 1e-5
    for d in report["docs"]:
        c = d["centred"]
        assert abs(sum(v for _, v in c["contributions"]["doc"]) - c["cosine"]) < 1e-5
        if d["rationale"]:
            assert "text_only" in d["ablation"] and "pieces" in d["ablation"]
    bad = ["similarity", "--query", "q", "--model", str(tiny_model_dir), "--max-new-tokens", "2",
           "--explain-pair", "1", "9"] + [x for d in docs for x in ("--doc", d)]
    code, _, err = _run(bad, capsys)
    assert code == 2 and "two different document numbers between 1 and 3" in err
