"""GraceEncoder: a rationale-conditioned text encoder on a causal LM.

For a text x: build P(x), let the model write a rationale r ~ pi(. | P(x)), run the decoder
body over P(x) + r and mean-pool the hidden states of the text and rationale tokens (eq. 10-11).
``embed_ids`` is the one function that turns (prompt ids, rationale ids) into embeddings: the
encoder, the trainer's rewards and the evaluation adapter all call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from .backbone import DEFAULT_MODEL, Backbone, load_backbone
from .generation import GenerationSettings, generate_rationales, left_pad
from .pooling import INSTRUCTION, PAD, RATIONALE, TEXT, check_pooling, pool, pool_mask
from .prompts import PromptBuilder, PromptIds

if TYPE_CHECKING:
    from .cache import RationaleCache

SEGMENT_NAMES = {INSTRUCTION: "instruction", TEXT: "text", RATIONALE: "rationale"}


@dataclass
class EncodeResult:
    """One encoded text, with what token attributions need.

    ``tokens``/``segments``/``token_states`` cover the text and rationale positions (the
    instruction is left out); ``pooled_mask`` marks those the pooling read; ``pooled`` is the
    un-normalised pooled vector and ``embedding`` its L2-normalised form.
    """

    text: str
    rationale: str
    tokens: list[str]
    segments: list[str]
    embedding: np.ndarray
    token_ids: list[int] = field(repr=False, default_factory=list)
    token_states: np.ndarray | None = field(repr=False, default=None)
    pooled_mask: np.ndarray | None = field(repr=False, default=None)
    pooled: np.ndarray | None = field(repr=False, default=None)
    pooling: str = "mean"
    rationale_ids: list[int] = field(repr=False, default_factory=list)
    truncated: bool = False


@dataclass
class EmbedBatch:
    """Output of ``embed_ids``: normalised embeddings [B, d] (torch, float32) and optionally
    per-row states of the non-instruction positions for attributions."""

    embeddings: torch.Tensor
    pooled: torch.Tensor
    details: list[dict] | None = None


def decoder_body(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer body without the LM head (hidden states, no 262k-way logits)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder()


def segment_codes(prompts: Sequence[PromptIds], rationales: Sequence[Sequence[int]]) -> list[list[int]]:
    out = []
    for p, r in zip(prompts, rationales):
        codes = ([INSTRUCTION] * p.text_start + [TEXT] * (p.text_end - p.text_start)
                 + [INSTRUCTION] * (len(p.ids) - p.text_end) + [RATIONALE] * len(r))
        out.append(codes)
    return out


def embed_ids(
    model: torch.nn.Module,
    prompts: Sequence[PromptIds],
    rationales: Sequence[Sequence[int]],
    *,
    pad_id: int,
    pooling: str = "mean",
    layer: int = -1,
    keep_states: bool = False,
) -> EmbedBatch:
    """Embeddings of P(x_i) + r_i: the single embedding code path (eq. 10-11).

    Runs the decoder body (no logits) over left-padded sequences with position ids that skip
    the padding, takes layer ``layer`` (-1 = last, after the final norm; -2 = penultimate, ...),
    pools with the mask of ``pooling`` and L2-normalises. Gradients flow when the caller
    has them enabled (the CL baseline trains through it; rewards call it under no_grad).
    """
    check_pooling(pooling)
    device = next(model.parameters()).device
    seqs = [list(p.ids) + list(r) for p, r in zip(prompts, rationales)]
    ids, attn = left_pad(seqs, pad_id, device)
    seg_rows = segment_codes(prompts, rationales)
    segments = torch.zeros_like(ids)
    for i, codes in enumerate(seg_rows):
        segments[i, ids.shape[1] - len(codes):] = torch.tensor(codes, device=device)
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    body = decoder_body(model)
    want_all = layer != -1
    out = body(input_ids=ids, attention_mask=attn, position_ids=position_ids,
               output_hidden_states=want_all, use_cache=False)
    states = out.hidden_states[layer] if want_all else out.last_hidden_state
    return pool_states(states, segments, ids, pooling=pooling, keep_states=keep_states)


def pool_states(states: torch.Tensor, segments: torch.Tensor, ids: torch.Tensor, *, pooling: str,
                keep_states: bool = False) -> EmbedBatch:
    """Pool [B, L, d] hidden states by their segment codes and L2-normalise (eq. 11); both the
    forward pass above and the generation-time states of ``fastgen`` end here."""
    mask = pool_mask(segments, pooling)
    pooled = pool(states, mask, pooling)
    embeddings = torch.nn.functional.normalize(pooled, dim=-1)
    details = None
    if keep_states:
        details = []
        keep = (segments == TEXT) | (segments == RATIONALE)
        for i in range(ids.shape[0]):
            k = keep[i]
            details.append({
                "ids": ids[i][k].tolist(),
                "segments": [SEGMENT_NAMES[c] for c in segments[i][k].tolist()],
                "states": states[i][k].detach().float().cpu().numpy(),
                "pooled_mask": mask[i][k].cpu().numpy(),
            })
    return EmbedBatch(embeddings=embeddings, pooled=pooled, details=details)


class GraceEncoder:
    """Encode texts the GRACE way: rationale, then mean-pooled hidden states.

    >>> enc = GraceEncoder.from_pretrained("default")
    >>> vecs = enc.encode(["Where is Machu Picchu?"], max_new_tokens=32)
    """

    def __init__(self, backbone: Backbone, prompt: str | None = None, max_text_tokens: int = 512,
                 fast: bool = True):
        self.backbone = backbone
        self.fast = fast  # generate and embed in one pass (grace.fastgen) where the model allows
        self.model = backbone.model
        self.tokenizer = backbone.tokenizer
        self.prompts = PromptBuilder(self.tokenizer, prompt)
        self.max_text_tokens = max_text_tokens

    @classmethod
    def from_pretrained(cls, name_or_path: str = DEFAULT_MODEL, *, adapter: str | None = None,
                        prompt: str | None = None, device: str = "auto", dtype: str | None = None,
                        trust_remote_code: bool = False) -> "GraceEncoder":
        return cls(load_backbone(name_or_path, adapter=adapter, device=device, dtype=dtype,
                                 trust_remote_code=trust_remote_code), prompt=prompt)

    @property
    def name(self) -> str:
        return self.backbone.name

    @property
    def embedding_dim(self) -> int:
        return self.backbone.hidden_size

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    # -- building blocks -------------------------------------------------------------------
    def build_prompts(self, texts: Sequence[str]) -> list[PromptIds]:
        validate_texts(texts)
        return [self.prompts.build(t, self.max_text_tokens) for t in texts]

    def generate(self, prompts: Sequence[PromptIds], settings: GenerationSettings,
                 on_batch: Callable[[int], None] | None = None,
                 on_token: Callable[[int, list[int]], None] | None = None,
                 finished: list[bool] | None = None) -> list[list[int]]:
        """Rationale token ids for each prompt (cut at EOS or the template's stop string)."""
        return generate_rationales(self.model, self.tokenizer, prompts, settings,
                                   stop_strings=self.prompts.stop_strings(), on_batch=on_batch,
                                   on_token=on_token, finished=finished)

    def embed(self, prompts: Sequence[PromptIds], rationales: Sequence[Sequence[int]], *,
              pooling: str = "mean", layer: int = -1, keep_states: bool = False,
              batch_size: int = 16) -> EmbedBatch:
        """``embed_ids`` in batches sorted by length, results in input order."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].ids) + len(rationales[i]))
        embs, pooled, details = [None] * len(prompts), [None] * len(prompts), [None] * len(prompts)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            out = embed_ids(self.model, [prompts[i] for i in idx], [rationales[i] for i in idx],
                            pad_id=self.pad_id, pooling=pooling, layer=layer, keep_states=keep_states)
            for j, i in enumerate(idx):
                embs[i], pooled[i] = out.embeddings[j], out.pooled[j]
                if keep_states:
                    details[i] = out.details[j]
        return EmbedBatch(embeddings=torch.stack(embs), pooled=torch.stack(pooled),
                          details=details if keep_states else None)

    def cache_key(self, settings: GenerationSettings) -> str:
        """Fingerprint of what decides a rationale besides the text: model, adapter, prompt, settings."""
        from .cache import file_fingerprint, settings_key

        s = {k: v for k, v in vars(settings).items() if k != "batch_size"}
        if not hasattr(self, "_adapter_fp"):  # the weights do not change under a loaded encoder
            self._adapter_fp = file_fingerprint(self.backbone.adapter)
        return settings_key(model=self.name, adapter=self._adapter_fp,
                            dtype=str(next(self.model.parameters()).dtype),
                            template=self.prompts.template.to_dict(), chat=self.prompts.use_chat,
                            max_text_tokens=self.max_text_tokens, **s)

    def rationales(self, texts: Sequence[str], prompts: Sequence[PromptIds], settings: GenerationSettings, *,
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
        *,
        rationale: bool = True,
        rationales: Sequence[str] | None = None,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 0.7,
        top_p: float = 0.95,
        repetition_penalty: float = 1.2,
        no_repeat_ngram_size: int = 0,
        seed: int | None = None,
        pooling: str = "mean",
        layer: int = -1,
        batch_size: int = 32,
        show_progress_bar: bool = False,
        return_details: bool = False,
        on_token: Callable[[int, list[int]], None] | None = None,
        cache: "RationaleCache | None" = None,
    ) -> np.ndarray | list[EncodeResult]:
        """L2-normalised float32 embeddings [N, d] (or one ``EncodeResult`` per text).

        ``rationale=False`` is the direct-forward baseline (no generation). ``rationales``
        gives the rationale text of each input instead of generating one (what-if editing):
        it is tokenised once and pooled through the same path. ``cache`` (a ``RationaleCache``)
        re-uses rationales generated before with the same model, adapter and settings.
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        check_pooling(pooling)
        if not rationale and pooling == "rationale-mean":
            raise ValueError("Pooling 'rationale-mean' needs a rationale; drop --no-rationale or pick another pooling.")
        prompts = self.build_prompts(texts)
        bar = tqdm(total=len(texts), desc="rationales", disable=not show_progress_bar)
        with torch.inference_mode():
            if rationales is not None:
                if len(rationales) != len(texts):
                    raise ValueError(f"Got {len(rationales)} rationales for {len(texts)} texts.")
                rat_ids = [self.prompts._tok(r) if r else [] for r in rationales]
                bar.update(len(texts))
            elif rationale:
                settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=do_sample,
                                              temperature=temperature, top_p=top_p,
                                              repetition_penalty=repetition_penalty,
                                              no_repeat_ngram_size=no_repeat_ngram_size,
                                              seed=seed, batch_size=batch_size)
                if cache is None and self.fast and _fast_ok(self.model, prompts, settings):
                    out, rat_ids = self._encode_fast(prompts, settings, pooling=pooling, layer=layer,
                                                     keep_states=return_details, on_batch=bar.update,
                                                     on_token=on_token)
                    return self._results(texts, prompts, rat_ids, out, bar, single, return_details, pooling)
                rat_ids = self.rationales(texts, prompts, settings, cache=cache, on_batch=bar.update,
                                          on_token=on_token)
            else:
                rat_ids = [[] for _ in texts]
                bar.update(len(texts))
            if pooling == "rationale-mean" and any(len(r) == 0 for r in rat_ids):
                empty = [i for i, r in enumerate(rat_ids) if not r]
                raise ValueError(f"Pooling 'rationale-mean' got an empty rationale for text(s) {empty}.")
            out = self.embed(prompts, rat_ids, pooling=pooling, layer=layer,
                             keep_states=return_details, batch_size=batch_size)
        return self._results(texts, prompts, rat_ids, out, bar, single, return_details, pooling)

    def _encode_fast(self, prompts, settings, *, pooling, layer, keep_states, on_batch, on_token):
        """Generation and embedding in one pass per length-sorted batch (``grace.fastgen``)."""
        from .fastgen import generate_and_embed

        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].ids))
        embs, pooled, details = [None] * len(prompts), [None] * len(prompts), [None] * len(prompts)
        rat_ids: list[list[int]] = [[] for _ in prompts]
        for n, start in enumerate(range(0, len(order), settings.batch_size)):
            idx = order[start:start + settings.batch_size]
            s = settings if settings.seed is None else replace(settings, seed=settings.seed + n)
            cb = None if on_token is None else (lambda row, ids, idx=idx: on_token(idx[row], ids))
            res = generate_and_embed(self.model, self.tokenizer, [prompts[i] for i in idx], s,
                                     stop_strings=self.prompts.stop_strings(), pooling=pooling, layer=layer,
                                     keep_states=keep_states, on_token=cb)
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
