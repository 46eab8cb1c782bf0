"""Evaluation: any GRACE configuration (or the MiniLM baseline) as an MTEB model, the offline
WordNet suite or real MTEB tasks, and the paper's comparison table (Table 1's shape).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..files.cancel import Cancelled
from ..model.settings import EncodeSettings

# the paper's 16-task ablation subset (arXiv 2510.04506, its ablation section)
MTEB_SUBSET = ["SciFact", "ArguAna", "NFCorpus", "StackOverflowDupQuestions", "SciDocsRR",
               "BiorxivClusteringS2S", "MedrxivClusteringS2S", "TwentyNewsgroupsClustering",
               "SprintDuplicateQuestions", "Banking77Classification", "EmotionClassification",
               "MassiveIntentClassification", "STS17", "SICK-R", "STSBenchmark", "SummEval"]
CATEGORY = {"Retrieval": "Retrieval", "Reranking": "Reranking", "Clustering": "Clustering",
            "PairClassification": "PairClassification", "Classification": "Classification", "STS": "STS",
            "Summarization": "Summarization"}
CATEGORY_ORDER = list(CATEGORY.values())


class EvalError(ValueError):
    """An evaluation that cannot run; the message says why in one sentence."""


class MtebModel:
    """Wraps an encoder for ``mteb.evaluate``: texts in, L2-normalised embeddings out.

    Rationales go through a ``RationaleCache`` so the same text in another task, or a re-run,
    is not generated again.
    """

    CHUNK = 64  # texts per encoder call: how soon a cancel request is seen

    def __init__(self, encoder, settings: EncodeSettings, cache=None, should_stop: Callable[[], bool] | None = None):
        from mteb.models.model_meta import ModelMeta

        self.encoder = encoder
        self.settings = settings
        self.cache = cache
        self.should_stop = should_stop
        self.texts_seen = 0
        n_params = sum(p.numel() for p in encoder.model.parameters()) if hasattr(encoder.model, "parameters") else None
        self.mteb_model_meta = ModelMeta(
            loader=None, name=f"grace-studio/{_slug(settings.label())}", revision=_revision(settings),
            release_date=None, languages=["eng-Latn"], n_parameters=n_params, memory_usage_mb=None,
            max_tokens=None, embed_dim=encoder.embedding_dim, license=None, open_weights=True,
            public_training_code=None, public_training_data=None, similarity_fn_name="cosine",
            framework=["PyTorch"], reference=None, use_instructions=False, training_datasets=None)

    def encode(self, inputs, *, task_metadata=None, hf_split=None, hf_subset=None, prompt_type=None, **kwargs):
        texts = [t for batch in inputs for t in batch["text"]]
        texts = [t if isinstance(t, str) and t.strip() else "(empty)" for t in texts]
        self.texts_seen += len(texts)
        out = []
        for start in range(0, len(texts), self.CHUNK):
            if self.should_stop and self.should_stop():
                raise Cancelled()
            out.append(self.encoder.encode(texts[start:start + self.CHUNK], self.settings, cache=self.cache))
        return np.concatenate(out) if out else np.zeros((0, self.encoder.embedding_dim), dtype=np.float32)

    def similarity(self, a, b):
        a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
        return _normalise(a) @ _normalise(b).T

    def similarity_pairwise(self, a, b):
        a, b = _normalise(np.asarray(a, dtype=np.float32)), _normalise(np.asarray(b, dtype=np.float32))
        return (a * b).sum(axis=1)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.clip(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12, None)


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s).strip("-").lower()


def _revision(settings: EncodeSettings) -> str:
    return settings.fingerprint()[:12]


# -- choosing tasks ---------------------------------------------------------------------------------
def offline_task_names() -> list[str]:
    return ["WordNetRetrieval", "WordNetClustering", "WordNetClassification", "WordNetPairClassification"]


def resolve_tasks(suite: str, quick: bool = False, wordnet_dir: str | None = None,
                  limit: int | None = None) -> list:
    """``offline`` (WordNet, the test pool), ``offline-validation`` (WordNet, the validation pool:
    tune on it), ``mteb-subset`` (the paper's 16 tasks) or TASK[,TASK...]. ``limit`` caps the size
    of each offline task."""
    from .offline_tasks import make_tasks

    size = "quick" if quick else "full"
    if suite in ("offline", "offline-validation"):
        return make_tasks(size, wordnet_dir, limit, split="validation" if suite == "offline-validation" else "test")
    names = MTEB_SUBSET if suite == "mteb-subset" else [n.strip() for n in suite.split(",") if n.strip()]
    offline = {t.metadata.name.removesuffix("Quick"): t for t in make_tasks(size, wordnet_dir, limit)} \
        if any(n in offline_task_names() for n in names) else {}
    import mteb

    tasks, unknown = [], []
    for n in names:
        if n in offline:
            tasks.append(offline[n])
            continue
        try:
            tasks.append(mteb.get_task(n))
        except (KeyError, ValueError):
            unknown.append(n)
    if unknown:
        raise EvalError(f"Unknown task(s) {', '.join(unknown)}: use offline, offline-validation, mteb-subset, "
                        f"{', '.join(offline_task_names())} or MTEB task names such as {', '.join(MTEB_SUBSET[:4])}.")
    return tasks


def check_datasets(tasks: list) -> None:
    """Load each task's data before any model runs; offline, name what could not be fetched."""
    failed = []
    for t in tasks:
        if getattr(t, "data_loaded", False):
            continue
        try:
            t.load_data()
        except Exception:  # hub errors come in many types
            failed.append(f"{t.metadata.name} ({t.metadata.dataset.get('path', '?')})")
    if failed:
        raise EvalError(f"Could not fetch the datasets of {len(failed)} task(s): {', '.join(failed)}; "
                        "they come from the Hugging Face Hub (offline, use --suite offline).")


# -- running and comparing --------------------------------------------------------------------------
def main_score(task_result) -> float:
    return float(task_result.get_score())


def evaluate(settings: EncodeSettings, tasks: list, *, encoder=None, cache=None,
             on_task: Callable[[str, float, float], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> dict:
    """Run the tasks; per-task main scores and seconds, category averages, the overall average.
    ``should_stop`` is asked before every chunk of texts; True raises ``Cancelled``."""
    import mteb

    from ..model.loading import load_encoder
    from .cache import RationaleCache

    settings.validate()
    check_datasets(tasks)
    started = time.perf_counter()
    if encoder is None:
        encoder = load_encoder(settings)
    if cache is None and settings.rationale and settings.model != "minilm":
        cache = RationaleCache()
    model = MtebModel(encoder, settings, cache, should_stop)
    per_task = {}
    for task in tasks:
        t0 = time.perf_counter()
        res = mteb.evaluate(model, task, cache=None, overwrite_strategy="always", show_progress_bar=False,
                            encode_kwargs={"batch_size": 10_000})
        tr = res.task_results[0]
        seconds = time.perf_counter() - t0
        name = task.metadata.name
        per_task[name] = {"score": main_score(tr), "main_score": task.metadata.main_score,
                          "category": CATEGORY.get(task.metadata.type, task.metadata.type), "seconds": seconds}
        if on_task:
            on_task(name, per_task[name]["score"], seconds)
    cats: dict[str, list[float]] = {}
    for r in per_task.values():
        cats.setdefault(r["category"], []).append(r["score"])
    return {"label": settings.label(), "settings": settings.to_dict(),
            "tasks": per_task, "categories": {c: float(np.mean(v)) for c, v in cats.items()},
            "average": float(np.mean([r["score"] for r in per_task.values()])),
            "wall_seconds": time.perf_counter() - started, "texts_encoded": model.texts_seen}


def compare_table(results: list[dict]) -> str:
    """Markdown in the shape of the paper's Table 1: rows = configurations, columns = categories + Avg."""
    if not results:
        raise EvalError("No result files to compare.")
    cats = [c for c in CATEGORY_ORDER if any(c in r["categories"] for r in results)]
    head = "| configuration | " + " | ".join(cats) + " | Avg. | tasks | wall time |"
    lines = [head, "|" + "---|" * (len(cats) + 4)]
    for r in results:
        cells = [f"{100 * r['categories'][c]:.1f}" if c in r["categories"] else "–" for c in cats]
        lines.append(f"| {r['label']} | " + " | ".join(cells) +
                     f" | {100 * r['average']:.1f} | {len(r['tasks'])} | {r['wall_seconds'] / 60:.1f} min |")
    tasks = sorted({t for r in results for t in r["tasks"]})
    lines += ["", "Main score per task (x100):", "", "| configuration | " + " | ".join(tasks) + " |",
              "|" + "---|" * (len(tasks) + 1)]
    for r in results:
        lines.append(f"| {r['label']} | " + " | ".join(
            f"{100 * r['tasks'][t]['score']:.1f}" if t in r["tasks"] else "–" for t in tasks) + " |")
    return "\n".join(lines) + "\n"


class LoadedResults(list):
    """Result dicts that loaded (a plain list of them, in the order given); ``skipped`` holds
    ``(path, reason)`` for each file that is not a readable results file."""

    def __init__(self, results=(), skipped=()):
        super().__init__(results)
        self.skipped: list[tuple[str, str]] = list(skipped)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _results_problem(data) -> str | None:
    """Why ``data`` is not a results dict that ``compare_table`` can show (None when it is)."""
    if not isinstance(data, dict) or "tasks" not in data or "categories" not in data:
        return "not a results file written by 'python -m grace eval'"
    tasks, cats = data["tasks"], data["categories"]
    if (not isinstance(data.get("label"), str) or not _number(data.get("average"))
            or not _number(data.get("wall_seconds")) or not isinstance(tasks, dict) or not isinstance(cats, dict)
            or not all(isinstance(t, dict) and _number(t.get("score")) for t in tasks.values())
            or not all(_number(v) for v in cats.values())):
        return "an incomplete or damaged results file"
    return None


def load_results(paths: list[str]) -> LoadedResults:
    """The results files in ``paths``; a file that cannot be read or is not a complete results file
    (cut by a crash, edited, another JSON file) is skipped and listed in ``.skipped`` with the reason,
    so one bad file never hides the others. Callers that must refuse bad files check ``.skipped``."""
    out = LoadedResults()
    for p in paths:
        try:
            data = json.loads(Path(p).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # ValueError: bad JSON or bad UTF-8
            out.skipped.append((str(p), f"not a results file ({exc.__class__.__name__})"))
            continue
        problem = _results_problem(data)
        if problem:
            out.skipped.append((str(p), problem))
        else:
            out.append(data)
    return out
