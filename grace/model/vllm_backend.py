"""Optional rationale generation through vLLM on a GPU (CPU stays on transformers).

``--backend vllm`` (``EncodeSettings.backend``): vLLM generates the rationale token ids from our
prompt token ids (so the segment spans stay exact); the embedding then runs through the usual
``embed_ids`` on the transformers model. A LoRA adapter is served with vLLM's LoRA support.
vLLM's repetition penalty also counts the prompt's tokens (ours looks at the rationale only).
Not exercised by the test suite on CPU beyond its refusal; see docs/internals.md, "Precision and devices".
"""

from __future__ import annotations

from typing import Callable, Sequence

from .prompts import PromptIds
from .settings import EncodeSettings


class VllmUnavailable(ValueError):
    pass


def check_available(device: str) -> None:
    if not str(device).startswith("cuda"):
        raise VllmUnavailable("vLLM generation runs on a CUDA GPU only; on CPU the encoder uses transformers.")
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise VllmUnavailable("vLLM is not installed: pip install vllm (on a CUDA machine).") from None


class VllmGenerator:
    """Generates rationales for ``PromptIds`` with vLLM's batched engine."""

    def __init__(self, model_path: str, device: str = "cuda", gpu_memory_utilization: float = 0.5,
                 adapter: str | None = None):
        check_available(device)
        from vllm import LLM

        self.adapter = adapter
        self.llm = LLM(model=model_path, dtype="bfloat16", gpu_memory_utilization=gpu_memory_utilization,
                       enable_prefix_caching=True, enable_lora=adapter is not None)

    @classmethod
    def for_backbone(cls, backbone) -> "VllmGenerator":
        """A generator for the same weights as a loaded ``Backbone`` (the default model's converted
        safetensors folder, or the id / folder it was loaded from)."""
        from .backbone import DEFAULT_MODEL, default_model_dir

        path = str(default_model_dir()) if backbone.name == DEFAULT_MODEL else backbone.name
        return cls(path, device=str(backbone.device), adapter=backbone.adapter)

    def generate(self, prompts: Sequence[PromptIds], settings: EncodeSettings, stop_strings: Sequence[str] = (),
                 on_batch: Callable[[int], None] | None = None,
                 finished: list[bool] | None = None) -> list[list[int]]:
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=settings.max_new_tokens,
                                temperature=settings.temperature if settings.sample else 0.0,
                                top_p=settings.top_p if settings.sample else 1.0, seed=settings.seed,
                                repetition_penalty=settings.repetition_penalty, stop=list(stop_strings) or None,
                                include_stop_str_in_output=False)
        lora = None
        if self.adapter:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("grace", 1, self.adapter)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p.ids)) for p in prompts], params,
                                 use_tqdm=False, lora_request=lora)
        if finished is not None:
            finished[:] = [o.outputs[0].finish_reason == "stop" for o in outs]
        if on_batch is not None:
            on_batch(len(prompts))
        return [list(o.outputs[0].token_ids) for o in outs]
