"""GRACE rewards inside trl.GRPOTrainer: two steps on the tiny model, on the CPU."""

import pytest
import torch


@pytest.mark.slow  # two real trl.GRPOTrainer steps
def test_grpo_trainer_runs_two_steps_with_grace_rewards(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from grace.training.data import SAMPLE_TRIPLETS, load_triplets
    from grace.training.trl_reward import GraceReward

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    reward = GraceReward(model, tok, settings=None)
    calls = []

    def recorded(**kw):
        out = reward(**kw)
        calls.append(out)
        return out

    recorded.__name__ = "grace"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = GRPOConfig(output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=6, max_steps=2, learning_rate=1e-2, scale_rewards="none",
                      logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False,
                      temperature=1.0)
    data = reward.dataset(load_triplets(SAMPLE_TRIPLETS).records[:8])
    trainer = GRPOTrainer(model=model, reward_funcs=recorded, train_dataset=data, args=args, processing_class=tok)
    trainer.train()
    assert len(calls) == 2 and all(len(c) == 4 for c in calls)
    # within a group the rewards differ (they rank the rollouts), and the weights moved
    assert any(c[0] != c[1] or c[2] != c[3] for c in calls)
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_grace_reward_matches_the_reward_functions(tiny_encoder):
    """Two groups of two completions: the reward is eq. 13-17 on the policy's own embeddings."""
    from grace.model.embedding import embed_ids
    from grace.training.rewards import consistency_reward, hard_negative_reward
    from grace.training.trl_reward import GraceReward

    enc = tiny_encoder
    reward = GraceReward(enc.model, enc.tokenizer, lambda_consistency=0.5, lambda_hard=0.25, reward_temperature=0.5)
    pos = ["Machu Picchu is in Peru.", "Machu Picchu is in Peru.", "Stocks fell.", "Stocks fell."]
    qs = ["Where is Machu Picchu?"] * 2 + ["What did stocks do?"] * 2
    ids = [[10, 11, 1], [12, 1], [13, 14, 15], [16]]
    got = reward(prompts=pos, completions=["x"] * 4, completion_ids=ids, query=qs, positive=pos)
    rats = [[10, 11], [12], [13, 14, 15], [16]]
    h = embed_ids(enc.model, [enc.prompts.build(p) for p in pos], rats, pad_id=enc.pad_id).embeddings.view(2, 2, -1)
    anchors = enc.encode([qs[0], qs[2]])  # greedy, the default EncodeSettings
    a = torch.tensor(anchors)
    main = torch.einsum("bd,bkd->bk", a, h)
    want = (main + 0.5 * consistency_reward(h) + 0.25 * hard_negative_reward(a, h)) / 0.5
    assert got == pytest.approx(want.flatten().tolist(), abs=1e-4)
