"""What one request sees of an encoder in the engine: ``EngineEncoder``, whose ``encode`` takes
the encoder's own arguments and gives its answer, but runs in the engine (``grace.serving.engine``):
as batchable rows where the call allows (``_batchable``), else as turns of its own."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from grace.model.settings import EncodeSettings, settings_key

from .tickets import Ticket
from .work import _Call, _Rows


def _batchable(encoder, s: EncodeSettings | None, rationales, cache) -> bool:
    """Whether an ``encode`` call's rows can share batches with other requests: a GRACE encoder's
    forward pass (given rationales, or the direct forward pass), or greedy generated rationales
    through the transformers fast path. Not sampled rationales (a row's draw depends on its batch's
    seed), a rationale cache, or rationale-only pooling over an empty rationale (its error would
    fail the other requests' rows)."""
    if s is None or cache is not None or getattr(encoder, "generator", "x") is not None:
        return False
    if rationales is not None:
        return not (s.pooling == "rationale-mean" and any(not r for r in rationales))
    if not s.rationale:
        return True
    return not s.sample and getattr(encoder, "fast", False)


def _quiet_prompts(encoder, texts: list[str], s: EncodeSettings) -> list:
    """``encoder.build_prompts`` without its warning of a truncated text (encode itself gives it)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return encoder.build_prompts(texts, s.prompt)


def _lengths(encoder, texts: list[str], s: EncodeSettings, given: list[str] | None) -> list[int]:
    """Each row's prompt tokens past the template's shared prefix (text + cue, plus the given
    rationale): what the batch is padded to (``Engine.batch_tokens``)."""
    try:
        prompts = _quiet_prompts(encoder, texts, s)
        extra = [0] * len(texts) if given is None else [len(encoder.tokenizer(r, add_special_tokens=False)["input_ids"])
                                                       for r in given]
        return [len(p.ids) - p.text_start + e for p, e in zip(prompts, extra)]
    except Exception:  # an encoder without the GRACE prompt builder: count nothing, rows alone bound the batch
        return []


class EngineEncoder:
    """An encoder as one request sees it: attributes are the encoder's, ``encode`` runs in the engine."""

    def __init__(self, engine, encoder, ticket: Ticket) -> None:  # engine: an engine.Engine
        self._engine, self._encoder, self.ticket = engine, encoder, ticket

    def __getattr__(self, name: str):
        return getattr(self._encoder, name)

    def encode(self, texts: str | Sequence[str], settings: EncodeSettings | None = None, *,
               return_details: bool = False, on_token: Callable[[int, list[int]], None] | None = None,
               rationales: Sequence[str] | None = None, cache=None, **overrides):
        """``encoder.encode`` with the same arguments and the same answer, run in the engine."""
        self.ticket.check()
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        enc, engine = self._encoder, self._engine
        s = None
        if hasattr(enc, "check_layer"):  # a GraceEncoder: its settings decide whether rows batch
            s = (settings or enc.settings).with_(**{k: v for k, v in overrides.items()
                                                    if k not in EncodeSettings.LOAD}).validate()
        if _batchable(enc, s, rationales, cache) and not overrides.get("show_progress_bar") and texts:
            from grace.model.encoder import validate_texts

            validate_texts(texts)
            enc.check_layer(s.layer)  # a bad request fails alone, before its rows meet others
            given = None if rationales is None else [r or "" for r in rationales]
            if given is not None and len(given) != len(texts):
                raise ValueError(f"Got {len(given)} rationales for {len(texts)} texts.")
            key = settings_key(encoder=id(enc), settings=s.with_(batch_size=1).to_dict(), given=given is not None)
            work = engine.submit(_Rows(ticket=self.ticket, encoder=enc, settings=s, key=key, texts=texts,
                                       rationales=given, on_token=on_token, lengths=_lengths(enc, texts, s, given)))
            results = engine.wait(work)
            if return_details:
                return results[0] if single else results
            embs = np.stack([r.embedding for r in results]).astype(np.float32)
            return embs[0] if single else embs

        def call(part: list[str], part_rationales, user_cb):
            def fn(stop):
                def cb(row, ids):
                    stop()
                    if user_cb is not None:
                        user_cb(row, ids)
                kw = dict(overrides)
                if rationales is not None:
                    kw["rationales"] = part_rationales
                if cache is not None:
                    kw["cache"] = cache
                return enc.encode(part, settings, return_details=return_details, on_token=cb, **kw)
            return engine.wait(engine.submit(_Call(ticket=self.ticket, fn=fn)))

        sampled = s is not None and s.rationale and s.sample
        if sampled and getattr(enc, "fast", False) and rationales is None and cache is None and texts \
                and not overrides.get("show_progress_bar"):
            return self._sampled(texts, s, single, return_details, on_token, overrides)
        size = engine.batch_rows if not sampled else max(len(texts), 1)  # sampled: seeds number its own batches
        if len(texts) <= size:
            out = call(texts, rationales, on_token)
        else:
            parts = []
            for start in range(0, len(texts), size):
                cb = None if on_token is None else (lambda row, ids, start=start: on_token(start + row, ids))
                part_r = None if rationales is None else list(rationales)[start:start + size]
                parts.append(call(texts[start:start + size], part_r, cb))
            out = [r for p in parts for r in p] if return_details else np.concatenate(parts)
        if single:
            return out[0] if (return_details or (isinstance(out, np.ndarray) and out.ndim == 2)) else out
        return out

    def _sampled(self, texts: list[str], s: EncodeSettings, single: bool, return_details: bool, on_token,
                 overrides: dict):
        """Sampled rationales, one turn per batch: the encoder's own batches (length-sorted, the
        n-th drawn with seed + n), each asked for alone with its seed, so no turn holds the model
        for a whole request. Where a batch's padded prompt would pass the engine's token budget,
        the batches are smaller (the draws of such long texts then differ from one ``encode``)."""
        enc, engine = self._encoder, self._engine
        prompts = _quiet_prompts(enc, texts, s)
        order = sorted(range(len(texts)), key=lambda i: len(prompts[i].ids))  # as GraceEncoder._encode_fast
        longest = max(len(p.ids) - p.text_start for p in prompts)
        size = max(1, min(s.batch_size, engine.batch_tokens // max(longest, 1)))
        load = {k: v for k, v in overrides.items() if k in EncodeSettings.LOAD}
        out: list = [None] * len(texts)
        for n, start in enumerate(range(0, len(order), size)):
            idx = order[start:start + size]
            part = s.with_(seed=None if s.seed is None else s.seed + n)

            def fn(stop, idx=idx, part=part):
                def cb(row, ids):
                    stop()
                    if on_token is not None:
                        on_token(idx[row], ids)
                return enc.encode([texts[i] for i in idx], part, return_details=True, on_token=cb, **load)

            for i, r in zip(idx, engine.wait(engine.submit(_Call(ticket=self.ticket, fn=fn)))):
                out[i] = r
        if return_details:
            return out[0] if single else out
        embs = np.stack([r.embedding for r in out]).astype(np.float32)
        return embs[0] if single else embs
