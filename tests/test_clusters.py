import math

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from analysis.clusters import HEADERS, choose_k, cluster_map, ctfidf


def test_ctfidf_equals_the_hand_computed_weights():
    docs = ["cats purr cats", "dogs purr", "stocks crash"]
    weights, vocab = ctfidf(docs, np.array([0, 0, 1]), 2)
    w = dict(zip(vocab, weights[0])), dict(zip(vocab, weights[1]))
    # cluster 0: cats 2, purr 2, dogs 1 of 5 words; cluster 1: stocks 1, crash 1 of 2; A = 7 / 2
    assert w[0]["cats"] == pytest.approx(2 / 5 * math.log(1 + 3.5 / 2))
    assert w[0]["dogs"] == pytest.approx(1 / 5 * math.log(1 + 3.5 / 1))
    assert w[1]["crash"] == pytest.approx(1 / 2 * math.log(1 + 3.5 / 1))
    assert w[1]["cats"] == 0 and w[0]["stocks"] == 0


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 16)) * 5
    x = np.concatenate([c + rng.normal(size=(10, 16)) * 0.3 for c in centres])
    truth = np.repeat([0, 1, 2], 10)
    words = ["volcano lava", "violin melody", "tax budget"]
    rationales = [f"about {words[t]} and things" for t in truth]
    return x / np.linalg.norm(x, axis=1, keepdims=True), truth, rationales


def test_three_blobs_give_three_clusters_named_by_their_rationales():
    x, truth, rationales = _blobs()
    c = cluster_map(x, rationales, [f"text {i}" for i in range(30)])
    assert c.k == 3 and adjusted_rand_score(truth, c.assignment) == 1.0 and c.source == "rationales"
    for t, word in enumerate(["volcano", "violin", "tax"]):
        assert word in c.names[int(c.assignment[truth == t][0])]
    assert all("things" not in n for n in c.names)  # shared by every cluster: not distinctive
    table = c.table([f"text {i}" for i in range(30)], x)
    assert [r[1] for r in table] == [10, 10, 10] and len(table[0]) == len(HEADERS)
    coords = np.stack([truth * 10.0, np.zeros(30)], 1)
    assert sorted(x for x, _ in c.centres(coords)) == [0.0, 10.0, 20.0]


def test_no_rationales_names_by_the_texts_and_too_few_points_is_refused():
    x, truth, _ = _blobs()
    texts = [["lava", "melody", "budget"][t] + f" {i}" for i, t in enumerate(truth)]
    c = cluster_map(x, [""] * 30, texts)
    assert c.source == "texts" and any("lava" in n for n in c.names)
    with pytest.raises(ValueError, match="at least 6"):
        choose_k(x[:5])
