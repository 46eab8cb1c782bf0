import numpy as np
import pytest

from analysis.attributions import contributions


@pytest.mark.parametrize("pooling", ["mean", "text-mean", "rationale-mean", "last", "max"])
def test_contributions_sum_to_the_cosine(tiny_encoder, pooling):
    a, b = tiny_encoder.encode(["Where is Machu Picchu?", "The stock market fell."], max_new_tokens=6,
                               return_details=True, pooling=pooling)
    c = contributions(a, b)
    cos = float(a.embedding @ b.embedding)
    assert abs(c.cosine - cos) < 1e-5
    assert abs(c.a_values.sum() - cos) < 1e-5 and abs(c.b_values.sum() - cos) < 1e-5
    ta, tb = c.totals("a"), c.totals("b")
    assert abs(ta["text"] + ta["rationale"] - cos) < 1e-5
    if pooling == "text-mean":
        assert ta["rationale"] == 0.0 and tb["rationale"] == 0.0
    if pooling == "rationale-mean":
        assert ta["text"] == 0.0
    if pooling == "last":  # everything on the final token
        assert np.count_nonzero(c.a_values) == 1 and c.a_values[-1] != 0


def test_contributions_name_every_token(tiny_encoder):
    a, b = tiny_encoder.encode(["Machu Picchu", "Peru"], max_new_tokens=4, return_details=True)
    c = contributions(a, b)
    assert [t for t, _ in c.pairs("a")] == a.tokens
    assert len(c.pairs("b")) == len(b.tokens)


def test_minilm_baseline_same_shape():
    from grace.model.baseline import MiniLMEncoder

    m = MiniLMEncoder()
    embs = m.encode(["Where is Machu Picchu?", "Machu Picchu is an Inca citadel in Peru.", "Stocks fell today."])
    assert embs.shape == (3, 384) and embs.dtype == np.float32
    assert embs[0] @ embs[1] > embs[0] @ embs[2] + 0.3
    a, b = m.encode(["Where is Machu Picchu?", "Machu Picchu is in Peru."], return_details=True)
    c = contributions(a, b)
    assert abs(c.a_values.sum() - float(a.embedding @ b.embedding)) < 1e-5
    assert c.totals("a")["rationale"] == 0.0


def _results(tiny_encoder):
    texts = ["Where is Machu Picchu?", "Machu Picchu is an Inca citadel in Peru.", "Stocks fell sharply today.",
             "A dog runs in the park."]
    return tiny_encoder.encode(texts, max_new_tokens=6, return_details=True)


def test_pair_explanation_sums_to_the_difference(tiny_encoder):
    from analysis.contrast import explain_pair

    q, a, b, _ = _results(tiny_encoder)
    e = explain_pair(q, a, b)
    want = float(q.embedding @ a.embedding) - float(q.embedding @ b.embedding)
    assert e["difference"] == pytest.approx(want, abs=1e-5)
    assert sum(v for _, v in e["contributions"]["query"]) == pytest.approx(e["difference"], abs=1e-5)
    assert sum(v for _, v in e["contributions"]["a"]) == pytest.approx(e["cosine_a"], abs=1e-5)
    assert sum(v for _, v in e["contributions"]["b"]) == pytest.approx(e["cosine_b"], abs=1e-5)
    assert sum(e["query_segments"].values()) == pytest.approx(e["difference"], abs=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "text-mean", "max", "last"])
def test_centred_contributions_sum_to_the_centred_cosine(tiny_encoder, pooling):
    import numpy as np

    from analysis.contrast import centred_contributions, reference_embedding

    res = tiny_encoder.encode(["Where is Machu Picchu?", "Machu Picchu is in Peru.", "Stocks fell."],
                              max_new_tokens=6, return_details=True, pooling=pooling)
    q, a, b = res
    m = reference_embedding([a, b])
    c = centred_contributions(q, a, m)
    ua, ub = q.embedding - m, a.embedding - m
    want = float(ua @ ub / (np.linalg.norm(ua) * np.linalg.norm(ub)))
    assert c.cosine == pytest.approx(want, abs=1e-5)
    assert float(np.sum(c.a_values)) == pytest.approx(c.cosine, abs=1e-5)
    assert float(np.sum(c.b_values)) == pytest.approx(c.cosine, abs=1e-5)


def test_rationale_ablation_rescoring_matches_the_what_if_path(tiny_encoder):
    import numpy as np

    from analysis.contrast import ablate_rationale, rationale_pieces
    from grace.model.settings import EncodeSettings

    r = " history\nKeywords: Machu Picchu, Peru. It is old!"
    assert [r[a:b] for a, b in rationale_pieces(r)] == [" history", "Keywords:", " Machu Picchu,", " Peru.",
                                                        " It is old!"]
    s = EncodeSettings(max_new_tokens=6)
    q, d = tiny_encoder.encode(["Where is Machu Picchu?", "Machu Picchu is an Inca citadel in Peru."], s,
                               return_details=True)
    out = ablate_rationale(tiny_encoder, s, q, d)
    pieces = rationale_pieces(d.rationale)
    assert pieces and len(out["pieces"]) == len(pieces)
    a, b = out["pieces"][0]["span"]
    kept = d.rationale[:a] + d.rationale[b:]
    again = tiny_encoder.encode([d.text], s, rationales=[kept])[0]
    assert out["pieces"][0]["cosine"] == pytest.approx(float(np.dot(q.embedding, again)), abs=1e-5)
    assert [r["change"] for r in out["pieces"]] == sorted(r["change"] for r in out["pieces"])
    no_rat = tiny_encoder.encode([d.text], s, rationales=[""])[0]
    assert out["text_only"] == pytest.approx(float(np.dot(q.embedding, no_rat)), abs=1e-5)
