import json
from pathlib import Path

import pytest

from grace.evaluation.cache import RationaleCache
from grace.evaluation.mteb_adapter import EvalError, compare_table, evaluate, resolve_tasks
from grace.model.settings import EncodeSettings
from grace.evaluation.wordnet import WordNetMissing, find_wordnet, load_wordnet, parse_gloss

FIXTURE = Path(__file__).parent / "fixtures" / "wordnet"


def test_wordnet_parser_on_a_fixture():
    wn = load_wordnet(FIXTURE, pos="nva")
    assert set(wn) == {"n00000100", "n00000200", "n00000300", "n00000400", "v00000500", "v00000600", "a00000700"}
    dog = wn["n00000200"]
    assert dog.words == ["dog", "domestic dog"] and dog.lexname == "noun.animal"
    assert dog.definition == "a domesticated canine"
    assert dog.examples == ["the dog barked all night", "dogs love walks"]
    assert dog.hypernyms == ["n00000100", "n00000400"]  # @ and @i
    assert wn["n00000400"].lexname == "noun.food" and wn["n00000400"].examples == []
    assert wn["v00000500"].lexname == "verb.motion" and wn["v00000500"].hypernyms == ["v00000600"]
    assert wn["a00000700"].pos == "a"  # satellite adjectives count as adjectives


def test_gloss_split():
    assert parse_gloss('to move; "he ran"; "she runs"') == ("to move", ["he ran", "she runs"])


def test_missing_wordnet_says_how_to_install(tmp_path):
    with pytest.raises(WordNetMissing, match="apt-get install wordnet-base"):
        find_wordnet(tmp_path)


def test_training_split_is_disjoint_from_every_evaluation_task():
    from grace.evaluation.offline_tasks import build_task_data, in_eval_pool, split_of, training_split

    triplets, passages = training_split(limit=None)
    assert triplets and passages
    assert all(split_of(t["synset"]) == "train" for t in triplets)
    texts_of = {}
    for size, split in (("quick", "test"), ("full", "test"), ("full", "validation")):
        d = build_task_data(size, split=split)
        eval_texts = ({t for _, t in d["retrieval"]["queries"]} | {t for _, t in d["retrieval"]["corpus"]}
                      | set(d["clustering"]["sentences"])
                      | {t for t, _ in d["classification"]["train"] + d["classification"]["test"]}
                      | {a for a, _, _ in d["pairs"]} | {b for _, b, _ in d["pairs"]})
        assert all(split_of(q) == split for q in d["retrieval"]["qrels"])
        assert all(in_eval_pool(q) == (split == "test") for q in d["retrieval"]["qrels"])
        train_texts = {t["query"] for t in triplets} | {t["positive"] for t in triplets} | set(passages)
        assert not eval_texts & train_texts
        assert build_task_data(size, split=split) == d  # deterministic
        texts_of[(size, split)] = {t for _, t in d["retrieval"]["queries"]}
    assert not texts_of[("full", "test")] & texts_of[("full", "validation")]


def test_adapter_on_mteb_mock_tasks(tiny_encoder, tmp_path):
    from mteb.mocks.mock_tasks.classification import MockClassificationTask
    from mteb.mocks.mock_tasks.clustering import MockClusteringTask
    from mteb.mocks.mock_tasks.retrieval import MockRetrievalTask
    from mteb.mocks.mock_tasks.sts import MockSTSTask

    settings = EncodeSettings(model="tiny", max_new_tokens=4)
    cache = RationaleCache(tmp_path / "r.sqlite")
    tasks = [MockRetrievalTask(), MockSTSTask(), MockClassificationTask(), MockClusteringTask()]
    r = evaluate(settings, tasks, encoder=tiny_encoder, cache=cache)
    assert set(r["categories"]) == {"Retrieval", "STS", "Classification", "Clustering"}
    # the average and the category figures are the task scores' means; the settings are saved
    scores = {name: t["score"] for name, t in r["tasks"].items()}
    assert r["average"] == pytest.approx(sum(scores.values()) / 4)
    assert r["categories"]["Retrieval"] == scores["MockRetrievalTask"]
    assert r["settings"] == settings.to_dict() and r["label"] == "tiny w/ reasoning [4 tokens]"
    generated = cache.count()
    assert generated > 0 and r["texts_encoded"] >= generated
    # a re-run generates nothing new and scores the same
    calls = []
    original = tiny_encoder.generate
    tiny_encoder.generate = lambda prompts, *a, **k: calls.append(len(prompts)) or original(prompts, *a, **k)
    try:
        again = evaluate(settings, [MockRetrievalTask(), MockSTSTask(), MockClassificationTask(),
                                    MockClusteringTask()], encoder=tiny_encoder, cache=cache)
    finally:
        tiny_encoder.generate = original
    assert calls == [] and cache.count() == generated
    assert {k: v["score"] for k, v in again["tasks"].items()} == {k: v["score"] for k, v in r["tasks"].items()}


def test_interrupted_encoding_resumes_from_the_cache(tiny_encoder, tmp_path):
    cache = RationaleCache(tmp_path / "r.sqlite")
    texts = ["one text", "two texts", "three texts here", "four"]
    settings = EncodeSettings(max_new_tokens=3, batch_size=2)
    first = tiny_encoder.rationales(texts[:2], tiny_encoder.build_prompts(texts[:2]), settings, cache=cache)
    calls = []
    original = tiny_encoder.generate
    tiny_encoder.generate = lambda prompts, *a, **k: calls.append(len(prompts)) or original(prompts, *a, **k)
    try:
        full = tiny_encoder.rationales(texts, tiny_encoder.build_prompts(texts), settings, cache=cache)
    finally:
        tiny_encoder.generate = original
    assert calls == [2] and full[:2] == first


def test_unknown_tasks_list_the_valid_ones():
    with pytest.raises(EvalError, match="Unknown task.*NoSuchTask.*WordNetRetrieval"):
        resolve_tasks("NoSuchTask")


def test_eval_and_compare_cli(tiny_model_dir, tmp_path, capsys):
    from grace.cli import main

    out1, out2 = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["eval", "--suite", "offline", "--quick", "--output", str(out1), "--model", str(tiny_model_dir),
                 "--max-new-tokens", "4"]) == 0
    assert main(["eval", "--suite", "WordNetRetrieval", "--quick", "--output", str(out2),
                 "--model", str(tiny_model_dir), "--no-rationale", "--label", "direct"]) == 0
    r1 = json.loads(out1.read_text())
    assert set(r1["categories"]) == {"Retrieval", "Clustering", "Classification", "PairClassification"}
    capsys.readouterr()
    table = tmp_path / "T.md"
    assert main(["compare", str(out1), str(out2), "--output", str(table)]) == 0
    text = table.read_text()
    assert "w/ reasoning" in text and "| direct |" in text and "Avg." in text
    assert main(["compare", str(tmp_path / "missing.json")]) == 2


def test_compare_table_shape():
    r = {"label": "X", "tasks": {"T": {"score": 0.5, "category": "STS"}}, "categories": {"STS": 0.5},
         "average": 0.5, "wall_seconds": 60}
    table = compare_table([r])
    assert "| X | 50.0 | 50.0 | 1 | 1.0 min |" in table


def test_limit_caps_the_offline_tasks():
    from grace.evaluation.offline_tasks import build_task_data, limited

    d = build_task_data(limited("full", 12))
    assert len(d["retrieval"]["queries"]) == 12 and len(d["pairs"]) == 12
    assert len(d["classification"]["test"]) <= 12


def test_mteb_tasks_offline_fail_in_one_sentence(monkeypatch):
    from grace.evaluation.mteb_adapter import check_datasets

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tasks = resolve_tasks("SciFact")
    with pytest.raises(EvalError) as exc:
        check_datasets(tasks)
    msg = str(exc.value)
    assert "SciFact (mteb/scifact)" in msg and "--suite offline" in msg and "\n" not in msg
