"""Optional rationale generation through vLLM on a GPU (CPU stays on transformers).

vLLM generates the rationale token ids from our prompt token ids (so the segment spans stay
exact); the embedding then runs through the usual ``embed_ids`` on the transformers model.
Not exercised by the test suite on CPU beyond its refusal; see the README.
"""

from __future__ import annotations

from typing import Sequence

from .generation import GenerationSettings
from .prompts import PromptIds


class VllmUnavailable(RuntimeError):
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

    def __init__(self, model_path: str, device: str = "cuda", gpu_memory_utilization: float = 0.5):
        check_available(device)
        from vllm import LLM

        self.llm = LLM(model=model_path, dtype="bfloat16", gpu_memory_utilization=gpu_memory_utilization,
                       enable_prefix_caching=True)

    def generate(self, prompts: Sequence[PromptIds], settings: GenerationSettings,
                 stop_strings: Sequence[str] = ()) -> list[list[int]]:
        from vllm import SamplingParams, TokensPrompt

        params = SamplingParams(max_tokens=settings.max_new_tokens,
                                temperature=settings.temperature if settings.do_sample else 0.0,
                                top_p=settings.top_p if settings.do_sample else 1.0, seed=settings.seed,
                                repetition_penalty=settings.repetition_penalty, stop=list(stop_strings) or None,
                                include_stop_str_in_output=False)
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p.ids)) for p in prompts], params,
                                 use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]
