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
