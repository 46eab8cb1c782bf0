"""Offline evaluation tasks built from WordNet 3.0, in MTEB's own task classes and formats.

Real text nobody on the project wrote: glosses (definitions), example sentences, the 45
lexicographer classes and hypernym relations. Synsets are split once, deterministically, into
an evaluation (test) pool, a validation pool (for tuning: prompts, settings, training sweeps) and
a training pool; no synset is in two of them (see ``split_of`` and ``training_split``).

- Retrieval: query = a synset's definition; corpus = example sentences of many synsets;
  relevant = that synset's examples (nDCG@10).
- Clustering: definitions clustered by lexicographer file (V-measure).
- Classification: definition -> lexicographer file (MTEB's logistic-regression protocol, accuracy).
- Pair classification: definitions of two hypernym siblings (label 1) vs of two synsets of the
  same lexicographer file with no shared hypernym (label 0) (average precision of cosine).
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass
from functools import lru_cache

from .wordnet import Synset, load_wordnet


@dataclass(frozen=True)
class SuiteSize:
    retrieval_queries: int
    retrieval_corpus: int
    clustering: int
    classification_train: int
    classification_test: int
    pairs: int


SIZES = {
    "quick": SuiteSize(retrieval_queries=8, retrieval_corpus=24, clustering=24, classification_train=24,
                       classification_test=16, pairs=12),
    "full": SuiteSize(retrieval_queries=100, retrieval_corpus=300, clustering=240, classification_train=240,
                      classification_test=160, pairs=120),
}
# a few classes with many synsets that have examples: clusters and labels stay balanced
CLASSES = ["noun.animal", "noun.food", "noun.artifact", "noun.person", "noun.location", "noun.feeling",
           "verb.motion", "verb.communication", "verb.consumption", "verb.weather"]
EVAL_SHARE = 20  # percent of synsets in the evaluation (test) pool
VALIDATION_SHARE = 20  # percent in the validation pool; the rest is for training
SPLITS = ("test", "validation")


def split_of(synset_id: str) -> str:
    """Stable split by hash: 'test', 'validation' or 'train'; a synset is in exactly one."""
    h = zlib.crc32(synset_id.encode()) % 100
    return "test" if h < EVAL_SHARE else "validation" if h < EVAL_SHARE + VALIDATION_SHARE else "train"


def in_eval_pool(synset_id: str) -> bool:
    """In the evaluation (test) pool."""
    return split_of(synset_id) == "test"


@lru_cache(maxsize=2)
def _wordnet(path: str | None = None) -> dict[str, Synset]:
    return load_wordnet(path)


def _usable(s: Synset) -> bool:
    return 20 <= len(s.definition) <= 200 and len(s.words) >= 1


def _pool(wn: dict[str, Synset], split: str) -> list[Synset]:
    return [s for k, s in sorted(wn.items()) if split_of(k) == split and _usable(s)]


def _by_class(pool: list[Synset], per_class: int, rng: random.Random, need_examples: bool = False) -> list[Synset]:
    out = []
    for c in CLASSES:
        members = [s for s in pool if s.lexname == c and (s.examples or not need_examples)]
        rng.shuffle(members)
        out += members[:per_class]
    return out


def limited(size: str, limit: int | None) -> SuiteSize:
    """A suite size with every count capped at ``limit`` (at least 10 pairs and 2 per class)."""
    sz = SIZES[size]
    if not limit:
        return sz
    n = len(CLASSES)
    return SuiteSize(retrieval_queries=min(sz.retrieval_queries, limit),
                     retrieval_corpus=min(sz.retrieval_corpus, max(limit, 2 * min(sz.retrieval_queries, limit))),
                     clustering=min(sz.clustering, max(limit, 2 * n)),
                     classification_train=min(sz.classification_train, max(limit, 2 * n)),
                     classification_test=min(sz.classification_test, max(limit, n)),
                     pairs=min(sz.pairs, max(limit, 10)))


def build_task_data(size: str | SuiteSize = "quick", wordnet_dir: str | None = None, split: str = "test") -> dict:
    """The four tasks' data as plain Python (lists and dicts), deterministic for a size and a split
    ('test': the evaluation pool; 'validation': the pool for tuning). Long on purpose: the four
    tasks are built from one shuffled draw of WordNet, and keeping them in one function keeps that
    draw (and so each task's items) in one visible order."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}: use test or validation.")
    sz = SIZES[size] if isinstance(size, str) else size
    wn = _wordnet(wordnet_dir)
    pool = _pool(wn, split)
    rng = random.Random(1234)
    # retrieval: each query's synset contributes its examples; the rest of the corpus is distractors
    with_ex = [s for s in pool if s.examples and s.lexname in CLASSES]
    rng.shuffle(with_ex)
    queries = with_ex[:sz.retrieval_queries]
    corpus, qrels = [], {}
    for s in queries:
        qrels[s.id] = {}
        for j, e in enumerate(s.examples[:2]):
            corpus.append((f"{s.id}-{j}", e))
            qrels[s.id][f"{s.id}-{j}"] = 1
    for s in with_ex[sz.retrieval_queries:]:
        if len(corpus) >= sz.retrieval_corpus:
            break
        corpus.append((f"{s.id}-0", s.examples[0]))
    retrieval = {"queries": [(s.id, s.definition) for s in queries], "corpus": corpus, "qrels": qrels}
    # clustering and classification share definitions (and so the rationale cache)
    n_cls = len(CLASSES)
    per = (sz.classification_train + sz.classification_test) // n_cls
    picked = _by_class(pool, per, random.Random(99))
    train_ids = set()
    for c in CLASSES:
        members = [s for s in picked if s.lexname == c]
        train_ids |= {s.id for s in members[:sz.classification_train // n_cls]}
    classification = {
        "train": [(s.definition, CLASSES.index(s.lexname)) for s in picked if s.id in train_ids],
        "test": [(s.definition, CLASSES.index(s.lexname)) for s in picked if s.id not in train_ids],
    }
    clus = picked[:]
    random.Random(7).shuffle(clus)
    clus = clus[:sz.clustering]
    clustering = {"sentences": [s.definition for s in clus], "labels": [CLASSES.index(s.lexname) for s in clus]}
    # pair classification: hypernym siblings vs unrelated
    children: dict[str, list[Synset]] = {}
    for s in pool:
        for h in s.hypernyms:
            children.setdefault(h, []).append(s)
    parents = sorted(h for h, kids in children.items() if len(kids) >= 2)
    prng = random.Random(5)
    prng.shuffle(parents)
    pairs = []
    for h in parents[:sz.pairs // 2]:
        a, b = prng.sample(children[h], 2)
        pairs.append((a.definition, b.definition, 1))
    # negatives from the same lexicographer file but with no shared hypernym: harder than random
    by_lex: dict[str, list[Synset]] = {}
    for s in pool:
        by_lex.setdefault(s.lexname, []).append(s)
    lexes = sorted(k for k, v in by_lex.items() if len(v) >= 2)
    while len(pairs) < sz.pairs:
        a, b = prng.sample(by_lex[prng.choice(lexes)], 2)
        if not set(a.hypernyms) & set(b.hypernyms):
            pairs.append((a.definition, b.definition, 0))
    prng.shuffle(pairs)
    return {"retrieval": retrieval, "clustering": clustering, "classification": classification, "pairs": pairs}


def training_split(wordnet_dir: str | None = None, limit: int | None = None, seed: int = 0):
    """Triplets (query = definition, positive = example sentence, hard negatives = examples of
    hypernym siblings) and raw passages, from the training pool only (never test or validation)."""
    wn = _wordnet(wordnet_dir)
    pool = [s for s in _pool(wn, "train") if s.examples]
    # some glosses and examples are shared word for word by synsets in different pools: a text
    # that any test or validation synset uses never appears in training data
    held_out = {t for k, s in wn.items() if split_of(k) != "train" for t in [s.definition, *s.examples]}
    children: dict[str, list[Synset]] = {}
    for s in pool:
        for h in s.hypernyms:
            children.setdefault(h, []).append(s)
    triplets, passages = [], []
    for s in pool:
        siblings = [c for h in s.hypernyms for c in children.get(h, []) if c.id != s.id]
        if siblings and not {s.definition, s.examples[0], siblings[0].examples[0]} & held_out:
            triplets.append({"query": s.definition, "positive": s.examples[0],
                             "negatives": [siblings[0].examples[0]], "synset": s.id})
        if s.examples[0] not in held_out:
            passages.append(s.examples[0])
    rng = random.Random(seed)
    rng.shuffle(triplets)
    rng.shuffle(passages)
    if limit:
        triplets, passages = triplets[:limit], passages[:limit]
    return triplets, passages


# -- MTEB task classes over the data above ------------------------------------------------------
def _metadata(name: str, type_: str, main_score: str, description: str):
    from mteb.abstasks.task_metadata import TaskMetadata

    return TaskMetadata(
        name=name, type=type_, main_score=main_score, description=description,
        reference="https://wordnet.princeton.edu/", dataset={"path": "local/wordnet-3.0", "revision": "3.0"},
        category="t2t", eval_splits=["test"], eval_langs=["eng-Latn"], date=("2006-01-01", "2006-12-31"),
        dialect=[], domains=["Written"], task_subtypes=[], license="not specified",
        annotations_creators="expert-annotated", modalities=["text"], sample_creation="found",
        bibtex_citation="",
    )


def make_tasks(size: str = "quick", wordnet_dir: str | None = None, limit: int | None = None,
               split: str = "test") -> list:
    """MTEB task objects (retrieval, clustering, classification, pair classification); the
    validation split's tasks carry 'Validation' in their names."""
    from datasets import Dataset, DatasetDict
    from mteb.abstasks.classification import AbsTaskClassification
    from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
    from mteb.abstasks.pair_classification import AbsTaskPairClassification
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

    data = build_task_data(limited(size, limit), wordnet_dir, split)
    tag = ("" if size == "full" else size.capitalize()) + ("Validation" if split == "validation" else "")

    class WordNetRetrieval(AbsTaskRetrieval):
        metadata = _metadata(f"WordNetRetrieval{tag}", "Retrieval", "ndcg_at_10",
                             "Find a synset's example sentences from its definition.")

        def load_data(self, num_proc=None, **kwargs):
            r = data["retrieval"]
            split = RetrievalSplitData(
                queries=Dataset.from_list([{"id": i, "text": t} for i, t in r["queries"]]),
                corpus=Dataset.from_list([{"id": i, "text": t, "title": ""} for i, t in r["corpus"]]),
                relevant_docs=r["qrels"], top_ranked=None)
            self.dataset = {"default": {"test": split}}
            self.data_loaded = True

    class WordNetClustering(AbsTaskClusteringLegacy):
        metadata = _metadata(f"WordNetClustering{tag}", "Clustering", "v_measure",
                             "Cluster definitions by WordNet lexicographer file.")

        def load_data(self, num_proc=None, **kwargs):
            c = data["clustering"]
            self.dataset = DatasetDict({"test": Dataset.from_dict({"sentences": [c["sentences"]],
                                                                   "labels": [c["labels"]]})})
            self.data_loaded = True

    class WordNetClassification(AbsTaskClassification):
        metadata = _metadata(f"WordNetClassification{tag}", "Classification", "accuracy",
                             "Predict a definition's WordNet lexicographer file.")

        def load_data(self, num_proc=None, **kwargs):
            c = data["classification"]
            self.dataset = DatasetDict({
                split: Dataset.from_dict({"text": [t for t, _ in c[split]], "label": [y for _, y in c[split]]})
                for split in ("train", "test")})
            self.data_loaded = True

    class WordNetPairClassification(AbsTaskPairClassification):
        metadata = _metadata(f"WordNetPairClassification{tag}", "PairClassification", "similarity_ap",
                             "Are two definitions hypernym siblings (1) or unrelated (0)?")

        def load_data(self, num_proc=None, **kwargs):
            p = data["pairs"]
            self.dataset = DatasetDict({"test": Dataset.from_dict({
                "sentence1": [a for a, _, _ in p], "sentence2": [b for _, b, _ in p],
                "labels": [y for _, _, y in p]})})
            self.data_loaded = True

    return [WordNetRetrieval(), WordNetClustering(), WordNetClassification(), WordNetPairClassification()]
