"""The trainable model of a run: the backbone's precision on this device, and LoRA on it."""

from __future__ import annotations

import warnings

import torch

from ..model.backbone import cpu_has_native_bf16
from .config import GraceConfig


def training_dtype(requested: str | None, device: torch.device) -> str | None:
    """The dtype the backbone loads in; a bfloat16 request on a CPU without native bf16 falls back
    to float32 with one warning (it would be several times slower there, not faster)."""
    if requested == "bfloat16" and device.type == "cpu" and not cpu_has_native_bf16():
        warnings.warn("This CPU has no native bfloat16 matmuls: training in float32 instead.")
        return "float32"
    return requested


def add_lora(model, cfg: GraceConfig):
    """The PEFT model with LoRA on ``cfg.lora_targets`` (refused when a target is not a module)."""
    from peft import LoraConfig, get_peft_model

    targets = list(cfg.lora_targets)
    names = {n.split(".")[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise ValueError(f"LoRA targets {missing} are not modules of this model.")
    dropout = max(cfg.lora_dropout, 0.1) if cfg.method == "simcse" else cfg.lora_dropout
    # autocast_adapter_dtype keeps the LoRA weights (and so the optimizer state) in float32 when
    # the frozen base model runs in bfloat16
    return get_peft_model(model, LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=dropout,
                                            target_modules=targets, task_type="CAUSAL_LM"),
                          autocast_adapter_dtype=True)
