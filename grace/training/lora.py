"""The trainable model of a run: the backbone's precision on this device, LoRA on it, and its
checkpoints and published adapter versions in the run folder."""

from __future__ import annotations

import warnings

import torch

from ..model.backbone import cpu_has_native_bf16
from ..files.run_folder import RunFolder
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


def tokenizer_info(model: str, tokenizer, prompts) -> dict:
    """What an adapter version records of the tokenizer and prompt it was trained with (the load
    checks an encoder against it)."""
    return {"model": model, "vocab_size": len(tokenizer), "pad_token_id": int(tokenizer.pad_token_id),
            "eos_token_id": tokenizer.eos_token_id, "chat_template": bool(getattr(tokenizer, "chat_template", None)),
            "prompt": prompts.template.to_dict()}


def resume_from(folder: RunFolder, model, optimizer: torch.optim.Optimizer) -> None:
    """Load the newest checkpoint's LoRA weights and optimizer state, when there is one."""
    ckpt = folder.latest_checkpoint()
    if ckpt is None:
        return
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(str(RunFolder.checkpoint_weights(ckpt))))
    if RunFolder.checkpoint_optimizer(ckpt).exists():
        optimizer.load_state_dict(torch.load(RunFolder.checkpoint_optimizer(ckpt), weights_only=True))


def save_to(folder: RunFolder, step: int, policy, optimizer: torch.optim.Optimizer, cfg: GraceConfig,
            tokenizer_info: dict) -> None:
    """A checkpoint of step ``step`` (to resume from) and a published adapter version (to encode
    with: the adapter carries the run's config and encode settings)."""
    def weights(path) -> None:
        policy.save_pretrained(path, safe_serialization=True)

    folder.save_checkpoint(step, weights, lambda path: torch.save(optimizer.state_dict(), path))
    folder.publish_adapter(step, weights, config=cfg.to_dict(), encode_settings=cfg.encode_settings().to_dict(),
                           tokenizer_info=tokenizer_info, keep=cfg.keep_adapters)
