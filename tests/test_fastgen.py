"""The fast path (shared-prefix KV cache, rows dropped when finished, states kept from generation)
gives the plain path's greedy rationales and embeddings within 1e-4."""

import numpy as np
import pytest

from grace.model.fastgen import common_prefix, supports
from grace.model.settings import EncodeSettings

TEXTS = ["Where is Machu Picchu?", "The stock market fell sharply today as interest rates rose.", "A dog.",
         "Photosynthesis converts light into chemical energy in plants, using water and carbon dioxide."]


def _both(enc, **kw):
    enc.fast = True
    fast = enc.encode(TEXTS, return_details=True, batch_size=4, **kw)
    enc.fast = False
    try:
        plain = enc.encode(TEXTS, return_details=True, batch_size=4, **kw)
    finally:
        enc.fast = True
    return fast, plain


@pytest.mark.parametrize("kw", [
    dict(max_new_tokens=10), dict(max_new_tokens=10, pooling="max"), dict(max_new_tokens=10, pooling="last"),
    dict(max_new_tokens=10, layer=-2), dict(max_new_tokens=10, repetition_penalty=1.5, no_repeat_ngram=2),
])
def test_fast_path_equals_plain_path(tiny_encoder, kw):
    assert supports(tiny_encoder.model, tiny_encoder.build_prompts(TEXTS), EncodeSettings(max_new_tokens=10))
    fast, plain = _both(tiny_encoder, **kw)
    for f, p in zip(fast, plain):
        assert f.rationale_ids == p.rationale_ids
        assert f.tokens == p.tokens and f.segments == p.segments
        assert np.abs(f.embedding - p.embedding).max() < 1e-4
        assert np.abs(f.token_states - p.token_states).max() < 1e-4


def test_fast_path_with_stop_strings(tiny_model_dir):
    """A template whose stop string the tiny model produces: cut at the same place on both paths."""
    from grace.model.encoder import GraceEncoder
    from grace.model.prompts import PromptTemplate

    enc = GraceEncoder.from_pretrained(str(tiny_model_dir), device="cpu")
    plain = enc.encode(TEXTS, return_details=True, max_new_tokens=12, batch_size=4)
    # stop on a piece of text the model actually wrote for the second text
    piece = plain[1].rationale[3:5]
    assert piece
    enc = GraceEncoder.from_pretrained(str(tiny_model_dir), device="cpu",
                                       prompt=PromptTemplate(name="t", instruction="Describe:", stop=(piece,)))
    fast, plain = _both(enc, max_new_tokens=12)
    assert [f.rationale_ids for f in fast] == [p.rationale_ids for p in plain]
    assert piece not in fast[1].rationale
    assert max(np.abs(f.embedding - p.embedding).max() for f, p in zip(fast, plain)) < 1e-4


def test_prefix_is_shared_instruction_only(tiny_encoder):
    prompts = tiny_encoder.build_prompts(TEXTS)
    n = common_prefix(prompts)
    assert 0 < n <= min(p.text_start for p in prompts)
    assert all(p.ids[:n] == prompts[0].ids[:n] for p in prompts)


def test_small_sliding_window_falls_back_to_the_plain_path(tmp_path):
    from grace.model.encoder import GraceEncoder
    from tiny_model import build_tiny_model

    enc = GraceEncoder.from_pretrained(str(build_tiny_model(tmp_path / "w64", sliding_window=64)), device="cpu")
    assert not supports(enc.model, enc.build_prompts(TEXTS), EncodeSettings(max_new_tokens=10))
    out = enc.encode(TEXTS, max_new_tokens=4)
    assert out.shape == (4, 32)


def test_streaming_rows_map_to_inputs(tiny_encoder):
    seen = {}
    res = tiny_encoder.encode(TEXTS, max_new_tokens=6, return_details=True, batch_size=2,
                              on_token=lambda row, toks: seen.__setitem__(row, toks))
    assert sorted(seen) == [0, 1, 2, 3]
    for i, r in enumerate(res):
        assert seen[i][:len(r.rationale_ids)] == r.rationale_ids


def test_vllm_backend_refuses_cpu_clearly():
    from grace.model.vllm_backend import VllmUnavailable, check_available

    with pytest.raises(VllmUnavailable, match="CUDA GPU only"):
        check_available("cpu")


def test_fast_path_in_bfloat16_matches_plain_bfloat16(tiny_model_dir):
    from grace.model.encoder import GraceEncoder

    enc = GraceEncoder.from_pretrained(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    fast, plain = _both(enc, max_new_tokens=8)
    assert [f.rationale_ids for f in fast] == [p.rationale_ids for p in plain]
    assert max(np.abs(f.embedding - p.embedding).max() for f, p in zip(fast, plain)) < 3e-2  # bf16 rounding


def test_auto_dtype_follows_the_cpu():
    import torch

    from grace.model.backbone import cpu_has_native_bf16, resolve_dtype

    from grace.model import backbone

    cpu = torch.device("cpu")
    assert resolve_dtype(None, cpu) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    with pytest.MonkeyPatch.context() as m:
        m.setattr(backbone, "cpu_has_native_bf16", lambda: True)
        assert resolve_dtype("auto", cpu) == torch.bfloat16
        m.setattr(backbone, "cpu_has_native_bf16", lambda: False)
        assert resolve_dtype("auto", cpu) == torch.float32
    assert isinstance(cpu_has_native_bf16(), bool)


RESPONSE_TEXTS = ["Machu Picchu is an Inca citadel in Peru.", "Stocks fell.", "A dog runs in the park on a sunny day."]


def test_responses_end_with_the_token_that_stopped_them(tiny_encoder):
    """The trained responses (rollouts) are each rationale plus the token that ended it, on both paths."""
    from grace.model.fastgen import generate_and_embed
    from grace.model.generation import generate_rationales
    from grace.model.settings import EncodeSettings

    prompts = tiny_encoder.build_prompts(RESPONSE_TEXTS)
    s = EncodeSettings(max_new_tokens=12, repetition_penalty=1.0, batch_size=3)
    fast = generate_and_embed(tiny_encoder.model, tiny_encoder.tokenizer, prompts, s)
    finished, responses = [], []
    rats = generate_rationales(tiny_encoder.model, tiny_encoder.tokenizer, prompts, s, finished=finished,
                               responses=responses)
    assert fast.responses == responses and fast.rationales == rats
    for r, resp, fin in zip(rats, responses, finished):
        assert resp[:len(r)] == r
        assert (resp[-1] == tiny_encoder.tokenizer.eos_token_id) if fin else resp == r
