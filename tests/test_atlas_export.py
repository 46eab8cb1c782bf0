"""The Embedding Atlas export: exact neighbours (against scikit-learn), and a file the
``embedding-atlas`` package itself loads and reads the neighbour graph of."""

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from analysis.atlas_export import nearest, write_atlas


def _unit(n=300, d=16, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_neighbours_are_sklearns_exact_cosine_neighbours(monkeypatch):
    import analysis.atlas_export as ae

    monkeypatch.setattr(ae, "BLOCK", 64)  # several blocks, the last one short
    x = _unit()
    ids, dist = nearest(x, k=6)
    ref_d, ref_i = NearestNeighbors(n_neighbors=6, metric="cosine", algorithm="brute").fit(x).kneighbors(x)
    assert (ids[:, 0] == np.arange(len(x))).all() and (dist[:, 0] == 0).all()
    assert (ids == ref_i).all() and dist == pytest.approx(ref_d, abs=1e-5)


def test_the_export_loads_in_embedding_atlas(tmp_path):
    pytest.importorskip("embedding_atlas", reason="embedding-atlas is a test dependency (requirements.txt)")
    from embedding_atlas.cli import determine_and_load_data
    from embedding_atlas.graph_metrics import compute_degree_columns, compute_pagerank_column

    x = _unit(n=120)
    coords = x[:, :2] * 10
    texts = [f"text {i}" for i in range(120)]
    path, labels, command = write_atlas(tmp_path / "map.parquet", texts=texts, rationales=[f"r{i}" for i in range(120)],
                                        coords=coords, embeddings=x, columns={"shift": np.linspace(0, 1, 120)},
                                        labels=[(1.0, 2.0, "1: cats"), (3.0, 4.0, "2: stocks")], k=5)
    assert command == ("embedding-atlas map.parquet --text text --x x --y y --neighbors neighbors "
                       "--labels map-labels.parquet")
    df = determine_and_load_data(str(path))
    assert list(df["text"]) == texts and df["x"].to_numpy() == pytest.approx(coords[:, 0])
    assert list(df["neighbors"][7]["ids"])[0] == 7 and len(df["neighbors"][7]["distances"]) == 5
    rank = np.asarray(compute_pagerank_column(df, neighbors="neighbors"))
    assert rank.shape == (120,) and np.isfinite(rank).all() and rank.sum() == pytest.approx(1.0, rel=1e-3)
    in_deg, out_deg, _ = compute_degree_columns(df, neighbors="neighbors")
    assert np.asarray(in_deg).sum() == np.asarray(out_deg).sum() > 0
    lab = determine_and_load_data(str(labels))
    assert list(lab["text"]) == ["1: cats", "2: stocks"] and list(lab["x"]) == [1.0, 3.0]
