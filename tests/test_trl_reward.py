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
    # the random tiny model never ends within 6 tokens: without the length penalty (tested on its own
    # below) its rewards still rank the rollouts
    reward = GraceReward(model, tok, settings=None, penalize_truncated=False)
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


POS = ["Machu Picchu is in Peru.", "Stocks fell.", "The cat sat on the mat."]
QS = ["Where is Machu Picchu?", "What did stocks do?", "Where did the cat sit?"]


def _rows(reward, groups):
    """TRL's layout: each group's completions consecutive; (prompts, query, positive)."""
    return ([reward.prompt_text(POS[g]) for g in groups], [QS[g] for g in groups], [POS[g] for g in groups])


def test_grace_reward_equals_grace_rewards_with_the_length_penalty(tiny_encoder):
    """Two groups of two completions, one truncated (no EOS at the end): GraceReward is
    grace_rewards on the policy's own embeddings, the length penalty included."""
    from grace.model.embedding import embed_ids
    from grace.training.rewards import grace_rewards
    from grace.training.trl_reward import GraceReward

    enc = tiny_encoder
    reward = GraceReward(enc.model, enc.tokenizer, lambda_consistency=0.5, lambda_hard=0.25,
                         reward_temperature=0.5, length_penalty=-2.0)
    prompts, qs, pos = _rows(reward, [0, 0, 1, 1])
    ids = [[10, 11, 1], [12, 1], [13, 14, 15], [16, 1]]  # the third hit the limit without ending
    got = reward(prompts=prompts, completions=["x"] * 4, completion_ids=ids, query=qs, positive=pos)
    rats = [[10, 11], [12], [13, 14, 15], [16]]
    h = embed_ids(enc.model, [enc.prompts.build(p) for p in pos], rats, pad_id=enc.pad_id).embeddings.view(2, 2, -1)
    a = torch.tensor(enc.encode([qs[0], qs[2]]))  # greedy, as inference and grace train decode anchors
    finished = torch.tensor([[True, True], [False, True]])
    want = grace_rewards(a, h, finished, lambda_consistency=0.5, lambda_hard=0.25, temperature=0.5,
                         length_penalty=-2.0)
    assert got == pytest.approx(want.total.flatten().tolist(), abs=1e-4)
    assert got[2] == -2.0 and got[0] != got[1]
    off = GraceReward(enc.model, enc.tokenizer, lambda_consistency=0.5, lambda_hard=0.25, reward_temperature=0.5,
                      penalize_truncated=False)(prompts=prompts, completions=["x"] * 4, completion_ids=ids,
                                                query=qs, positive=pos)
    assert off[2] != -2.0 and off[:2] == pytest.approx(got[:2], abs=1e-5)


def test_grace_reward_takes_its_defaults_from_grace_config(tiny_encoder):
    from grace.training.config import GraceConfig
    from grace.training.trl_reward import GraceReward

    r, c = GraceReward(tiny_encoder.model, tiny_encoder.tokenizer), GraceConfig()
    assert (r.lambda_consistency, r.lambda_hard, r.reward_temperature, r.length_penalty, r.penalize_truncated) == (
        c.lambda_consistency, c.lambda_hard, c.reward_temperature, c.length_penalty, c.truncation != "none")
    assert r.settings == c.encode_settings() and r.prompts.template.name == c.prompt
    assert r.anchor_temperature == 0.0  # greedy anchors, as grace train (the reference samples at 0.5)


def test_a_chat_template_prompt_keeps_its_special_tokens(tiny_chat_dir):
    """TRL tokenises the dataset's prompt text itself: it must give back P(positive) token for token,
    chat turn markers and a single BOS included, so TRL generates from the prompt the reward embeds."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from grace.training.data import SAMPLE_TRIPLETS, load_triplets
    from grace.training.trl_reward import GraceReward

    tok = AutoTokenizer.from_pretrained(tiny_chat_dir)
    reward = GraceReward(AutoModelForCausalLM.from_pretrained(tiny_chat_dir), tok)
    assert reward.prompts.use_chat
    triplets = load_triplets(SAMPLE_TRIPLETS).records[:3]
    data = reward.dataset(triplets)
    for row, t in zip(data, triplets):
        assert "<|user|>" in row["prompt"] and "<|assistant|>" in row["prompt"]
        trl_ids = tok(text=[row["prompt"]])["input_ids"][0]  # GRPOTrainer._tokenize_prompts
        assert trl_ids == reward.prompts.build(t.positive).ids
        assert trl_ids.count(tok.bos_token_id) == 1


def test_groups_that_straddle_processes_are_scored_over_the_whole_batch(tiny_encoder, monkeypatch):
    """TRL hands each process a contiguous slice of the generation batch and one prompt's completions
    may sit on two processes ([A A B | B C C]): two simulated processes (threads with an all-gather)
    return together what one process returns for the whole batch."""
    import threading

    from grace.training import trl_reward
    from grace.training.trl_reward import GraceReward

    enc = tiny_encoder
    reward = GraceReward(enc.model, enc.tokenizer, lambda_consistency=0.5, lambda_hard=0.25, reward_temperature=0.5)
    prompts, qs, pos = _rows(reward, [0, 0, 1, 1, 2, 2])
    ids = [[10, 11, 1], [12, 1], [13, 14, 15], [16, 1], [17, 1], [18, 19, 1]]
    whole = reward(prompts=prompts, completions=["x"] * 6, completion_ids=ids, query=qs, positive=pos)

    n, local = 2, threading.local()
    barrier, slots = threading.Barrier(n), [None] * n

    def gather(items):
        slots[local.rank] = items
        barrier.wait()
        out = [x for s in slots for x in s]
        barrier.wait()
        return out

    monkeypatch.setattr(trl_reward, "_world", lambda: (local.rank, n))
    monkeypatch.setattr(trl_reward, "_gather", gather)
    out, errors = [None] * n, []

    def process(rank):
        local.rank = rank
        s = slice(3 * rank, 3 * rank + 3)
        try:
            out[rank] = reward(prompts=prompts[s], completions=["x"] * 3, completion_ids=ids[s], query=qs[s],
                               positive=pos[s])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=process, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert out[0] + out[1] == pytest.approx(whole, abs=1e-5)


def test_groups_follow_the_prompt_and_query_of_consecutive_rows():
    from grace.training.trl_reward import _groups

    assert _groups(["a", "a", "b", "b", "a", "a"]) == [[0, 1], [2, 3], [4, 5]]
    assert _groups(["a", "a", "a", "a", "b", "b"]) == [[0, 1], [2, 3], [4, 5]]  # a row drawn twice in a row
    with pytest.raises(ValueError, match="num_generations"):
        _groups(["a", "b", "b"])
