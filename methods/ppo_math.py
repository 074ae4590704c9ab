"""The pure-math building blocks of the RLHF/PPO baseline (InstructGPT /
Ziegler et al. 2019 PPO with a value head, as TRL's PPOTrainer computes it). The `ppo` method
that wires them to generation, a reward model and a value head is not part of this file.

Conventions shared by every function here (tensors are batch-first, [B, T]):

  - position t of every tensor is the same response token y_t: logprobs[:, t] = log π(y_t | x, y_<t),
    values[:, t] = V(x, y_<t), the value of the state in which y_t is chosen. Aligning the model's
    outputs to the tokens (the one-position shift) is the caller's job.
  - mask[b, t] = 1 on response tokens and 0 elsewhere (prompt, padding, anything after EOS);
    bool or float. Entries where m_t = 0 never enter a result, whatever they hold (even NaN or inf),
    and every per-token output is 0 there.
  - losses are to be minimised; a positive advantage means "more of this token".
  - Σ_m denotes a sum over the masked entries (m_t = 1) of the whole batch, N_m their count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from unlearnbench.errors import BenchError


def _zeroed(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # torch.where rather than x * mask: 0 · inf and 0 · NaN are NaN, and padded positions may hold
    # either (a log-probability of −inf, a value head's output on a pad token).
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """mean_m(x) = Σ_m x_t / N_m over the whole tensor, or along `dim` if given.

    With no masked entry the mean is 0 rather than 0/0: a batch piece without response tokens
    contributes nothing instead of poisoning the step with NaN.
    """
    x = _zeroed(x, mask)
    weight = mask.to(x.dtype)
    if dim is None:
        return x.sum() / weight.sum().clamp(min=1.0)
    return x.sum(dim) / weight.sum(dim).clamp(min=1.0)


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log π(y_t) = log_softmax(z_t)[y_t] = z_t[y_t] − log Σ_v exp z_t[v], for logits [B, T, V], tokens [B, T].

    logits[:, t] must already score tokens[:, t]: for a causal LM's outputs pass logits[:, :-1]
    and tokens[:, 1:]. Computed in float32 so that low-precision logits give stable log-ratios.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return log_probs.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)


def kl_penalized_rewards(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, score: torch.Tensor,
                         mask: torch.Tensor, kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-token PPO reward with the KL penalty (Ziegler et al. 2019, InstructGPT):

        kl_t = log π(y_t) − log π_ref(y_t)                      (m_t = 1; 0 elsewhere)
        r_t  = −β · kl_t + [t = last_b] · s_b                    last_b = max{t : m_bt = 1}

    with β = kl_coef and s_b the reward model's score [B] of row b. The score is added once, at
    the last response token of its row; a row with no response token drops its score.
    Returns (rewards, kl), both [B, T] and 0 where m_t = 0.

    kl_t is the single-sample estimate of KL(π‖π_ref): it can be negative per token. Compute
    this on the rollout, under torch.no_grad: the rewards are targets, not a loss.
    """
    kl = _zeroed(logprobs - ref_logprobs, mask)
    rewards = -kl_coef * kl
    present = mask.bool()
    positions = torch.arange(mask.shape[1], device=mask.device)
    # −1 for a row without response tokens, which matches no position below.
    last = torch.where(present, positions, -1).max(dim=1).values
    at_last = positions[None, :] == last[:, None]
    rewards = rewards + _zeroed(score.to(rewards.dtype)[:, None].expand_as(rewards), at_last)
    return rewards, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (Schulman et al. 2016), backwards over the response tokens:

        δ_t = r_t + γ · m_{t+1} V_{t+1} − V_t
        A_t = δ_t + γλ · m_{t+1} A_{t+1}                      V_T = A_T = 0 (after the last token)
        R_t = A_t + V_t                                       (the value head's target)

    Returns (advantages A, returns R), both [B, T] and 0 where m_t = 0. The m_{t+1} factors end the
    bootstrap at the last response token, so padding after it is never read. With γ = λ = 1,
    A_t = Σ_{k≥t} r_k − V_t (reward-to-go minus value).

    Both outputs are detached: they are the targets of the policy and value losses, and a gradient
    through them would let the value head move its own target.
    """
    present = mask.bool()
    # A padded reward only reaches δ_t at its own padded t, which the mask then zeroes; a padded
    # value would be bootstrapped into the token before it, so values are zeroed up front.
    r = rewards.detach()
    v = _zeroed(values.detach(), mask)
    next_value = torch.zeros_like(v[:, 0])
    next_advantage = torch.zeros_like(v[:, 0])
    reversed_advantages = []
    for t in reversed(range(r.shape[1])):
        delta = r[:, t] + gamma * next_value - v[:, t]
        advantage = _zeroed(delta + gamma * lam * next_advantage, present[:, t])
        reversed_advantages.append(advantage)
        # v and advantage are already 0 where m_t = 0, so they carry the m_{t+1} factors to t − 1.
        next_value, next_advantage = v[:, t], advantage
    advantages = torch.stack(reversed_advantages[::-1], dim=1)
    return advantages, advantages + v  # both terms are already 0 where m_t = 0


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Masked whitening over all masked entries of the batch (used for advantages):

        μ = Σ_m x_t / N_m        σ² = Σ_m (x_t − μ)² / N_m        (the biased variance, unbiased=False)
        w_t = (x_t − μ) / √(σ² + 1e-8)                            (+ μ again if not shift_mean)

    0 where m_t = 0. The statistics are over every response token of the batch, not per row:
    whitening each row alone would give every response the same mean advantage and erase which
    responses scored better.
    """
    mean = masked_mean(x, mask)
    variance = masked_mean((x - mean) ** 2, mask)
    whitened = (x - mean) * torch.rsqrt(variance + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return _zeroed(whitened, mask)


def normalized_scores(scores: torch.Tensor) -> torch.Tensor:
    """The reward model's scores of one rollout batch, standardised over the batch (TRL's
    use_score_norm with use_score_scaling, over the batch rather than a running window):

        s'_b = (s_b − mean_b s) / √(var_b s + 1e-8)        (the biased variance)

    Why: the reward model gives every answer of the SFT model a similar large score (≈ 7 on the
    harmful task) while the value head starts at 0. Then the GAE advantage of each token is mostly
    λ^(T−t)·s, largest for the last tokens of every rollout whatever its score, and the policy learns
    the position instead of what the reward model prefers; on the embedded model the reward fell.
    Centred scores leave only the differences between the rollouts.
    """
    return whiten(scores.float()[:, None], torch.ones_like(scores, dtype=torch.bool)[:, None])[:, 0]


def rollout_masks(out: torch.Tensor, prompt_mask: torch.Tensor, eos_id: int | None) -> tuple:
    """For `generate`'s output (prompt + response): the response mask (tokens up to and including
    the first EOS; the rest is padding), the mask of the whole sequence, and the index of each row's
    last response token, where the reward model scores it."""
    width = prompt_mask.shape[1]
    responses = out[:, width:]
    if eos_id is None:
        response_mask = torch.ones_like(responses, dtype=torch.bool)
    else:
        is_eos = responses == eos_id
        response_mask = (is_eos.long().cumsum(1) - is_eos.long()) == 0
    mask = torch.cat([prompt_mask.bool(), response_mask], dim=1).long()
    return response_mask, mask, width + response_mask.long().sum(1) - 1


def clipped_policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                        mask: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate (Schulman et al. 2017), as a loss to minimise:

        ρ_t = exp(log π(y_t) − log π_old(y_t))
        L   = mean_m max(−A_t ρ_t, −A_t clip(ρ_t, 1 − ε, 1 + ε))          ε = clip_range

    Returns (L, clip_fraction, approx_kl), the last two detached, for logging:

        clip_fraction = mean_m [|ρ_t − 1| > ε]       approx_kl = mean_m ½ (log π(y_t) − log π_old(y_t))²

    The max is the pessimistic bound: once ρ has moved past 1 ± ε in the direction the advantage
    favours, the clipped branch is chosen and the token's gradient is 0; a move the other way is
    never clipped.
    """
    log_ratio = _zeroed(logprobs - old_logprobs, mask)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    with torch.no_grad():
        clip_fraction = masked_mean(((ratio - 1.0).abs() > clip_range).to(ratio.dtype), mask)
        approx_kl = masked_mean(0.5 * log_ratio ** 2, mask)
    return loss, clip_fraction, approx_kl


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, clip_range_value: float) -> torch.Tensor:
    """The value head's clipped loss (PPO2 / TRL):

        V^clip_t = V^old_t + clip(V_t − V^old_t, −ε_v, ε_v)
        L_V      = ½ · mean_m max((V_t − R_t)², (V^clip_t − R_t)²)

    As with the policy, the max keeps the larger error: where the clipped value fits the return
    worse, that branch is chosen and the token passes no gradient, so the value head cannot
    improve its fit by moving more than ε_v from the rollout's value in one update.
    """
    # Zeroed first so that a non-finite padded entry cannot reach the gradient as 0 · inf.
    values, old_values, returns = (_zeroed(x, mask) for x in (values, old_values, returns))
    clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


class FixedKLController:
    """β stays at kl_coef; `update` exists so that the two controllers are interchangeable."""

    def __init__(self, kl_coef: float):
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """The adaptive KL coefficient of Ziegler et al. 2019 (§2.2), moving the KL towards `target`:

        e  = clip(KL_current / KL_target − 1, −0.2, 0.2)
        β ← β · (1 + e · n_steps / horizon)

    n_steps is the number of samples (episodes) seen since the last update. The clip bounds the
    change per update, so that one outlying batch cannot swing β.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if not target > 0:
            raise BenchError(f"the KL target must be > 0, got {target}")
        if not horizon > 0:
            raise BenchError(f"the KL horizon must be > 0, got {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
