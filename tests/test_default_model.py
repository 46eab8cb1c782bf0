"""The embedded Gemma 3 270M for real: load, a short greedy rationale, a sensible ranking."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # loads the real 270M model (converted once, then ~3 s to load)


def test_default_model_ranks_a_paraphrase_above_an_unrelated_text(default_encoder):
    texts = ["Where is Machu Picchu?", "Machu Picchu is an Inca citadel in the Andes of Peru.",
             "The stock market fell sharply today."]
    res = default_encoder.encode(texts, max_new_tokens=16, return_details=True)
    assert default_encoder.embedding_dim == 640
    assert all(r.embedding.shape == (640,) for r in res)
    assert all(r.rationale.strip() for r in res)
    assert len(res[0].rationale_ids) <= 16
    q, pos, neg = (r.embedding for r in res)
    assert q @ pos > q @ neg + 0.1
    direct = default_encoder.encode(texts, rationale=False)
    assert direct[0] @ direct[1] > direct[0] @ direct[2]
    assert not np.allclose(direct[0], q, atol=1e-3)


def test_the_shipped_adapter_loads_on_the_default_model_and_changes_its_embeddings(default_encoder):
    from pathlib import Path

    from grace.model.encoder import GraceEncoder
    from grace.ui.common import shipped_adapters

    shipped = shipped_adapters()
    assert shipped, "assets/adapters/ holds no adapter"
    for label, folder in shipped.items():
        assert (Path(folder) / "README.md").read_text().count("## ") >= 4  # the model card's sections
        tuned = GraceEncoder.from_pretrained("default", adapter=str(folder), device="cpu")
        texts = ["a small boat propelled by oars"]
        base = default_encoder.encode(texts, rationale=False)
        assert not np.allclose(base, tuned.encode(texts, rationale=False), atol=1e-4), label
