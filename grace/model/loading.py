"""The one way to load an encoder, for every interface: ``load_encoder(settings)``.

It honours every load-time field of ``EncodeSettings`` (``EncodeSettings.LOAD``: model, adapter,
dtype, device, trust_remote_code, backend); the other fields (the prompt included) are
honoured by each ``encode`` call, so one loaded encoder serves them all.
"""

from __future__ import annotations

from .baseline import MINILM, MiniLMEncoder
from .encoder import GraceEncoder
from .settings import EncodeSettings


def load_encoder(settings: EncodeSettings | str | None = None, **fields) -> GraceEncoder | MiniLMEncoder:
    """The encoder that ``settings`` name (an ``EncodeSettings``, a model name, or the defaults when
    omitted; ``fields`` change single fields): the encoder-only baseline for ``model="minilm"``
    (it takes only a device: no adapter, no rationale), else a ``GraceEncoder``
    (``GraceEncoder.from_pretrained``). The adapter may be a folder, a training run or the name of
    a shipped adapter (``grace-wordnet-sup``)."""
    if isinstance(settings, str):
        settings = EncodeSettings(model=settings)
    s = (settings or EncodeSettings()).with_(**fields)
    if s.model == MINILM:
        if s.adapter:
            raise ValueError("Adapters apply to GRACE backbones, not to the MiniLM baseline.")
        return MiniLMEncoder(device=s.device)
    return GraceEncoder.from_pretrained(s)
