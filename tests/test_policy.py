"""The policy-gradient machinery against references: log-probabilities vs the full model's
log_softmax, the shared prefix vs the plain layout (values and gradients), the sign of an update,
the stop decision in the loss, KL, dropout for SimCSE. (Several processes: test_multiprocess.py.)"""

from __future__ import annotations

import json

import pytest
import torch

from grace.model.embedding import embed_ids
from grace.training.data import SAMPLE_PASSAGES
from grace.training.policy import rollout_logprobs
from grace.training.trainer import Trainer, train
from tiny_model import tiny_config as _cfg

TEXTS = ["Machu Picchu is an Inca citadel in Peru.", "Stocks fell.", "A dog runs in the park on a sunny day."]


def _lora_model(tiny_model_dir, seed=0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    for n, p in model.named_parameters():  # B != 0, so the adapter changes the states
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.2)
    return model.eval()


@pytest.mark.parametrize("share", [False, True])
def test_rollout_logprobs_equal_the_full_models_log_softmax(tiny_model_dir, tiny_encoder, share):
    model = _lora_model(tiny_model_dir)
    prompts = tiny_encoder.build_prompts(TEXTS)
    responses = [[40, 41, 1], [42], [43, 44, 45, 46, 1]]  # 1 is the EOS id: the stop decision is scored
    got = rollout_logprobs(model, prompts, responses, pad_id=0, temperature=0.7, share_prefix=share)
    for p, r, lp in zip(prompts, responses, got):
        ids = torch.tensor([list(p.ids) + r])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float()
        ref = torch.log_softmax(logits / 0.7, dim=-1)[len(p.ids) - 1:len(p.ids) - 1 + len(r)]
        want = ref.gather(1, torch.tensor(r).unsqueeze(1)).squeeze(1)
        assert torch.allclose(lp.detach(), want, atol=1e-4), (lp, want)


def test_shared_prefix_gives_the_same_embeddings_and_gradients(tiny_model_dir, tiny_encoder):
    prompts = tiny_encoder.build_prompts(TEXTS)
    rats = [[40, 41], [], [43, 44, 45]]
    grads = []
    for share in (False, True):
        model = _lora_model(tiny_model_dir)
        out = embed_ids(model, prompts, rats, pad_id=0, share_prefix=share, pooling="mean")
        lps = rollout_logprobs(model, prompts, [r + [1] for r in rats], pad_id=0, share_prefix=share)
        loss = out.embeddings.pow(3).sum() + torch.cat(lps).sum()
        loss.backward()
        grads.append(({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
                      out.embeddings.detach()))
    (g0, e0), (g1, e1) = grads
    assert torch.allclose(e0, e1, atol=1e-5)
    assert g0.keys() == g1.keys() and len(g0) > 0
    for n in g0:
        assert torch.allclose(g0[n], g1[n], atol=1e-4), n


def test_an_update_raises_positive_and_lowers_negative_advantage_rollouts(tiny_model_dir, tmp_path):
    """One optimizer step: a positive-advantage response (its EOS included) becomes more likely,
    a negative one less; flipping the advantages flips both."""
    for sign in (1.0, -1.0):
        trainer = Trainer(_cfg(tiny_model_dir, tmp_path / str(sign), lr=2e-3, updates_per_batch=1, rollouts=2))
        trainer._setup()
        p = trainer._build("Machu Picchu is an Inca citadel in Peru.")
        prompts, responses = [p, p], [[40, 41, 1], [50, 51, 52]]  # finished (EOS 1) / truncated
        with torch.no_grad():
            before = [x.clone() for x in rollout_logprobs(trainer.policy, prompts, responses, trainer.pad_id)]
        trainer._policy_update(prompts, responses, torch.tensor([sign, -sign]))
        with torch.no_grad():
            after = rollout_logprobs(trainer.policy, prompts, responses, trainer.pad_id)
        up, down = (0, 1) if sign > 0 else (1, 0)
        assert after[up].sum() > before[up].sum() and after[down].sum() < before[down].sum()
        # the ending token (EOS) is trained too: up with a positive advantage, down with a negative one
        assert (after[0][-1] > before[0][-1]) == (sign > 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none here); the meta-device test "
                                                          "covers tensors made on the wrong device")
def test_one_step_on_cuda(tiny_model_dir, tmp_path):
    res = train(_cfg(tiny_model_dir, tmp_path, device="cuda", steps=1))
    assert res.steps_done == 1


def test_simcse_views_differ_at_step_zero(tiny_model_dir, tmp_path):
    trainer = Trainer(_cfg(tiny_model_dir, tmp_path, method="simcse", mode="unsupervised",
                           data=str(SAMPLE_PASSAGES)))
    trainer._setup()
    trainer.policy.train()
    p = [trainer._build(t) for t in TEXTS]
    with torch.no_grad():
        a, b = trainer._embed_grad(p), trainer._embed_grad(p)
    assert not torch.allclose(a, b, atol=1e-6)  # attention dropout, set when the model was built
    trainer.policy.eval()
    with torch.no_grad():
        assert torch.allclose(trainer._embed_grad(p), trainer._embed_grad(p))


def test_kl_grows_and_a_larger_beta_keeps_the_policy_closer(tiny_model_dir, tiny_encoder, tmp_path):
    prompts = tiny_encoder.build_prompts(TEXTS)
    responses = [[40, 41, 1], [42, 1], [43, 44, 1]]
    drift = {}
    for beta in (0.0, 20.0):
        res = train(_cfg(tiny_model_dir, tmp_path / str(beta), kl_beta=beta, steps=3, lr=3e-2,
                         penalize_truncated=False))
        rows = [json.loads(x) for x in (res.output / "metrics.jsonl").read_text().splitlines()]
        if beta:
            assert rows[-1]["kl"] > 0
        from grace.model.backbone import load_backbone

        m = load_backbone(str(tiny_model_dir), adapter=str(res.adapter), device="cpu").model
        with torch.no_grad():
            tuned = torch.cat(rollout_logprobs(m, prompts, responses, 0))
            with m.disable_adapter():
                base = torch.cat(rollout_logprobs(m, prompts, responses, 0))
        drift[beta] = float((tuned - base).abs().mean())
    assert drift[20.0] < drift[0.0]


def test_length_penalty_end_to_end(tiny_model_dir, tmp_path):
    res = train(_cfg(tiny_model_dir, tmp_path, max_new_tokens=3, penalize_truncated=True, steps=1))
    row = json.loads((res.output / "metrics.jsonl").read_text().splitlines()[0])
    assert row["truncation_rate"] > 0 and row["reward/length_penalty"] < 0


def test_new_refusals(tiny_model_dir, tmp_path, monkeypatch):
    from grace.model import backbone
    from grace.training.trainer import training_dtype

    with pytest.raises(ValueError, match="--updates-per-batch must be at least 1"):
        _cfg(tiny_model_dir, tmp_path, updates_per_batch=0).validate()
    with pytest.raises(ValueError, match="--clip-eps must be above 0"):
        _cfg(tiny_model_dir, tmp_path, clip_eps=0).validate()
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="3 processes need --batch-size 3"):
        Trainer(_cfg(tiny_model_dir, tmp_path))
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setattr(backbone, "cpu_has_native_bf16", lambda: False)
    import grace.training.trainer as tr

    monkeypatch.setattr(tr, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        assert training_dtype("bfloat16", torch.device("cpu")) == "float32"
