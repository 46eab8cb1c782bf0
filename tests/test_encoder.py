import numpy as np
import pytest
import torch

from grace.model.encoder import embed_ids
from grace.model.pooling import INSTRUCTION, PAD, RATIONALE, TEXT, pool_mask

TEXTS = ["Where is Machu Picchu?", "The stock market fell sharply today as interest rates rose.", "A dog."]


def test_pool_masks_on_left_padded_segments():
    seg = torch.tensor([[PAD, PAD, INSTRUCTION, TEXT, TEXT, INSTRUCTION, RATIONALE],
                        [INSTRUCTION, TEXT, TEXT, TEXT, INSTRUCTION, RATIONALE, RATIONALE]])
    assert pool_mask(seg, "mean").tolist() == [[0, 0, 0, 1, 1, 0, 1], [0, 1, 1, 1, 0, 1, 1]]
    assert pool_mask(seg, "text-mean").tolist() == [[0, 0, 0, 1, 1, 0, 0], [0, 1, 1, 1, 0, 0, 0]]
    assert pool_mask(seg, "rationale-mean").tolist() == [[0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 1, 1]]
    assert pool_mask(seg, "last").tolist() == [[0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 1]]
    with pytest.raises(ValueError, match="Unknown pooling 'avg'"):
        pool_mask(seg, "avg")


def test_embed_ids_matches_full_model_forward(tiny_encoder):
    """The no-logits body path gives the same states as the causal LM's own forward."""
    p = tiny_encoder.build_prompts(["Machu Picchu is in Peru."])[0]
    rat = [50, 60, 70]
    out = embed_ids(tiny_encoder.model, [p], [rat], pad_id=tiny_encoder.pad_id, keep_states=True)
    ids = torch.tensor([p.ids + rat])
    with torch.no_grad():
        hs = tiny_encoder.model(input_ids=ids, output_hidden_states=True).hidden_states
    keep = list(range(p.text_start, p.text_end)) + list(range(len(p.ids), len(p.ids) + 3))
    expect = torch.nn.functional.normalize(hs[-1][0, keep].mean(0), dim=-1)
    assert torch.allclose(out.embeddings[0], expect, atol=1e-5)
    out2 = embed_ids(tiny_encoder.model, [p], [rat], pad_id=tiny_encoder.pad_id, layer=-2)
    expect2 = torch.nn.functional.normalize(hs[-2][0, keep].mean(0), dim=-1)
    assert torch.allclose(out2.embeddings[0], expect2, atol=1e-5)
    assert not torch.allclose(out.embeddings[0], out2.embeddings[0], atol=1e-3)


def test_batch_equals_single_with_left_padding(tiny_encoder):
    prompts = tiny_encoder.build_prompts(TEXTS)
    rats = [[40, 41], [42, 43, 44, 45, 46], []]
    for pooling in ("mean", "text-mean", "last", "max"):
        batch = embed_ids(tiny_encoder.model, prompts, rats, pad_id=tiny_encoder.pad_id, pooling=pooling)
        for i in range(3):
            single = embed_ids(tiny_encoder.model, [prompts[i]], [rats[i]], pad_id=tiny_encoder.pad_id,
                               pooling=pooling)
            assert torch.allclose(batch.embeddings[i], single.embeddings[0], atol=1e-5), pooling


def test_encode_generates_batched_like_single(tiny_encoder):
    batched = tiny_encoder.encode(TEXTS, max_new_tokens=6, return_details=True, batch_size=3)
    for text, b in zip(TEXTS, batched):
        s = tiny_encoder.encode([text], max_new_tokens=6, return_details=True)[0]
        assert s.rationale_ids == b.rationale_ids
        assert np.allclose(s.embedding, b.embedding, atol=1e-5)
        assert b.embedding.dtype == np.float32
        assert abs(np.linalg.norm(b.embedding) - 1) < 1e-5
        assert 0 < len(b.rationale_ids) <= 6
        assert b.segments.count("rationale") == len(b.rationale_ids)
        assert len(b.tokens) == len(b.segments) == b.token_states.shape[0]


def test_sampling_is_deterministic_for_a_seed(tiny_encoder):
    kw = dict(max_new_tokens=8, sample=True, temperature=1.0, return_details=True)
    a = tiny_encoder.encode(TEXTS, seed=7, **kw)
    b = tiny_encoder.encode(TEXTS, seed=7, **kw)
    c = tiny_encoder.encode(TEXTS, seed=8, **kw)
    assert [r.rationale_ids for r in a] == [r.rationale_ids for r in b]
    assert [r.rationale_ids for r in a] != [r.rationale_ids for r in c]


def test_direct_forward_and_given_rationales(tiny_encoder):
    direct = tiny_encoder.encode(TEXTS, rationale=False, return_details=True)
    assert all(r.rationale == "" and set(r.segments) == {"text"} for r in direct)
    edited = tiny_encoder.encode(TEXTS[:1], rationales=["history of Peru"], return_details=True)[0]
    assert edited.rationale == "history of Peru"
    assert "rationale" in edited.segments
    assert not np.allclose(edited.embedding, direct[0].embedding, atol=1e-4)
    # an empty edited rationale is the direct forward pass
    empty = tiny_encoder.encode(TEXTS[:1], rationales=[""])
    assert np.allclose(empty[0], direct[0].embedding, atol=1e-6)


def test_bad_input_is_refused(tiny_encoder):
    with pytest.raises(ValueError, match="Text 2 is empty"):
        tiny_encoder.encode(["fine", "   "])
    with pytest.raises(ValueError, match="No texts"):
        tiny_encoder.encode([])
    with pytest.raises(ValueError, match="Unknown pooling"):
        tiny_encoder.encode(["x"], pooling="median")
    with pytest.raises(ValueError, match="needs a rationale"):
        tiny_encoder.encode(["x"], rationale=False, pooling="rationale-mean")


def test_chat_model_encodes(tiny_chat_dir):
    from grace.model.encoder import GraceEncoder

    enc = GraceEncoder.from_pretrained(str(tiny_chat_dir), device="cpu")
    r = enc.encode(["hello world"], max_new_tokens=4, return_details=True)[0]
    assert "".join(t for t, s in zip(r.tokens, r.segments) if s == "text").strip() == "hello world"


def test_streaming_callback_sees_tokens_as_generated(tiny_encoder):
    seen = {}
    res = tiny_encoder.encode(TEXTS, max_new_tokens=5, return_details=True,
                              on_token=lambda row, toks: seen.__setitem__(row, toks))
    for i, r in enumerate(res):
        assert seen[i][:len(r.rationale_ids)] == r.rationale_ids


def test_a_layer_outside_the_model_is_refused_with_the_range(tiny_encoder):
    with pytest.raises(ValueError, match=r"Layer 99 does not exist: this model has layers -3 to 2"):
        tiny_encoder.encode("a text", layer=99, rationale=False)
    assert tiny_encoder.encode("a text", layer=-3, rationale=False).shape == (32,)


def test_the_direct_forward_pass_shares_the_prompt_prefix(tiny_encoder, monkeypatch):
    """The no-rationale path runs the few-shot prefix once per batch and gives the plain layout's
    embeddings."""
    import grace.model.embedding as emb

    texts = ["Where is Machu Picchu?", "Stocks fell.", "A dog runs in the park on a sunny day."]
    shared = tiny_encoder.encode(texts, rationale=False)
    prompts = tiny_encoder.build_prompts(texts)
    plain = emb.embed_ids(tiny_encoder.model, prompts, [[] for _ in texts], pad_id=tiny_encoder.pad_id).embeddings
    assert np.abs(shared - plain.detach().numpy()).max() < 1e-5
    seen = []
    original = emb.forward_states
    monkeypatch.setattr(emb, "forward_states", lambda *a, **k: seen.append(k["share_prefix"]) or original(*a, **k))
    tiny_encoder.encode(texts, rationale=False)
    assert seen == [True]
