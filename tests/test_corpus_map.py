"""The Map's computation: neighbours, alignment of two maps, search, and the embedding cache."""

import numpy as np
import pytest

from analysis.corpus_map import align, embed_corpus, neighbours, search
from grace.files.cancel import Cancelled
from grace.model.settings import EncodeSettings


def test_align_undoes_a_rotation_reflection_scale_and_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(30, 2))
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]) @ np.diag([1, -1])
    moved = 3.0 * ref @ rot + np.array([5.0, -2.0])
    assert np.allclose(align(ref, moved), ref, atol=1e-9)


def test_neighbours_are_by_cosine_and_exclude_the_item():
    e = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.6, 0.8]], dtype=float)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    got = neighbours(e, 0, k=2)
    assert [j for j, _ in got] == [1, 3] and got[0][1] == pytest.approx(float(e[0] @ e[1]))


def test_search_is_case_insensitive_and_empty_finds_nothing():
    texts = ["The Andes", "andes mountains", "Peru"]
    assert search(texts, "ANDES") == [0, 1] and search(texts, "  ") == []


class _Counting:
    def __init__(self):
        self.calls = 0

    def encode(self, texts, settings, return_details=True, rationales=None):
        from types import SimpleNamespace

        if rationales is not None:  # the text-only pass of the rationale shift (nothing generated)
            assert rationales == [""] * len(texts)
            return np.tile([1.0, 0.0, 0.0], (len(texts), 1))
        self.calls += 1
        return [SimpleNamespace(rationale=f"r:{t}", embedding=np.ones(3) / np.sqrt(3)) for t in texts]


def test_embeddings_are_cached_by_settings_and_texts_and_a_cancel_caches_nothing():
    enc, s = _Counting(), EncodeSettings(max_new_tokens=7)
    texts = [f"t{i}" for i in range(20)]
    first = embed_corpus(enc, s, texts)
    assert enc.calls == 3 and first.rationales[0] == "r:t0"  # batches of 8
    assert first.shift == pytest.approx([1 - 1 / np.sqrt(3)] * 20)  # 1 - cos(with, without the rationale)
    assert embed_corpus(enc, s, texts) is first and enc.calls == 3  # from the cache
    assert embed_corpus(enc, s.direct(), texts).shift is None  # no rationale, no shift
    embed_corpus(enc, s.with_(max_new_tokens=8), texts)
    assert enc.calls == 9  # other settings: embedded again (after the direct-forward map's 3)
    with pytest.raises(Cancelled):
        embed_corpus(enc, s, texts[:19], should_stop=lambda: enc.calls >= 10)
    assert enc.calls == 10
    embed_corpus(enc, s, texts[:19])
    assert enc.calls == 13  # the cancelled corpus was not cached


def test_the_shift_is_measured_only_where_a_rationale_can_be_removed():
    from analysis.effect import measurable

    s = EncodeSettings()
    assert measurable(s) and not measurable(s.direct()) and not measurable(s.with_(model="minilm"))
    assert not measurable(s.with_(pooling="rationale-mean"))
