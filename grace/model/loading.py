"""One entry point for every encoder a comparison may use: GRACE on any causal LM, or MiniLM."""

from __future__ import annotations

from .backbone import DEFAULT_MODEL
from .baseline import MINILM, MiniLMEncoder
from .encoder import GraceEncoder
from .settings import EncodeSettings


def load_encoder(model: str = DEFAULT_MODEL, *, adapter: str | None = None, prompt: str | None = None,
                 device: str = "auto", dtype: str | None = None,
                 trust_remote_code: bool = False, backend: str = "transformers") -> GraceEncoder | MiniLMEncoder:
    """``"minilm"`` gives the encoder-only baseline; anything else a ``GraceEncoder``."""
    if model == MINILM:
        if adapter:
            raise ValueError("Adapters apply to GRACE backbones, not to the MiniLM baseline.")
        return MiniLMEncoder(device=device)
    return GraceEncoder.from_pretrained(model, adapter=adapter, prompt=prompt, device=device,
                                        dtype=dtype, trust_remote_code=trust_remote_code, backend=backend)


def encoder_for(settings: EncodeSettings) -> GraceEncoder | MiniLMEncoder:
    """The encoder the load-time fields of ``settings`` name (model, adapter, prompt, dtype, ...)."""
    return load_encoder(settings.model, adapter=settings.adapter, prompt=settings.prompt, device=settings.device,
                        dtype=settings.dtype, trust_remote_code=settings.trust_remote_code, backend=settings.backend)
