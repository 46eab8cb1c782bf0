"""The policy-gradient machinery against references: log-probabilities vs the full model's
log_softmax, the shared prefix vs the plain layout (values and gradients), the clipped loss
against hand-computed values, the sign of an update, the wiring of a GRACE step (which prompts,
responses and advantages reach the update), the optimizer's moments across a resume, the stop
decision in the loss, KL, dropout for SimCSE. (Several processes: test_multiprocess.py.)"""

from __future__ import annotations

import json

import pytest
import torch

from grace.model.embedding import embed_ids
from grace.training.data import SAMPLE_PASSAGES
from grace.files.run_folder import RunFolder
from grace.training.policy import clipped_policy_loss, rollout_logprobs
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


def _row_by_row_logprobs(model, prompts, responses, temperature):
    """The reference: each row [prompt + response] through the whole model alone, log_softmax."""
    out = []
    for p, r in zip(prompts, responses):
        logits = model(input_ids=torch.tensor([list(p.ids) + list(r)])).logits[0].float()
        ref = torch.log_softmax(logits / temperature, dim=-1)[len(p.ids) - 1:len(p.ids) - 1 + len(r)]
        out.append(ref.gather(1, torch.tensor(list(r)).unsqueeze(1)).squeeze(1))
    return out


def test_a_groups_shared_prompt_gives_the_row_by_row_log_probabilities_and_gradients(tiny_model_dir, tiny_encoder):
    """K rollouts of one example share its prompt in the update (run once, the gradient flowing
    through it): values and LoRA gradients equal each row run alone through the whole model."""
    prompts = [p for p in tiny_encoder.build_prompts(TEXTS) for _ in range(3)]  # K = 3 per example
    responses = [[40, 41, 1], [42], [43, 44, 45, 46, 1], [47, 1], [48, 49], [1],
                 [50, 51, 52, 53, 54, 55, 1], [56], [57, 58, 1]]
    adv = torch.linspace(-1, 1, len(responses))
    results = []
    for shared in (True, False):
        model = _lora_model(tiny_model_dir)
        lps = (rollout_logprobs(model, prompts, responses, pad_id=0, temperature=0.7) if shared
               else _row_by_row_logprobs(model, prompts, responses, 0.7))
        (sum(a * lp.sum() for a, lp in zip(adv, lps))).backward()
        results.append(([lp.detach() for lp in lps],
                        {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (got, g_got), (want, g_want) = results
    for a, b in zip(got, want):
        assert torch.allclose(a, b, atol=1e-4), (a, b)
    assert g_got.keys() == g_want.keys() and len(g_got) > 0
    for n in g_got:
        assert torch.allclose(g_got[n], g_want[n], atol=1e-4, rtol=1e-3), n


@pytest.mark.parametrize("cap", [None, 5.0])
def test_chunked_output_layer_log_probabilities_and_gradients_equal_autograds(tiny_model_dir, monkeypatch, cap):
    """``token_logprobs`` (the output layer a chunk of rows at a time, the gradient formed in the
    forward pass) against autograd through log_softmax(lm_logits), with and without Gemma's
    soft-cap, over more rows than one chunk."""
    from grace.model import output_layer
    from grace.model.embedding import lm_logits

    model = _lora_model(tiny_model_dir)
    monkeypatch.setattr(model.get_base_model().config, "final_logit_softcapping", cap, raising=False)
    monkeypatch.setattr(output_layer, "CHUNK_ROWS", 7)
    d = model.get_base_model().config.hidden_size
    g = torch.Generator().manual_seed(0)
    states = torch.randn(20, d, generator=g) * 3
    targets = torch.randint(0, model.get_base_model().config.vocab_size, (20,), generator=g)
    weights = torch.randn(20, generator=g)
    a = states.clone().requires_grad_(True)
    got = output_layer.token_logprobs(model, a, targets, temperature=0.7)
    (got * weights).sum().backward()
    b = states.clone().requires_grad_(True)
    want = torch.log_softmax(lm_logits(model, b) / 0.7, dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1)
    (want * weights).sum().backward()
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(a.grad, b.grad, atol=1e-5)
    with torch.no_grad():  # and the no-gradient path gives the same values
        assert torch.allclose(output_layer.token_logprobs(model, states, targets, 0.7), want, atol=1e-5)


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


# clipped_policy_loss at eps = 0.2, written out by hand (rho = pi / pi_old):
#   PPO:       loss = max(-rho A, -clip(rho, 0.8, 1.2) A); "clipped" when the second term wins
#   dual clip: for A < 0 also loss = min(loss, -c A), c = 3; "capped" when that cap wins
#   d loss / d log pi = -rho A where the unclipped term is the loss, 0 where a clip or the cap is
# columns: rho, A, c, loss, clipped, capped, d loss / d log pi
LOSS_TABLE = [
    (0.5, 1.0, 3.0, -0.5, False, False, -0.5),  # A > 0, ratio fell: unclipped, pushed back up
    (1.0, 1.0, 3.0, -1.0, False, False, -1.0),
    (1.5, 1.0, 3.0, -1.2, True, False, 0.0),  # A > 0, ratio above 1.2: clipped, no gradient
    (5.0, 1.0, 3.0, -1.2, True, False, 0.0),
    (0.5, -1.0, 3.0, 0.8, True, False, 0.0),  # A < 0, ratio below 0.8: clipped
    (1.0, -1.0, 3.0, 1.0, False, False, 1.0),
    (1.5, -1.0, 3.0, 1.5, False, False, 1.5),  # A < 0, ratio rose: PPO does not clip it
    (2.5, -1.0, 3.0, 2.5, False, False, 2.5),  # below the cap -c A = 3
    (5.0, -1.0, 3.0, 3.0, False, True, 0.0),  # dual clip: min(5, 3)
    (5.0, -2.0, 3.0, 6.0, False, True, 0.0),  # min(10, 6)
    (5.0, -1.0, None, 5.0, False, False, 5.0),  # dual clip off (None or 0): unbounded
    (5.0, -2.0, 0.0, 10.0, False, False, 10.0),
    (5.0, 1.0, None, -1.2, True, False, 0.0),  # the cap never touches A > 0
]


@pytest.mark.parametrize("rho,adv,c,loss,clipped,capped,grad", LOSS_TABLE)
def test_clipped_policy_loss_by_hand(rho, adv, c, loss, clipped, capped, grad):
    old = torch.tensor([-1.3])
    logp = (old + torch.log(torch.tensor([rho]))).requires_grad_(True)
    got, was_clipped, was_capped = clipped_policy_loss(logp, old, torch.tensor([adv]), 0.2, c)
    got.sum().backward()
    assert got.item() == pytest.approx(loss, abs=1e-5)
    assert was_clipped.item() is clipped and was_capped.item() is capped
    assert logp.grad.item() == pytest.approx(grad, abs=1e-5)


def test_clipped_policy_loss_whole_table_at_once():
    """The same table as one tensor (per-token, no mixing between tokens), dual clip c = 3."""
    rows = [r for r in LOSS_TABLE if r[2] == 3.0]
    logp = torch.log(torch.tensor([r[0] for r in rows])).requires_grad_(True)
    adv = torch.tensor([r[1] for r in rows])
    got, was_clipped, was_capped = clipped_policy_loss(logp, torch.zeros(len(rows)), adv, 0.2, 3.0)
    got.sum().backward()
    assert torch.allclose(got, torch.tensor([r[3] for r in rows]), atol=1e-5)
    assert was_clipped.tolist() == [r[4] for r in rows] and was_capped.tolist() == [r[5] for r in rows]
    assert torch.allclose(logp.grad, torch.tensor([r[6] for r in rows]), atol=1e-5)


def test_log_ratio_is_clamped_to_20_as_verl_does():
    """verl clamps log(pi / pi_old) to [-20, 20] before exp: log-ratio 25 counts as 20, with no
    gradient beyond the bound; 19 is inside it."""
    old = torch.zeros(4)
    logp = torch.tensor([25.0, 19.0, -25.0, -19.0], requires_grad=True)
    adv = torch.tensor([-1.0, -1.0, 1.0, 1.0])
    got, _, _ = clipped_policy_loss(logp, old, adv, 0.2, None)  # no dual clip: the ratio shows through
    got.sum().backward()
    assert got[0].item() == pytest.approx(4.851652e8, rel=1e-5)  # e^20, not e^25 = 7.2e10
    assert got[1].item() == pytest.approx(1.784823e8, rel=1e-5)  # e^19
    assert got[2].item() == pytest.approx(-2.061154e-9, rel=1e-4)  # -e^-20
    assert torch.isfinite(got).all()
    assert logp.grad[0].item() == 0.0 and logp.grad[2].item() == 0.0
    assert logp.grad[1].item() == pytest.approx(1.784823e8, rel=1e-5)
    assert logp.grad[3].item() == pytest.approx(-5.602796e-9, rel=1e-4)  # -e^-19


def test_dual_clip_setting_is_validated(tiny_model_dir, tmp_path):
    assert _cfg(tiny_model_dir, tmp_path).dual_clip == 3.0  # verl's clip_ratio_c
    for off in (0.0, None, 1.5):
        _cfg(tiny_model_dir, tmp_path, dual_clip=off).validate()
    for bad in (1.0, 0.5, -2.0):
        with pytest.raises(ValueError, match="--dual-clip must be above 1"):
            _cfg(tiny_model_dir, tmp_path, dual_clip=bad).validate()


def test_one_update_moves_each_rollout_the_way_its_advantage_says(tiny_model_dir, tmp_path):
    """Two groups of three fixed rollouts, one optimizer step through ``policy_update`` (one
    mini-batch): the highest-advantage rollout gains log-probability, the lowest
    loses it, and within each group the rollouts move in the order of their advantages. A flipped
    sign, or advantages paired with the wrong rollouts (reversed, or one group's read for the
    other's), fail it."""
    trainer = Trainer(_cfg(tiny_model_dir, tmp_path, lr=2e-3, updates_per_batch=1, rollouts=3))
    trainer._setup()
    p1 = trainer._build("Machu Picchu is an Inca citadel in Peru.")
    p2 = trainer._build("Stocks fell sharply today.")
    prompts = [p1, p1, p1, p2, p2, p2]
    responses = [[40, 41, 1], [50, 51, 52], [60, 61, 62], [70, 71], [80, 81, 82], [90, 91, 92]]  # distinct tokens
    advantages = torch.tensor([0.2, -0.5, 0.3, -1.0, 1.2, -0.2])  # highest: 4, lowest: 3

    def logprobs() -> torch.Tensor:
        with torch.no_grad():
            return torch.stack([x.sum() for x in rollout_logprobs(trainer.policy, prompts, responses, trainer.pad_id,
                                                                   trainer.cfg.sampling_temperature)])

    before = logprobs()
    trainer._policy_update(prompts, responses, advantages.clone())
    change = logprobs() - before
    assert change[4] > 0 and change[3] < 0, change
    for g in (slice(0, 3), slice(3, 6)):
        assert torch.argsort(change[g]).tolist() == torch.argsort(advantages[g]).tolist(), (change, advantages)


def test_grace_step_feeds_the_update_the_right_prompts_responses_and_advantages(tiny_model_dir, tmp_path):
    """The step's wiring: anchors are the queries' greedy rationales (the same as a separate greedy
    pass), rollouts are sampled from the positives (K each, in order), and each rollout's advantage
    (computed here by hand from the recorded embeddings: eq. 13-18 in loops) reaches the update next
    to that rollout's response, with the sampling pass's log-probabilities as the old policy's."""
    k, tau, l1, l2 = 3, 0.1, 0.2, 1.0
    trainer = Trainer(_cfg(tiny_model_dir, tmp_path, rollouts=k, batch_size=2, updates_per_batch=1,
                           lambda_consistency=l1, lambda_hard=l2, reward_temperature=tau,
                           truncation="none", max_new_tokens=6))
    trainer._setup()
    calls, updates = [], []
    real_generate, real_update = trainer._generate, trainer._policy_update

    def generate(anchors, rollouts, seeds):
        out = real_generate(anchors, rollouts, seeds)
        calls.append((list(anchors), list(rollouts), out, trainer._rollouts(anchors, sample=False, seed=0)))
        return out

    def update(prompts, responses, advantages, batches=None, old_logprobs=None, finished=None, **kw):
        updates.append((list(prompts), [list(r) for r in responses], advantages.detach().clone(), batches,
                        old_logprobs))
        return real_update(prompts, responses, advantages, batches, old_logprobs, finished, **kw)

    trainer._generate, trainer._policy_update = generate, update
    batch, positions = trainer._batch(1)
    row = trainer._grace_step(batch, positions, 1)
    assert "dual_clip_fraction" in row  # cfg.dual_clip (3.0 by default) reaches policy_update
    (anchor_prompts, roll_prompts, (anchor, roll), alone), = calls
    queries = [trainer._build(t.query) for t in batch]
    positives = [trainer._build(t.positive) for t in batch for _ in range(k)]
    assert [p.ids for p in anchor_prompts] == [p.ids for p in queries]
    assert [p.ids for p in roll_prompts] == [p.ids for p in positives]
    assert anchor.rationales == alone.rationales  # the per-row greedy flag: the anchors inference makes
    assert torch.allclose(anchor.embeddings, alone.embeddings, atol=1e-5)
    (u_prompts, u_responses, u_adv, u_batches, u_old), = updates
    assert [p.ids for p in u_prompts] == [p.ids for p in positives]
    assert u_responses == [list(r) for r in roll.responses]
    assert u_batches == [list(range(2 * k))]  # B = 2, mini-batches of 2 examples: one, every rollout once
    assert u_old is roll.logprobs and [len(x) for x in u_old] == [len(r) for r in roll.responses]
    ha, hr = anchor.embeddings.double(), roll.embeddings.double()
    b = len(batch)
    reward = torch.zeros(b, k, dtype=torch.float64)
    for i in range(b):
        for j in range(k):
            h = hr[i * k + j]
            main = float(ha[i] @ h)
            cons = sum(float(h @ hr[i * k + m]) for m in range(k) if m != j) / (k - 1)
            hard = -sum(float(ha[o] @ h) for o in range(b) if o != i) / (b - 1)
            reward[i, j] = (main + l1 * cons + l2 * hard) / tau
    want = (reward - reward.mean(dim=1, keepdim=True)).flatten()
    # the tiny model's rollouts differ by little (advantages ~1e-4..1e-3), the float32 rounding of
    # the code is ~1e-6: a flipped sign or a permutation moves the values by far more than atol
    atol = 1e-5
    assert want.abs().max() > 20 * atol
    assert (want - want.flip(0)).abs().max() > 20 * atol and (want - want.roll(1)).abs().max() > 20 * atol
    assert torch.allclose(u_adv.double(), want, atol=atol, rtol=0), (u_adv, want)


def test_old_logprobs_from_the_sampling_pass_equal_a_recomputation(tiny_model_dir, tmp_path):
    """eq. 19's pi_old: the log-probabilities the sampling pass kept (at the rollout temperature,
    the ending token included) equal ``rollout_logprobs`` recomputed on the same responses."""
    trainer = Trainer(_cfg(tiny_model_dir, tmp_path, rollouts=3, max_new_tokens=8, sampling_temperature=0.7))
    trainer._setup()
    batch, positions = trainer._batch(1)
    anchors = [trainer._build(t.query) for t in batch]
    rollouts = [trainer._build(t.positive) for t in batch for _ in range(3)]
    with torch.no_grad():
        _, roll = trainer._generate(anchors, rollouts, list(range(6)))
        again = rollout_logprobs(trainer.policy, rollouts, roll.responses, trainer.pad_id, 0.7)
    assert roll.logprobs is not None and sum(len(r) for r in roll.responses) > 6
    assert any(roll.finished) and not all(roll.finished)  # rows that ended (their stop token scored) and cut ones
    for kept, recomputed in zip(roll.logprobs, again):
        assert torch.allclose(kept, recomputed, atol=1e-4), (kept, recomputed)


def test_a_rollout_does_not_depend_on_the_rows_beside_it(tiny_model_dir, tmp_path):
    """Each rollout draws from its own seeded generator: the same seed gives the same rollout
    alone or in a batch with others (so several processes sample what one would), another seed
    another rollout."""
    trainer = Trainer(_cfg(tiny_model_dir, tmp_path, max_new_tokens=8, sampling_temperature=1.5))
    trainer._setup()
    a, b = trainer._build(TEXTS[0]), trainer._build(TEXTS[2])
    with torch.no_grad():
        _, together = trainer._generate([a], [a, b, a, b], [11, 12, 13, 14])
        _, alone = trainer._generate([b], [b], [12])
    assert together.responses[1] == alone.responses[0]
    assert together.responses[0] != together.responses[2]  # seeds 11 and 13, the same prompt


def test_mini_batches_train_each_rollout_once_per_epoch(tiny_model_dir, tmp_path):
    from grace.training.policy import mini_batches

    assert mini_batches([0, 1, 2, 3], 2, 2, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert mini_batches([1, 3], 2, 2, 4) == [[0, 1], [2, 3]]  # rank 1 of 2 holds positions 1 and 3
    # B = 5 on 2 processes: both take 3 optimizer steps, rank 1 has nothing in the last one
    assert mini_batches([0, 2, 4], 1, 2, 5) == [[0], [1], [2]]
    assert mini_batches([1, 3], 1, 2, 5) == [[0], [1], []]
    res = train(_cfg(tiny_model_dir, tmp_path, batch_size=4, mini_batch_size=2, updates_per_batch=1, steps=1,
                     truncation="none", lr=2e-3))
    row = json.loads((res.output / "metrics.jsonl").read_text().splitlines()[0])
    assert row["optimizer_steps"] == 2  # 4 examples in mini-batches of 2, one epoch
    res = train(_cfg(tiny_model_dir, tmp_path / "b", batch_size=4, mini_batch_size=2, updates_per_batch=2, steps=1,
                     truncation="none", lr=2e-3))
    assert json.loads((res.output / "metrics.jsonl").read_text().splitlines()[0])["optimizer_steps"] == 4


def test_a_cut_rollout_weighs_as_one_average_rollout_under_sequence_mean(tiny_model_dir, tmp_path):
    """``cut_loss="sequence-mean"``: a cut 5-token rollout in a mini-batch of 4 rollouts (12 tokens,
    mean 3) has its tokens' losses scaled by 3 / 5, so its gradient equals token-mean's with
    its advantage scaled the same way (the clipped loss is linear in A at the first step's ratio 1)."""
    prompts_of = lambda t: [t._build(TEXTS[0])] * 2 + [t._build(TEXTS[1])] * 2  # noqa: E731
    responses = [[40, 41, 1], [50, 51], [60, 1], [70, 71, 72, 73, 74]]
    finished = [True, True, True, False]
    adv = torch.tensor([0.5, -0.5, 0.8, -0.2])
    grads = []
    for cut_loss, a in (("sequence-mean", adv), ("token-mean", adv * torch.tensor([1, 1, 1, 3 / 5]))):
        trainer = Trainer(_cfg(tiny_model_dir, tmp_path / cut_loss, lr=2e-3, rollouts=2))
        trainer._setup()
        seen = {}
        real_step = trainer._optimizer_step

        def step(backward, real_step=real_step, seen=seen):
            backward()
            seen.update({n: p.grad.clone() for n, p in trainer.policy.named_parameters() if p.grad is not None})
            return real_step(lambda: None)

        trainer._optimizer_step = step
        trainer.cfg.cut_rollout_loss = cut_loss
        trainer._policy_update(prompts_of(trainer), responses, a, [[0, 1, 2, 3]], None, finished)
        grads.append(seen)
    g1, g2 = grads
    assert g1.keys() == g2.keys() and len(g1) > 0
    for n in g1:
        assert torch.allclose(g1[n], g2[n], atol=1e-6, rtol=1e-4), (n, (g1[n] - g2[n]).abs().max(), g2[n].abs().max())


def test_each_mini_batch_is_its_own_token_mean(tiny_model_dir, tmp_path):
    """Two mini-batches in one call take the steps two calls of one mini-batch each take: the same
    gradient norms (a loss divided by the whole step's tokens instead of the mini-batch's would
    scale them) and the same weights; pi_old is the sampling policy's in both."""
    prompts, responses, adv, old = None, [[40, 41, 1], [50, 51], [60, 1], [70, 71, 72, 73, 74]], None, None
    results = []
    for split in (False, True):
        trainer = Trainer(_cfg(tiny_model_dir, tmp_path / str(split), lr=2e-3, rollouts=2))
        trainer._setup()
        p1, p2 = trainer._build(TEXTS[0]), trainer._build(TEXTS[1])
        prompts = [p1, p1, p2, p2]
        adv = torch.tensor([0.5, -0.5, 0.8, -0.8])
        with torch.no_grad():
            old = [x.detach() for x in rollout_logprobs(trainer.policy, prompts, responses, trainer.pad_id,
                                                        trainer.cfg.sampling_temperature)]
        if split:
            a = trainer._policy_update(prompts[:2], responses[:2], adv[:2], [[0, 1]], old[:2])
            b = trainer._policy_update(prompts[2:], responses[2:], adv[2:], [[0, 1]], old[2:])
            norms = [a["grad_norm"], b["grad_norm"]]
        else:
            one = trainer._policy_update(prompts, responses, adv, [[0, 1], [2, 3]], old)
            assert one["optimizer_steps"] == 2
            norms = [one["grad_norm"] * 2]  # the mean of its two steps, times 2
        results.append((norms, {n: p.detach().clone() for n, p in trainer.policy.named_parameters()
                                if p.requires_grad}))
    (together, w1), (apart, w2) = results
    assert together[0] == pytest.approx(sum(apart), rel=1e-5)
    assert apart[0] != pytest.approx(apart[1], rel=1e-2)  # the two mini-batches differ: the check can fail
    for n in w1:
        assert torch.allclose(w1[n], w2[n], atol=1e-7), n


def test_zero_advantage_groups_are_not_run_and_change_nothing(tiny_model_dir, tmp_path, monkeypatch):
    """A group whose advantages are all 0 is skipped (no forward pass), and the update equals the
    one that runs it with advantages of 1e-30 (the same token-mean, ~no gradient of its own)."""
    import grace.training.policy as policy

    weights, real = [], policy.rollout_logprobs
    for tiny in (0.0, 1e-30):
        trainer = Trainer(_cfg(tiny_model_dir, tmp_path / str(tiny), lr=2e-3, rollouts=2))
        trainer._setup()
        p1, p2 = trainer._build(TEXTS[0]), trainer._build(TEXTS[1])
        seen = []
        monkeypatch.setattr(policy, "rollout_logprobs",
                            lambda m, prompts, responses, *a, **kw: seen.append(list(responses)) or real(
                                m, prompts, responses, *a, **kw))
        stats = trainer._policy_update([p1, p1, p2, p2], [[40, 41, 1], [50, 51], [60, 1], [70, 71, 72]],
                                       torch.tensor([0.5, -0.5, tiny, -tiny]))
        run = [r for call in seen for r in call]
        assert ([60, 1] in run) == (tiny != 0.0)
        assert stats["skipped_rollouts"] == (0.5 if tiny == 0.0 else 0.0)
        weights.append({n: p.detach().clone() for n, p in trainer.policy.named_parameters() if p.requires_grad})
    for n in weights[0]:
        assert torch.allclose(weights[0][n], weights[1][n], atol=1e-7), n


def test_resume_restores_the_optimizer_moments(tiny_model_dir, tmp_path):
    """A resumed run's AdamW state is the checkpoint's (exp_avg, exp_avg_sq, step per tensor), and
    a run stopped after step 1 and resumed ends where an uninterrupted run does."""
    kw = dict(steps=2, save_every=1, updates_per_batch=2, lr=5e-3, truncation="none")  # A != 0
    seen = []
    train(_cfg(tiny_model_dir, tmp_path / "a", **kw), callback=seen.append,
          should_stop=lambda: any(e.get("event") == "step" for e in seen))
    ckpt = RunFolder(tmp_path / "a" / "run").latest_checkpoint()
    assert ckpt.name == "step-000001"
    saved = torch.load(RunFolder.checkpoint_optimizer(ckpt), weights_only=True)
    trainer = Trainer(_cfg(tiny_model_dir, tmp_path / "a", **kw))
    trainer._setup()
    state = trainer.optimizer.state_dict()["state"]
    assert saved["state"] and state.keys() == saved["state"].keys()
    for i, s in saved["state"].items():
        assert s["exp_avg"].abs().max() > 0 and s["exp_avg_sq"].abs().max() > 0
        assert torch.equal(state[i]["exp_avg"], s["exp_avg"]) and torch.equal(state[i]["exp_avg_sq"], s["exp_avg_sq"])
        assert float(state[i]["step"]) == float(s["step"]) == 2.0  # two updates on step 1's rollouts
    # the moments sit on the parameters they belong to (the optimizer's own view, by tensor)
    for p, i in zip(trainer.params, saved["param_groups"][0]["params"]):
        assert torch.equal(trainer.optimizer.state[p]["exp_avg"], saved["state"][i]["exp_avg"])
    resumed = train(_cfg(tiny_model_dir, tmp_path / "a", **kw))
    straight = train(_cfg(tiny_model_dir, tmp_path / "b", **kw))
    assert resumed.steps_done == straight.steps_done == 2
    from safetensors.torch import load_file

    wa = load_file(str(resumed.adapter / "adapter_model.safetensors"))
    wb = load_file(str(straight.adapter / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.allclose(wa[name], wb[name], atol=1e-6), name


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
    p = list(TEXTS)
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
        res = train(_cfg(tiny_model_dir, tmp_path / str(beta), kl_beta=beta, steps=3, lr=3e-2, updates_per_batch=4,
                         truncation="none"))
        rows = [json.loads(x) for x in (res.output / "metrics.jsonl").read_text().splitlines()]
        if beta:
            assert rows[-1]["kl"] > 0
        from grace.model.backbone import load_backbone

        m = load_backbone(str(tiny_model_dir), adapter=str(res.adapter), device="cpu", merge=False).model
        with torch.no_grad():
            tuned = torch.cat(rollout_logprobs(m, prompts, responses, 0))
            with m.disable_adapter():
                base = torch.cat(rollout_logprobs(m, prompts, responses, 0))
        drift[beta] = float((tuned - base).abs().mean())
    assert drift[20.0] < drift[0.0]


def test_length_penalty_end_to_end(tiny_model_dir, tmp_path):
    """3 new tokens: every rollout is cut. The reference's rule gives each the penalty, so every
    group's advantages are 0 and nothing is trained (no optimizer step); finished-mean gives each
    the fixed negative advantage, and the step trains them down (the log says so)."""
    res = train(_cfg(tiny_model_dir, tmp_path / "p", max_new_tokens=3, steps=1, truncation="penalty"))
    row = json.loads((res.output / "metrics.jsonl").read_text().splitlines()[0])
    assert row["truncation_rate"] == 1.0 and row["reward/length_penalty"] == -1.0
    assert row["skipped_rollouts"] == 1.0 and row["optimizer_steps"] == 0
    res = train(_cfg(tiny_model_dir, tmp_path / "f", max_new_tokens=3, steps=1, truncation="finished-mean"))
    row = json.loads((res.output / "metrics.jsonl").read_text().splitlines()[0])
    assert row["skipped_rollouts"] == 0.0 and row["optimizer_steps"] == 1
    assert row["reward/length_penalty"] == pytest.approx(-0.2)  # what every cut rollout was trained on


def test_new_refusals(tiny_model_dir, tmp_path, monkeypatch):
    from grace.model import backbone
    from grace.training.lora import training_dtype

    with pytest.raises(ValueError, match="--updates-per-batch must be at least 1"):
        _cfg(tiny_model_dir, tmp_path, updates_per_batch=0).validate()
    with pytest.raises(ValueError, match="--clip-eps must be above 0"):
        _cfg(tiny_model_dir, tmp_path, clip_eps=0).validate()
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="3 processes need --batch-size 3"):
        Trainer(_cfg(tiny_model_dir, tmp_path))
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setattr(backbone, "cpu_has_native_bf16", lambda: False)
    import grace.training.lora as lora

    monkeypatch.setattr(lora, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        assert training_dtype("bfloat16", torch.device("cpu")) == "float32"


def test_the_updates_embeddings_are_the_one_embedding_paths(tiny_model_dir, tiny_encoder):
    """GRACE + InfoNCE pools the rollouts' embeddings from the update's own pass: they equal
    ``embed_ids`` on (prompt, rationale), with the log-probabilities unchanged, for a rationale that
    ended by EOS, one cut at the limit (rationale = response) and one whose stop string spans two
    tokens (rationale = response minus two)."""
    from grace.training.policy import logprobs_and_embeddings

    model = _lora_model(tiny_model_dir)
    prompts = [p for p in tiny_encoder.build_prompts(TEXTS[:2]) for _ in range(2)]
    responses = [[40, 41, 1], [42, 43, 44], [45, 46, 47, 48], [49, 1]]
    rationales = [[40, 41], [42, 43, 44], [45, 46], [49]]
    for pooling, layer in (("mean", -1), ("rationale-mean", -2)):
        lps, emb = logprobs_and_embeddings(model, prompts, responses, rationales, 0, 0.7, pooling=pooling,
                                           layer=layer)
        want = embed_ids(model, prompts, rationales, pad_id=0, pooling=pooling, layer=layer).embeddings
        assert torch.allclose(emb, want, atol=1e-5), pooling
        for a, b in zip(lps, rollout_logprobs(model, prompts, responses, 0, 0.7)):
            assert torch.allclose(a, b, atol=1e-5)
    assert emb.requires_grad


def test_the_infonce_term_pulls_each_rollout_toward_its_own_anchor(tiny_model_dir, tmp_path):
    """Sign test: with every advantage 0 the policy loss adds no gradient, so the step is InfoNCE's
    alone; after it each rollout's embedding is closer to its own example's anchor, relative to the
    others (the InfoNCE of the same rollouts is lower)."""
    from grace.training.policy import ContrastiveTerm, logprobs_and_embeddings

    trainer = Trainer(_cfg(tiny_model_dir, tmp_path, lr=5e-3, rollouts=2, contrastive_weight=1.0))
    trainer._setup()
    prompts = [trainer._build(t) for t in TEXTS for _ in range(2)]
    responses = [[40, 41, 1], [42, 1], [43, 44, 1], [45, 1], [46, 47, 1], [48, 1]]
    rationales = [r[:-1] for r in responses]
    with torch.no_grad():
        anchors = embed_ids(trainer.policy, [trainer._build(t) for t in TEXTS], [[50], [51], [52]],
                            pad_id=trainer.pad_id).embeddings
    term = ContrastiveTerm(anchors, [0, 0, 1, 1, 2, 2], rationales, weight=1.0, temperature=0.05)

    def nce() -> float:
        with torch.no_grad():
            _, emb = logprobs_and_embeddings(trainer.policy, prompts, responses, rationales, trainer.pad_id, 0.7,
                                             pooling="mean", layer=-1)
        return float(torch.nn.functional.cross_entropy(emb @ anchors.T / 0.05, torch.tensor([0, 0, 1, 1, 2, 2])))

    before = nce()
    stats = trainer._policy_update(prompts, responses, torch.zeros(6), [list(range(6))], None,
                                   [True] * 6, contrastive=term)
    assert stats["optimizer_steps"] == 1 and stats["skipped_rollouts"] == 0.0  # zero advantages still run
    assert stats["infonce"] == pytest.approx(before, rel=1e-3)
    assert nce() < before


def test_grace_with_infonce_trains_end_to_end_and_is_labelled_as_its_own_method(tiny_model_dir, tmp_path):
    cfg = _cfg(tiny_model_dir, tmp_path, steps=1, contrastive_weight=0.5)
    assert cfg.method_label == "GRACE + InfoNCE (weight 0.5) supervised"
    assert _cfg(tiny_model_dir, tmp_path).method_label == "GRACE supervised"
    row = json.loads((train(cfg).output / "metrics.jsonl").read_text().splitlines()[0])
    assert row["infonce"] > 0
    with pytest.raises(ValueError, match="needs --method grace"):
        _cfg(tiny_model_dir, tmp_path, method="cl", contrastive_weight=0.5).validate()
