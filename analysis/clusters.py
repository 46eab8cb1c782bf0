"""Clusters of a map, named by the model's own rationales: k-means on the embeddings with k chosen
by the silhouette (scikit-learn), and each cluster labelled by the words that set its rationales
apart from the other clusters' (class-based TF-IDF). Offline: no model beyond the one that wrote
the rationales."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

MAX_K = 12
MIN_TEXTS = 6  # fewer cannot give 2 clusters of 3
BIG = 10_000  # above: MiniBatchKMeans
SILHOUETTE_SAMPLE = 3000  # points the silhouette is measured on (its cost grows with n squared)
HEADERS = ["cluster", "size", "label (its rationales' distinctive words)", "examples"]


@dataclass
class Clusters:
    assignment: np.ndarray  # [N] cluster of each point, 0..k-1
    names: list[str]  # per cluster: its top words
    silhouette: float  # of the chosen k
    source: str  # what the names were read from: "rationales" or "texts"

    @property
    def k(self) -> int:
        return len(self.names)

    def members(self, c: int) -> list[int]:
        return np.flatnonzero(self.assignment == c).tolist()

    def label_of(self, c: int) -> str:
        return f"{c + 1}: {self.names[c]}"

    def point_labels(self) -> list[str]:
        """Each point's cluster as the map's colour column."""
        return [self.label_of(int(c)) for c in self.assignment]

    def centres(self, coords: np.ndarray) -> list[tuple[float, float]]:
        """Where each cluster's label goes on a 2-d map: the median of its points (robust to the
        few a projection throws far out)."""
        return [tuple(float(v) for v in np.median(coords[self.assignment == c], axis=0)) for c in range(self.k)]

    def table(self, texts: Sequence[str], embeddings: np.ndarray, n_examples: int = 3,
              max_chars: int = 80) -> list[list]:
        """``HEADERS`` rows, largest cluster first; the examples are the texts nearest the cluster's
        mean (cosine on the embedding)."""
        rows = []
        for c in sorted(range(self.k), key=lambda c: -int((self.assignment == c).sum())):
            idx = np.asarray(self.members(c))
            mean = embeddings[idx].mean(0)
            near = idx[np.argsort(-(embeddings[idx] @ mean), kind="stable")[:n_examples]]
            rows.append([c + 1, len(idx), self.names[c], " · ".join(texts[i][:max_chars] for i in near)])
        return rows


def choose_k(embeddings: np.ndarray, *, max_k: int = MAX_K, seed: int = 0) -> tuple[np.ndarray, float]:
    """k-means for k = 2..max_k (never more than a third of the points; mini-batch k-means past BIG
    points); the assignment whose silhouette (cosine, on up to SILHOUETTE_SAMPLE points) is highest,
    and that silhouette."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.metrics import silhouette_score

    n = embeddings.shape[0]
    if n < MIN_TEXTS:
        raise ValueError(f"Clustering needs at least {MIN_TEXTS} texts (got {n}).")
    best, best_score = None, -2.0
    for k in range(2, max(2, min(max_k, n // 3)) + 1):
        if n > BIG:  # 100,000 texts: mini-batches (seconds a k) instead of full passes (a minute a k)
            labels = MiniBatchKMeans(n_clusters=k, n_init=1, batch_size=4096, random_state=seed).fit_predict(embeddings)
        else:
            labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(embeddings)
        if len(set(labels.tolist())) < 2:
            continue
        score = float(silhouette_score(embeddings, labels, metric="cosine",
                                       sample_size=min(n, SILHOUETTE_SAMPLE), random_state=seed))
        if score > best_score:
            best, best_score = labels, score
    if best is None:
        raise ValueError("These embeddings do not split into clusters (every point is the same).")
    return best, best_score


def ctfidf(docs: Sequence[str], assignment: np.ndarray, k: int) -> tuple[np.ndarray, list[str]]:
    """Class-based TF-IDF (as BERTopic defines it): each cluster's rationales joined into one
    document; a word's weight in cluster c is its frequency there (over the cluster's word count)
    times log(1 + A / f), A the mean word count per cluster and f the word's count over all
    clusters. Returns the [k, V] weights and the vocabulary. English stop words are left out."""
    from sklearn.feature_extraction.text import CountVectorizer

    joined = [" ".join(docs[i] for i in np.flatnonzero(assignment == c)) for c in range(k)]
    vec = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_][^\W\d_]+\b")
    try:
        counts = vec.fit_transform(joined).toarray().astype(float)
    except ValueError:  # no word at all (empty rationales)
        return np.zeros((k, 0)), []
    tf = counts / np.maximum(counts.sum(1, keepdims=True), 1.0)
    f = counts.sum(0)
    a = counts.sum() / k
    return tf * np.log1p(a / np.maximum(f, 1.0)), vec.get_feature_names_out().tolist()


def cluster_map(embeddings: np.ndarray, rationales: Sequence[str], texts: Sequence[str], *, top: int = 3,
                seed: int = 0) -> Clusters:
    """Cluster ``embeddings`` (``choose_k``) and name each cluster by its ``top`` c-TF-IDF words over
    the rationales (over the texts when there are none, as on a direct-forward map), among the words
    that weigh more there than their mean over the clusters."""
    assignment, score = choose_k(np.asarray(embeddings, dtype=np.float64), seed=seed)
    k = int(assignment.max()) + 1
    source = "rationales" if any(r.strip() for r in rationales) else "texts"
    weights, vocab = ctfidf(list(rationales) if source == "rationales" else list(texts), assignment, k)
    names = []
    # a word weighs more in a cluster than on average over all of them, or it does not set the
    # cluster apart (c-TF-IDF never reaches 0 for a word every cluster uses alike)
    above = weights > weights.mean(0, keepdims=True) if vocab else weights
    for c in range(k):
        order = np.argsort(-np.where(above[c], weights[c], -1.0), kind="stable")[:top] if vocab else []
        words = [vocab[j][:20] for j in order if above[c, j]]  # a run-on "word" stays legible on the map
        names.append(", ".join(words) or "(no words)")
    return Clusters(assignment, names, score, source)
