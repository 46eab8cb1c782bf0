"""GraceEncoder: a rationale-conditioned text encoder on a causal LM.

For a text x: build P(x), let the model write a rationale r ~ pi(. | P(x)), run the decoder
body over P(x) + r and mean-pool the hidden states of the text and rationale tokens (eq. 10-11).
The pooling itself is ``grace.model.embedding`` (one embedding path for the encoder, the
trainer's rewards and the evaluation adapter); what decides an embedding is one
``EncodeSettings``: its load-time fields when the encoder is loaded (``from_pretrained``, through
``grace.model.loading.load_encoder`` for every interface), all others on each ``encode`` call.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbone import Backbone, load_backbone
from .embedding import EmbedBatch, EncodeResult, embed_ids
from .generation import generate_rationales
from .prompts import PromptBuilder, PromptIds
from .settings import EncodeSettings, file_fingerprint, settings_key

MAX_TEXT_TOKENS = 512  # what the model reads of a text: a longer one is cut (with a warning), in training too
BACKENDS = ("transformers", "vllm")


class GraceEncoder:
    """Encode texts the GRACE way: rationale, then mean-pooled hidden states.

    >>> enc = GraceEncoder.from_pretrained("default", adapter="grace-wordnet-sup")
    >>> vecs = enc.encode(["Where is Machu Picchu?"], max_new_tokens=32, prompt="keywords")
    """

    def __init__(self, backbone: Backbone, settings: EncodeSettings | None = None, *, prompt=None,
                 generator=None, fast: bool = True, max_text_tokens: int = MAX_TEXT_TOKENS):
        """Usually made by ``from_pretrained``. ``settings``: what it was loaded with, and the defaults
        of an ``encode`` call that passes none (``prompt`` replaces their prompt)."""
        self.backbone = backbone
        self.fast = fast  # generate and embed in one pass (grace.model.fastgen) where the model allows
        self.generator = generator  # an alternative rationale generator (vLLM), or None for transformers
        self.model = backbone.model
        self.tokenizer = backbone.tokenizer
        base = settings or EncodeSettings(model=backbone.name, adapter=backbone.adapter)
        self.settings = base if prompt is None else base.with_(prompt=prompt)
        self._builders: dict = {}
        self.prompts = self.prompt_builder()  # the default prompt's builder
        self.max_text_tokens = max_text_tokens

    @classmethod
    def from_pretrained(cls, settings: EncodeSettings | str = "default", **fields) -> "GraceEncoder":
        """The constructor: the backbone, adapter, precision, device and generation backend that the
        load-time fields of ``settings`` name (an ``EncodeSettings``, or a model name; ``fields``
        change single fields). ``adapter`` is a folder, a training run or a shipped adapter's name.

        ``grace.model.loading.load_encoder`` (every interface's) calls this for any model but MiniLM."""
        s = settings if isinstance(settings, EncodeSettings) else EncodeSettings(model=settings)
        s = s.with_(**fields).validate()
        if s.backend not in BACKENDS:
            raise ValueError(f"Unknown backend {s.backend!r}: use {' or '.join(BACKENDS)}.")
        if s.backend == "vllm":
            from .vllm_backend import check_available

            check_available(str(s.device))  # refused before any weights load
        backbone = load_backbone(s.model, adapter=s.adapter, device=s.device, dtype=s.dtype,
                                 trust_remote_code=s.trust_remote_code)
        generator = None
        if s.backend == "vllm":
            from .vllm_backend import VllmGenerator

            generator = VllmGenerator.for_backbone(backbone)
        return cls(backbone, s, generator=generator)

    @property
    def name(self) -> str:
        return self.backbone.name

    @property
    def embedding_dim(self) -> int:
        return self.backbone.hidden_size

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def check_layer(self, layer: int) -> None:
        """Refuse a layer the model does not have, naming the valid range."""
        n = int(self.model.config.get_text_config().num_hidden_layers)
        if not -(n + 1) <= layer <= n:
            raise ValueError(f"Layer {layer} does not exist: this model has layers -{n + 1} to {n} "
                             f"(-1 is the last, 0 the embeddings).")

    def prompt_builder(self, prompt=None) -> PromptBuilder:
        """The builder of P(x) for a template (a name, a file or a ``PromptTemplate``; None: the
        encoder's default), made once per template."""
        prompt = self.settings.prompt if prompt is None else prompt
        if prompt not in self._builders:
            self._builders[prompt] = PromptBuilder(self.tokenizer, prompt)
        return self._builders[prompt]

    # -- building blocks -------------------------------------------------------------------
    def build_prompts(self, texts: Sequence[str], prompt=None) -> list[PromptIds]:
        """P(x) for each text with ``prompt`` (None: the encoder's default)."""
        validate_texts(texts)
        builder = self.prompt_builder(prompt)
        return [builder.build(t, self.max_text_tokens) for t in texts]

    def generate(self, prompts: Sequence[PromptIds], settings: EncodeSettings,
                 on_batch: Callable[[int], None] | None = None,
                 on_token: Callable[[int, list[int]], None] | None = None,
                 finished: list[bool] | None = None, fixed_length: bool = False) -> list[list[int]]:
        """Rationale token ids for each prompt (cut at EOS or the stop string of the settings'
        template); ``fixed_length`` (benchmarks) always generates ``max_new_tokens``."""
        stop = self.prompt_builder(settings.prompt).stop_strings()
        if self.generator is not None:
            return self.generator.generate(prompts, settings, stop_strings=stop, on_batch=on_batch, finished=finished)
        return generate_rationales(self.model, self.tokenizer, prompts, settings,
                                   stop_strings=stop, on_batch=on_batch,
                                   on_token=on_token, finished=finished, fixed_length=fixed_length)

    def embed(self, prompts: Sequence[PromptIds], rationales: Sequence[Sequence[int]], *,
              pooling: str = "mean", layer: int = -1, keep_states: bool = False,
              batch_size: int = 16) -> EmbedBatch:
        """``embed_ids`` in batches sorted by length, results in input order; each batch runs the
        prompt prefix its texts share once (the few-shot template is ~120 tokens per text)."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].ids) + len(rationales[i]))
        embs, pooled, details = [None] * len(prompts), [None] * len(prompts), [None] * len(prompts)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            out = embed_ids(self.model, [prompts[i] for i in idx], [rationales[i] for i in idx],
                            pad_id=self.pad_id, pooling=pooling, layer=layer, keep_states=keep_states,
                            share_prefix=True)
            for j, i in enumerate(idx):
                embs[i], pooled[i] = out.embeddings[j], out.pooled[j]
                if keep_states:
                    details[i] = out.details[j]
        return EmbedBatch(embeddings=torch.stack(embs), pooled=torch.stack(pooled),
                          details=details if keep_states else None)

    def cache_key(self, settings: EncodeSettings) -> str:
        """Fingerprint of what decides a rationale besides the text: the loaded model and adapter,
        the settings' prompt template (its content) and their other rationale fields."""
        if not hasattr(self, "_adapter_fp"):  # the weights do not change under a loaded encoder
            self._adapter_fp = file_fingerprint(self.backbone.adapter)
        builder = self.prompt_builder(settings.prompt)
        rationale = settings.rationale_key()
        del rationale["prompt"]  # in the key as the template's content, not its name or path
        return settings_key(model=self.name, adapter=self._adapter_fp,
                            dtype=str(next(self.model.parameters()).dtype),
                            template=builder.template.to_dict(), chat=builder.use_chat,
                            max_text_tokens=self.max_text_tokens, backend=type(self.generator).__name__,
                            **rationale)

    def rationales(self, texts: Sequence[str], prompts: Sequence[PromptIds], settings: EncodeSettings, *,
                   cache=None, on_batch: Callable[[int], None] | None = None,
                   on_token: Callable[[int, list[int]], None] | None = None) -> list[list[int]]:
        """Rationale ids for each text, generated or (with a cache) re-used; each generated batch
        is stored as soon as it is done, so an interrupted run resumes where it stopped."""
        if cache is None:
            return self.generate(prompts, settings, on_batch=on_batch, on_token=on_token)
        key = self.cache_key(settings)
        got = cache.get_many(key, texts)
        if on_batch is not None and got:
            on_batch(len(got))
        missing = sorted((i for i in range(len(texts)) if i not in got), key=lambda i: len(prompts[i].ids))
        for start in range(0, len(missing), settings.batch_size):
            chunk = missing[start:start + settings.batch_size]
            done: list[bool] = []
            ids = self.generate([prompts[i] for i in chunk], settings, finished=done)
            cache.put_many(key, [texts[i] for i in chunk], ids, done)
            got.update(zip(chunk, ids))
            if on_batch is not None:
                on_batch(len(chunk))
        return [got[i] for i in range(len(texts))]

    # -- the public entry point ------------------------------------------------------------
    def encode(
        self,
        texts: str | Sequence[str],
        settings: EncodeSettings | None = None,
        *,
        rationales: Sequence[str] | None = None,
        show_progress_bar: bool = False,
        return_details: bool = False,
        on_token: Callable[[int, list[int]], None] | None = None,
        cache=None,
        **overrides,
    ) -> np.ndarray | list[EncodeResult]:
        """L2-normalised float32 embeddings [N, d] (or one ``EncodeResult`` per text).

        ``settings`` (an ``EncodeSettings``; when omitted, those the encoder was loaded with)
        decide the prompt, the rationale and the pooling; keyword ``overrides`` change single
        fields (``max_new_tokens=32``, ``prompt="paper"``, ``rationale=False`` for the
        direct-forward baseline, ...). The fields that choose the encoder (``EncodeSettings.LOAD``:
        model, adapter, dtype, ...) were honoured when it was loaded: as overrides they are refused.
        ``rationales`` gives the rationale text of each input instead of generating one (what-if
        editing): it is tokenised once and pooled through the same path. ``cache`` (any object
        with ``get_many`` / ``put_many``, e.g. ``grace.evaluation.cache.RationaleCache``) re-uses rationales generated before with the same model, adapter and
        settings.
        """
        load = [name for name in overrides if name in EncodeSettings.LOAD]
        if load:
            raise TypeError(f"{', '.join(load)} chose the encoder when it was loaded: load another one "
                            "(grace.model.loading.load_encoder) instead of passing it to encode.")
        s = (settings or self.settings).with_(**overrides).validate()
        self.check_layer(s.layer)
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        prompts = self.build_prompts(texts, s.prompt)
        bar = tqdm(total=len(texts), desc="rationales", disable=not show_progress_bar)
        with torch.inference_mode():
            if rationales is not None:
                if len(rationales) != len(texts):
                    raise ValueError(f"Got {len(rationales)} rationales for {len(texts)} texts.")
                tokenize = self.prompt_builder(s.prompt)._tok
                rat_ids = [tokenize(r) if r else [] for r in rationales]
                bar.update(len(texts))
            elif s.rationale:
                if cache is None and self.generator is None and self.fast and _fast_ok(self.model, prompts, s):
                    out, rat_ids = self._encode_fast(prompts, s, keep_states=return_details, on_batch=bar.update,
                                                     on_token=on_token)
                    return self._results(texts, prompts, rat_ids, out, bar, single, return_details, s.pooling)
                rat_ids = self.rationales(texts, prompts, s, cache=cache, on_batch=bar.update, on_token=on_token)
            else:
                rat_ids = [[] for _ in texts]
                bar.update(len(texts))
            if s.pooling == "rationale-mean" and any(len(r) == 0 for r in rat_ids):
                empty = [i for i, r in enumerate(rat_ids) if not r]
                raise ValueError(f"Pooling 'rationale-mean' got an empty rationale for text(s) {empty}.")
            out = self.embed(prompts, rat_ids, pooling=s.pooling, layer=s.layer,
                             keep_states=return_details, batch_size=s.batch_size)
        return self._results(texts, prompts, rat_ids, out, bar, single, return_details, s.pooling)

    def _encode_fast(self, prompts, settings: EncodeSettings, *, keep_states, on_batch, on_token,
                     fixed_length: bool = False):
        """Generation and embedding in one pass per length-sorted batch (``grace.model.fastgen``)."""
        from .fastgen import generate_and_embed

        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].ids))
        stop = self.prompt_builder(settings.prompt).stop_strings()
        embs, pooled, details = [None] * len(prompts), [None] * len(prompts), [None] * len(prompts)
        rat_ids: list[list[int]] = [[] for _ in prompts]
        for n, start in enumerate(range(0, len(order), settings.batch_size)):
            idx = order[start:start + settings.batch_size]
            s = settings if settings.seed is None else replace(settings, seed=settings.seed + n)
            cb = None if on_token is None else (lambda row, ids, idx=idx: on_token(idx[row], ids))
            res = generate_and_embed(self.model, self.tokenizer, [prompts[i] for i in idx], s,
                                     stop_strings=stop, keep_states=keep_states,
                                     on_token=cb, fixed_length=fixed_length)
            for j, i in enumerate(idx):
                embs[i], pooled[i], rat_ids[i] = res.embed.embeddings[j], res.embed.pooled[j], res.rationales[j]
                if keep_states:
                    details[i] = res.embed.details[j]
            on_batch(len(idx))
        return EmbedBatch(embeddings=torch.stack(embs), pooled=torch.stack(pooled),
                          details=details if keep_states else None), rat_ids

    def _results(self, texts, prompts, rat_ids, out, bar, single, return_details, pooling):
        bar.close()
        embs = out.embeddings.float().cpu().numpy().astype(np.float32)
        if not return_details:
            return embs[0] if single else embs
        results = []
        for i, text in enumerate(texts):
            d = out.details[i]
            results.append(EncodeResult(
                text=text, rationale=self.tokenizer.decode(rat_ids[i], skip_special_tokens=True),
                tokens=[self.tokenizer.decode([t]) for t in d["ids"]], segments=d["segments"],
                embedding=embs[i], token_ids=d["ids"], token_states=d["states"],
                pooled_mask=d["pooled_mask"], pooled=out.pooled[i].float().cpu().numpy(),
                pooling=pooling, rationale_ids=list(rat_ids[i]), truncated=prompts[i].truncated))
        return results


def _fast_ok(model, prompts, settings) -> bool:
    from .fastgen import supports

    return supports(model, prompts, settings)


def validate_texts(texts: Iterable[str]) -> None:
    """Refuse what cannot be encoded, naming the first bad text."""
    texts = list(texts)
    if not texts:
        raise ValueError("No texts to encode.")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"Text {i + 1} is a {type(t).__name__}, not a string.")
        if not t.strip():
            raise ValueError(f"Text {i + 1} is empty.")
