"""Rewards against values computed by hand on 2-d unit vectors (B=2 examples, K=2 rollouts)."""

import pytest
import torch

from grace.training.rewards import (consistency_reward, contrastive_reward, grace_rewards, group_advantage,
                                   hard_negative_reward, negatives_by_example, self_reward,
                                   total_reward)

Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
POS = torch.tensor([[[1.0, 0.0], [0.6, 0.8]], [[0.0, 1.0], [1.0, 0.0]]])
NEG = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])


def test_contrastive_eq13():
    assert torch.allclose(contrastive_reward(Q, POS, NEG), torch.tensor([[1.0, 0.6], [1.0, 0.0]]))
    two_negs = torch.stack([NEG[:, 0], torch.tensor([[0.6, 0.8], [0.6, 0.8]])], dim=1)  # means .3 and .4
    assert torch.allclose(contrastive_reward(Q, POS, two_negs), torch.tensor([[0.7, 0.3], [0.6, -0.4]]))


def test_consistency_eq14():
    assert torch.allclose(consistency_reward(POS), torch.tensor([[0.6, 0.6], [0.0, 0.0]]))
    three = torch.tensor([[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]])  # pairs: .6, 0, .8
    assert torch.allclose(consistency_reward(three), torch.tensor([[0.3, 0.7, 0.4]]))
    with pytest.raises(ValueError):
        consistency_reward(POS[:, :1])


def test_hard_negative_eq15():
    # per rollout: - mean_{j != i} sim(q_j, d+_i^k)
    assert torch.allclose(hard_negative_reward(Q, POS), torch.tensor([[0.0, -0.8], [0.0, -1.0]]))
    # as printed: - mean_{j != i} max_l sim(q_i, d+_j^l), the same for every k
    with pytest.raises(ValueError):
        hard_negative_reward(Q[:1], POS[:1])


def test_self_reward_eq20():
    assert torch.allclose(self_reward(Q, POS), torch.tensor([[1.0, 0.6], [1.0, 0.0]]))


def test_total_temperature_length_penalty_and_advantage():
    r = total_reward(contrastive_reward(Q, POS, NEG), consistency_reward(POS), hard_negative_reward(Q, POS),
                     lambda_consistency=0.5, lambda_hard=0.5, temperature=0.5)
    assert torch.allclose(r.total, torch.tensor([[2.6, 1.0], [2.0, -1.0]]))
    assert torch.equal(r.length_penalty, torch.zeros(2, 2))
    truncated = torch.tensor([[False, True], [False, False]])
    r = total_reward(r.main, r.consistency, r.hard_negative, lambda_consistency=0.5, lambda_hard=0.5,
                     temperature=0.5, truncated=truncated, length_penalty=-1.0)
    assert torch.allclose(r.total, torch.tensor([[2.6, -1.0], [2.0, -1.0]]))
    assert torch.allclose(r.length_penalty, torch.tensor([[0.0, -1.0], [0.0, 0.0]]))
    # eq. 18: reward minus the group mean, no std division
    assert torch.allclose(group_advantage(r.total), torch.tensor([[1.8, -1.8], [1.5, -1.5]]))
    with pytest.raises(ValueError):
        total_reward(r.main, r.consistency, r.hard_negative, lambda_consistency=0, lambda_hard=0, temperature=0)


def test_contrastive_with_ragged_negatives():
    # example 0 has one negative ([0, 1]: sim 0), example 1 has two ([1, 0]: 0 and [0.6, 0.8]: 0.8, mean 0.4)
    neg = torch.tensor([[[0.0, 1.0], [9.0, 9.0]], [[1.0, 0.0], [0.6, 0.8]]])
    mask = torch.tensor([[True, False], [True, True]])
    assert torch.allclose(contrastive_reward(Q, POS, neg, mask), torch.tensor([[1.0, 0.6], [0.6, -0.4]]))


def test_rewards_make_every_tensor_on_the_inputs_device():
    """On the meta device any tensor created on the CPU by mistake makes this fail."""
    b, k, d = 3, 4, 8
    anchors = torch.empty(b, d, device="meta")
    rollouts = torch.empty(b, k, d, device="meta")
    finished = torch.ones(b, k, dtype=torch.bool, device="meta")
    r = grace_rewards(anchors, rollouts, finished, lambda_consistency=0.2, lambda_hard=0.2, temperature=0.1)
    for t in (r.main, r.consistency, r.hard_negative, r.length_penalty, r.total, r.advantage):
        assert t.device.type == "meta" and t.shape == (b, k)


def test_rewards_values_and_the_length_penalty():
    a = torch.nn.functional.normalize(torch.randn(2, 5), dim=-1)
    h = torch.nn.functional.normalize(torch.randn(2, 3, 5), dim=-1)
    fin = torch.tensor([[True, False, True], [True, True, True]])
    r = grace_rewards(a, h, fin, lambda_consistency=0.5, lambda_hard=0.0, temperature=0.5, length_penalty=-1.0)
    assert r.total[0, 1] == -1.0
    sim = torch.einsum("bd,bkd->bk", a, h)
    assert torch.allclose(r.main, sim)
    assert torch.allclose(r.advantage, r.total - r.total.mean(dim=1, keepdim=True))


def test_negatives_are_laid_out_per_example():
    h = torch.arange(6.0).view(3, 2)  # example 0 has two negatives, example 1 one
    neg, mask = negatives_by_example(h, [2, 1])
    assert torch.equal(neg, torch.tensor([[[0.0, 1.0], [2.0, 3.0]], [[4.0, 5.0], [0.0, 0.0]]]))
    assert mask.tolist() == [[True, True], [True, False]]


# One group of K = 4 with totals (before any truncation rule) 2, 4, 9, 6 (lambda = 0, tau = 1, the
# main term only); rollout 2 hit the length limit. By hand:
#   penalty        totals 2, 4, -1, 6; mean 11/4       -> advantages -0.75, 1.25, -3.75, 3.25
#   finished-mean  mean over 2, 4, 6 = 4; fixed -0.2   -> -2, 0, -0.2, 2
#   mask           mean over 2, 4, 6 = 4; unfinished 0 -> -2, 0, 0, 2
#   none           mean of 2, 4, 9, 6 = 5.25           -> -3.25, -1.25, 3.75, 0.75
TRUNCATION_TABLE = {"penalty": [-0.75, 1.25, -3.75, 3.25], "finished-mean": [-2.0, 0.0, -0.2, 2.0],
                    "mask": [-2.0, 0.0, 0.0, 2.0], "none": [-3.25, -1.25, 3.75, 0.75]}


@pytest.mark.parametrize("rule", sorted(TRUNCATION_TABLE))
def test_truncation_rules_by_hand(rule):
    a = torch.tensor([[1.0, 0.0]])
    h = torch.tensor([[[2.0, 0.0], [4.0, 0.0], [9.0, 0.0], [6.0, 0.0]]])  # main = sim(anchor, rollout) = x
    fin = torch.tensor([[True, True, False, True]])
    r = grace_rewards(a, h, fin, lambda_consistency=0.0, lambda_hard=0.0, temperature=1.0, length_penalty=-1.0,
                      truncation=rule, truncated_advantage=-0.2)
    assert r.advantage[0].tolist() == pytest.approx(TRUNCATION_TABLE[rule])


def test_a_group_with_nothing_finished_under_finished_mean_and_mask():
    a, h = torch.tensor([[1.0, 0.0]]), torch.tensor([[[2.0, 0.0], [4.0, 0.0]]])
    fin = torch.zeros(1, 2, dtype=torch.bool)
    kw = dict(lambda_consistency=0.0, lambda_hard=0.0, temperature=1.0, truncated_advantage=-0.2)
    assert grace_rewards(a, h, fin, truncation="finished-mean", **kw).advantage.tolist() == [[pytest.approx(-0.2)] * 2]
    assert grace_rewards(a, h, fin, truncation="mask", **kw).advantage.tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError, match="Unknown truncation rule 'cut'"):
        grace_rewards(a, h, fin, truncation="cut", **kw)


def test_group_std_scales_each_groups_advantages_and_keeps_a_cut_rollouts_fixed_value():
    """GRPO's scale, by hand on the table's group (totals 2, 4, 9, 6; rollout 2 cut): under
    finished-mean the finished rewards 2, 4, 6 have mean 4 and sample std 2, so -1, 0, 1, and the
    cut rollout keeps -0.2; under none all four (std of 2, 4, 9, 6) are divided."""
    a = torch.tensor([[1.0, 0.0]])
    h = torch.tensor([[[2.0, 0.0], [4.0, 0.0], [9.0, 0.0], [6.0, 0.0]]])
    fin = torch.tensor([[True, True, False, True]])
    kw = dict(lambda_consistency=0.0, lambda_hard=0.0, temperature=1.0, advantage_scale="group-std")
    r = grace_rewards(a, h, fin, truncation="finished-mean", truncated_advantage=-0.2, **kw)
    assert torch.allclose(r.advantage, torch.tensor([[-1.0, 0.0, -0.2, 1.0]]), atol=1e-5)
    assert torch.allclose(r.length_penalty, torch.tensor([[0.0, 0.0, -0.2, 0.0]]))  # what the cut one was trained on
    r = grace_rewards(a, h, fin, truncation="none", **kw)
    x = torch.tensor([2.0, 4.0, 9.0, 6.0])
    assert torch.allclose(r.advantage[0], (x - x.mean()) / x.std(), atol=1e-5)
    with pytest.raises(ValueError, match="advantage scale"):
        grace_rewards(a, h, fin, lambda_consistency=0.0, lambda_hard=0.0, temperature=1.0, advantage_scale="z")
