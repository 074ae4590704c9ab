"""The PPO building blocks (methods/ppo_math.py) pinned to values worked out by hand below.

Tensors are tiny and hand-made; padded entries hold NaN or large junk so that a function which
reads them gives a different number."""

import math

import pytest
import torch

from unlearnbench.errors import BenchError
from unlearnbench.methods.ppo_math import (AdaptiveKLController, FixedKLController, clipped_policy_loss,
                                           clipped_value_loss, gae, kl_penalized_rewards, logprobs_from_logits,
                                           masked_mean, whiten)

NAN = float("nan")


def tensor(rows):
    return torch.tensor(rows, dtype=torch.float64)


def close(actual, expected, atol=1e-9):
    torch.testing.assert_close(actual, tensor(expected) if not isinstance(expected, torch.Tensor) else expected,
                               rtol=0, atol=atol, check_dtype=False)


# ---- masked_mean, logprobs_from_logits ------------------------------------------------------------


def test_masked_mean_counts_only_masked_entries():
    x = tensor([[1.0, 2.0, NAN], [4.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert float(masked_mean(x, mask)) == pytest.approx((1.0 + 2.0 + 4.0) / 3)
    assert float(masked_mean(x, mask.bool())) == pytest.approx(7.0 / 3)
    close(masked_mean(x, mask, dim=1), [(1.0 + 2.0) / 2, 4.0 / 1])


def test_masked_mean_of_nothing_is_zero_not_nan():
    assert float(masked_mean(tensor([[NAN, 5.0]]), torch.zeros(1, 2))) == 0.0


def test_logprobs_from_logits_gathers_log_softmax_at_the_tokens():
    logits = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [5.0, 1.0, 1.0]]])
    tokens = torch.tensor([[2, 1, 0]])
    log_z0 = math.log(math.exp(1.0) + math.exp(2.0) + math.exp(3.0))
    log_z2 = math.log(math.exp(5.0) + 2 * math.exp(1.0))
    expected = [[3.0 - log_z0, -math.log(3.0), 5.0 - log_z2]]
    out = logprobs_from_logits(logits.to(torch.bfloat16), tokens)
    assert out.dtype == torch.float32  # computed in float32 whatever the logits' precision
    close(out, expected, atol=1e-6)


# ---- kl_penalized_rewards -------------------------------------------------------------------------


def test_rewards_are_minus_beta_kl_plus_score_at_last_response_token():
    beta = 0.1
    logprobs = tensor([[-1.0, -2.0, -0.5],
                       [-0.2, -0.7, NAN],    # right padding
                       [NAN, -1.0, -1.0]])   # left padding (prompt): last token is index 2, not sum(mask) − 1
    ref = tensor([[-1.5, -1.0, -0.5],
                  [-0.4, -0.3, 5.0],
                  [NAN, -1.0, -2.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [0, 1, 1]])
    score = tensor([2.0, -1.0, 3.0])
    rewards, kl = kl_penalized_rewards(logprobs, ref, score, mask, beta)
    # kl = logprob − ref, 0 on padding
    close(kl, [[-1.0 - -1.5, -2.0 - -1.0, -0.5 - -0.5],
               [-0.2 - -0.4, -0.7 - -0.3, 0.0],
               [0.0, -1.0 - -1.0, -1.0 - -2.0]])
    close(rewards, [[-0.1 * 0.5, -0.1 * -1.0, -0.1 * 0.0 + 2.0],      # [-0.05, 0.1, 2.0]
                    [-0.1 * 0.2, -0.1 * -0.4 + -1.0, 0.0],             # [-0.02, -0.96, 0]
                    [0.0, -0.1 * 0.0, -0.1 * 1.0 + 3.0]])              # [0, 0, 2.9]


def test_score_lands_on_last_response_token_only_once():
    zeros = torch.zeros(3, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]])
    score = tensor([5.0, 7.0, NAN])  # a row with no response token drops its score
    rewards, _ = kl_penalized_rewards(zeros, zeros, score, mask, kl_coef=0.5)
    close(rewards, [[0.0, 0.0, 0.0, 5.0], [7.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


# ---- gae ------------------------------------------------------------------------------------------


def test_gae_with_gamma_lambda_one_is_reward_to_go_minus_value():
    rewards = tensor([[1.0, 2.0, 3.0], [1.0, -1.0, 100.0]])
    values = tensor([[0.5, 1.0, -1.0], [2.0, 3.0, 50.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    # reward-to-go: row 0 [1+2+3, 2+3, 3] = [6, 5, 3]; row 1 [1−1, −1] = [0, −1] (the padded 100 and 50 unread)
    close(advantages, [[6.0 - 0.5, 5.0 - 1.0, 3.0 - -1.0], [0.0 - 2.0, -1.0 - 3.0, 0.0]])
    close(returns, [[6.0, 5.0, 3.0], [0.0, -1.0, 0.0]])


def test_gae_step_by_step_with_gamma_and_lambda():
    g, lam = 0.9, 0.95
    rewards = tensor([[0.5, -1.0, 2.0, NAN]])
    values = tensor([[1.0, 0.4, -0.2, 9.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    # t = 3 is padding: V_3 and A_3 count as 0.
    delta2 = 2.0 + g * 0.0 - (-0.2)           # 2.2
    a2 = delta2 + g * lam * 0.0               # 2.2
    delta1 = -1.0 + g * -0.2 - 0.4            # −1.58
    a1 = delta1 + g * lam * a2                # −1.58 + 0.855·2.2 = 0.301
    delta0 = 0.5 + g * 0.4 - 1.0              # −0.14
    a0 = delta0 + g * lam * a1                # −0.14 + 0.855·0.301 = 0.117355
    assert (a0, a1, a2) == pytest.approx((0.117355, 0.301, 2.2))
    advantages, returns = gae(rewards, values, mask, gamma=g, lam=lam)
    close(advantages, [[a0, a1, a2, 0.0]])
    close(returns, [[a0 + 1.0, a1 + 0.4, a2 + -0.2, 0.0]])


def test_gae_outputs_are_detached_targets():
    rewards = tensor([[0.0, 1.0]]).requires_grad_()
    values = tensor([[1.0, 2.0]]).requires_grad_()
    advantages, returns = gae(rewards, values, torch.ones(1, 2), gamma=1.0, lam=1.0)
    close(advantages, [[1.0 - 1.0, 1.0 - 2.0]])
    assert not advantages.requires_grad and not returns.requires_grad


# ---- whiten ---------------------------------------------------------------------------------------


def test_whiten_uses_masked_entries_only_with_the_biased_variance():
    x = tensor([[1.0, 2.0, 3.0, 1000.0], [6.0, NAN, -50.0, 7.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    # masked entries 1, 2, 3, 6: μ = 12/4 = 3, deviations −2, −1, 0, 3, σ² = (4+1+0+9)/4 = 3.5
    s = math.sqrt(3.5 + 1e-8)
    w = whiten(x, mask)
    close(w, [[-2.0 / s, -1.0 / s, 0.0, 0.0], [3.0 / s, 0.0, 0.0, 0.0]])
    picked = w[mask.bool()]
    assert float(picked.mean()) == pytest.approx(0.0, abs=1e-12)
    assert float(picked.var(unbiased=False)) == pytest.approx(1.0, abs=1e-6)
    close(whiten(x, mask, shift_mean=False), [[-2.0 / s + 3, -1.0 / s + 3, 3.0, 0.0], [3.0 / s + 3, 0.0, 0.0, 0.0]])


# ---- clipped_policy_loss --------------------------------------------------------------------------


def test_policy_loss_picks_the_pessimistic_branch_on_each_side_of_the_clip():
    eps = 0.2
    old = tensor([[-1.0, -1.0, -1.0], [-1.0, -1.0, 0.0]])
    ratios = [[1.5, 1.5, 0.5], [0.5, 1.1, 1.0]]
    logprobs = (old + torch.log(tensor(ratios))).clone()
    old[1, 2] = -math.inf  # padding: a rollout log-prob of −inf (fp16) must not give inf · 0 = NaN gradients
    logprobs[1, 2] = 10.0  # and a ratio of e^10 there would count as clipped and dominate the mean
    logprobs.requires_grad_()
    advantages = tensor([[2.0, -1.0, 1.0], [-2.0, 3.0, NAN]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    loss, clip_fraction, approx_kl = clipped_policy_loss(logprobs, old, advantages, mask, eps)
    # per token max(−Aρ, −A·clip(ρ, 0.8, 1.2)):
    t0 = max(-2.0 * 1.5, -2.0 * 1.2)     # ρ above, A > 0: clipped −2.4 (no reward for moving further)
    t1 = max(1.0 * 1.5, 1.0 * 1.2)       # ρ above, A < 0: unclipped 1.5 (the penalty is not capped)
    t2 = max(-1.0 * 0.5, -1.0 * 0.8)     # ρ below, A > 0: unclipped −0.5
    t3 = max(2.0 * 0.5, 2.0 * 0.8)       # ρ below, A < 0: clipped 1.6
    t4 = max(-3.0 * 1.1, -3.0 * 1.1)     # inside the range: −3.3
    assert (t0, t1, t2, t3, t4) == pytest.approx((-2.4, 1.5, -0.5, 1.6, -3.3))
    assert loss.item() == pytest.approx((t0 + t1 + t2 + t3 + t4) / 5)   # −0.62
    assert float(clip_fraction) == pytest.approx(4 / 5)                 # all but the ρ = 1.1 token
    assert float(approx_kl) == pytest.approx(
        (0.5 * math.log(1.5) ** 2 * 2 + 0.5 * math.log(0.5) ** 2 * 2 + 0.5 * math.log(1.1) ** 2) / 5)
    # The clipped branch passes no gradient; the unclipped one d(−Aρ)/d log π = −Aρ, over N = 5.
    loss.backward()
    close(logprobs.grad, [[0.0, 1.0 * 1.5 / 5, -1.0 * 0.5 / 5], [0.0, -3.0 * 1.1 / 5, 0.0]], atol=1e-7)
    assert not clip_fraction.requires_grad and not approx_kl.requires_grad


# ---- clipped_value_loss ---------------------------------------------------------------------------


def test_value_loss_clips_both_ways_and_keeps_the_larger_error():
    eps_v = 0.2
    old = tensor([[1.0, 1.0, 0.0, 0.0, 0.0]])
    values = tensor([[1.5, 1.5, -0.6, -0.6, 1e6]]).requires_grad_()
    returns = tensor([[2.0, 1.0, -1.0, 0.5, NAN]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    loss = clipped_value_loss(values, old, returns, mask, eps_v)
    # V_clip = old + clip(V − old, ±0.2): 1.2, 1.2 (clipped up), −0.2, −0.2 (clipped down)
    t0 = max((1.5 - 2.0) ** 2, (1.2 - 2.0) ** 2)      # 0.25 vs 0.64: clipped
    t1 = max((1.5 - 1.0) ** 2, (1.2 - 1.0) ** 2)      # 0.25 vs 0.04: unclipped
    t2 = max((-0.6 - -1.0) ** 2, (-0.2 - -1.0) ** 2)  # 0.16 vs 0.64: clipped
    t3 = max((-0.6 - 0.5) ** 2, (-0.2 - 0.5) ** 2)    # 1.21 vs 0.49: unclipped
    assert (t0, t1, t2, t3) == pytest.approx((0.64, 0.25, 0.64, 1.21))
    assert loss.item() == pytest.approx(0.5 * (t0 + t1 + t2 + t3) / 4)   # 0.3425
    # Gradient ½·2(V − R)/4 through the unclipped branch only.
    loss.backward()
    close(values.grad, [[0.0, (1.5 - 1.0) / 4, 0.0, (-0.6 - 0.5) / 4, 0.0]])


# ---- KL controllers -------------------------------------------------------------------------------


def test_adaptive_kl_controller_clips_the_proportional_error():
    controller = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10000)
    controller.update(current_kl=9.0, n_steps=256)    # 9/6 − 1 = 0.5, clipped to 0.2
    assert controller.value == pytest.approx(0.2 * (1 + 0.2 * 256 / 10000))              # 0.201024
    controller.update(current_kl=1.0, n_steps=256)    # 1/6 − 1 = −0.833, clipped to −0.2
    assert controller.value == pytest.approx(0.2 * 1.00512 * (1 - 0.2 * 256 / 10000))    # ·0.99488
    controller.update(current_kl=6.6, n_steps=100)    # 6.6/6 − 1 = 0.1, inside the clip
    assert controller.value == pytest.approx(0.2 * 1.00512 * 0.99488 * (1 + 0.1 * 100 / 10000))


def test_adaptive_kl_controller_rejects_a_nonpositive_target_or_horizon():
    with pytest.raises(BenchError):
        AdaptiveKLController(0.2, target=0.0, horizon=10000)
    with pytest.raises(BenchError):
        AdaptiveKLController(0.2, target=6.0, horizon=0)


def test_fixed_kl_controller_never_moves():
    controller = FixedKLController(0.05)
    controller.update(current_kl=100.0, n_steps=1000)
    assert controller.value == 0.05


def test_scores_are_standardised_over_the_batch_with_the_biased_variance():
    from unlearnbench.methods.ppo_math import normalized_scores

    # mean 2.5, biased variance ((1.5² + 0.5²) · 2) / 4 = 1.25: (s − 2.5) / √1.25
    expected = torch.tensor([-1.5, -0.5, 0.5, 1.5]) / 1.25 ** 0.5
    assert torch.allclose(normalized_scores(torch.tensor([1.0, 2.0, 3.0, 4.0])), expected, atol=1e-6)
    assert normalized_scores(torch.tensor([7.0])).tolist() == [0.0]  # one rollout: no preference, no NaN
    assert normalized_scores(torch.tensor([7.0, 7.0])).tolist() == [0.0, 0.0]


# ---- rollout_masks --------------------------------------------------------------------------------


def test_rollout_masks_end_each_response_at_its_first_eos():
    from unlearnbench.methods.ppo_math import rollout_masks

    EOS = 9
    prompt_mask = torch.tensor([[0, 1], [1, 1]])  # row 0 is left-padded
    out = torch.tensor([[0, 5, 6, EOS, 7],  # response 6 EOS, then padding after the EOS
                        [5, 5, EOS, EOS, 6]])  # response EOS at once; what follows is not response
    response_mask, mask, last_index = rollout_masks(out, prompt_mask, EOS)
    assert response_mask.tolist() == [[True, True, False], [True, False, False]]
    assert mask.tolist() == [[0, 1, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert last_index.tolist() == [3, 2]  # each row's first EOS, where the reward model reads its score
    response_mask, mask, last_index = rollout_masks(out, prompt_mask, None)  # no EOS: every new token counts
    assert response_mask.all() and mask.tolist() == [[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]] and last_index.tolist() == [4, 4]
