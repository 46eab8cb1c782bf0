"""A tiny random Gemma-3-shaped model and byte-level BPE tokenizer, built from a config.

Tests, the app's browser tests and demos use it: no weights to fetch, seconds to build, and
it goes through exactly the same loading path (``load_backbone(path)``) as a real model.
"""

from __future__ import annotations

from pathlib import Path

import torch

_CORPUS = [
    "Machu Picchu is an Inca citadel in the Andes of Peru.",
    "The stock market fell sharply today as interest rates rose.",
    "A dog is running through the grass in the park.",
    "Photosynthesis converts light into chemical energy in plants.",
    "How often should I water a cactus during the winter?",
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Text: Topic: Keywords: Analysis: Key concepts: history, finance, biology, gardening.",
    "Read the text below and analyse it. Think step by step about what it is about.",
    "Where is the capital of France? What is the boiling point of water?",
    "Neural networks learn representations from data with gradient descent.",
]

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tiny_tokenizer(vocab_size: int = 384, chat: bool = False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<eos>", "<bos>", "<|user|>", "<|assistant|>", "<|end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 3, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                       special_tokens=[("<bos>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", padding_side="left")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(path: str | Path, *, chat: bool = False, seed: int = 0, hidden_size: int = 32,
                     sliding_window: int = 512) -> Path:
    """Write a tiny random Gemma 3 text model + tokenizer to ``path`` and return it."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    path = Path(path)
    tokenizer = build_tiny_tokenizer(chat=chat)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        max_position_embeddings=1024, sliding_window=sliding_window,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config).eval()
    model.generation_config.eos_token_id = 1
    model.generation_config.pad_token_id = 0
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def tiny_config(tiny_model_dir, tmp_path, **kw):
    """A short GRACE supervised run on the tiny model and the sample triplets (``kw`` overrides)."""
    from grace.training.config import GraceConfig
    from grace.training.data import SAMPLE_TRIPLETS

    base = dict(method="grace", mode="supervised", data=str(SAMPLE_TRIPLETS), output=str(tmp_path / "run"),
                model=str(tiny_model_dir), steps=2, batch_size=2, rollouts=3, max_new_tokens=6,
                sample_every=0, save_every=10, device="cpu", lr=1e-2)
    base.update(kw)
    return GraceConfig(**base)
