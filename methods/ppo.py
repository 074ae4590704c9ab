"""The full RLHF baseline the paper compares against (docs/paper.md §5): SFT → reward model → PPO.

    a. SFT      L = CE(chosen | prompt) on the safe responses of the preference pairs (`sft`)
    b. RM       L = −mean_b log σ(r(x_b, y_b^chosen) − r(x_b, y_b^rejected))   (methods/reward_model.py)
    c. PPO      rollouts y ~ π_θ(·|x) (sampling), s = r(x, y) at the last response token,
                s' = s standardised over the rollout batch                 (ppo_math.normalized_scores)
                r_t = −β·(log π_θ(y_t) − log π_sft(y_t)) + [t = last]·s'     (ppo_math.kl_penalized_rewards)
                A, R = GAE(r, V; γ, λ), A whitened over the batch
                L = clipped_policy_loss(A) + vf_coef · clipped_value_loss(V, R)

π_sft, the frozen reference, is the SFT model the policy starts from. The value head is a linear
layer on the policy's last hidden state (Ziegler et al. 2019): one matrix, not a fourth network.

Our own loops, not TRL's: its PPOTrainer exists only in `trl.experimental.ppo` up to 1.12 (gone
in 1.13), takes a separate value model and runs its own Trainer machinery, so its compute could
not be measured per stage as `bench/compute.py` measures everything else. Every optimizer step
of the three stages is `training.optimizer_step`; the PPO arithmetic is `methods/ppo_math.py`.

Compute: each stage is measured into `stage_compute` ("train:sft", "train:reward_model",
"train:ppo" in the record). FLOPs: 6·N per token trained, 2·N per token only read (generation,
reference, reward model), N the policy's parameters for every network (the RM differs by its head).
No stage saves a checkpoint, so `run --resume` of a ppo run is refused (`check_resume`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from unlearnbench.batching import Pair, TrainData, pad_left, reshuffled_batches
from unlearnbench.compute import measure, training_flops
from unlearnbench.errors import BenchError
from unlearnbench.methods import Method, TrainConfig, check_non_negative, check_positive
from unlearnbench.methods.ppo_math import (AdaptiveKLController, FixedKLController, clipped_policy_loss,
                                           clipped_value_loss, gae, kl_penalized_rewards, logprobs_from_logits,
                                           normalized_scores, rollout_masks, whiten)
from unlearnbench.methods.reward_model import (check_reward_model_folder, held_out_split, position_ids_of,
                                               reward_model_stage, reward_scores)
from unlearnbench.progress import bar
from unlearnbench.training import TrainResult, autocast_for, optimizer_step, train


@dataclass
class PPOConfig(TrainConfig):
    shown: ClassVar[tuple[str, ...] | None] = ()  # its three stages' settings are in each run's config.json
    # Sized for the embedded 135M model on 2 CPU cores: 17.4 min on harmful (SFT 107 s, reward model
    # 199 s, PPO 738 s with its greedy-reward checks; docs/compare-harmful.md).
    steps: int = 100  # PPO steps (one rollout batch and its updates each); also --steps
    lr: float = 1e-5  # PPO learning rate (policy and value head)
    score_norm: bool = True  # standardise the scores over each rollout batch (ppo_math.normalized_scores)
    eval_every: int = 20  # PPO steps between greedy-reward checks on held-out prompts (0: start and end only)
    eval_prompts: int = 16  # held-out prompts (those of the reward model's held-out pairs) for that check
    batch_size: int = 8  # rollout batch: prompts sampled per PPO step
    ppo_steps: int | None = None  # overrides `steps` when given
    ppo_epochs: int = 2  # optimisation passes over each rollout batch (TRL: 4)
    response_length: int = 48  # new tokens per rollout (the harmful task's evaluation length)
    temperature: float = 0.7  # sampling temperature of the rollouts (TRL's default)
    kl_coef: float = 0.05  # β (TRL's default)
    kl_target: float | None = None  # set: adaptive β (Ziegler et al.) towards this KL per sequence
    kl_horizon: float = 10000.0
    clip_range: float = 0.2
    clip_range_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    whiten_advantages: bool = True
    sft_steps: int = 60  # = sft_safe's defaults (methods/sft.py), the paper's SFT row
    sft_lr: float = 1e-4
    sft_batch_size: int = 8
    rm_steps: int = 80
    rm_lr: float = 5e-5
    rm_batch_size: int = 8
    rm_held_out: float = 0.1  # share of the preference pairs kept out of RM training, for its accuracy
    reward_model: str | None = None  # a trained sequence-classification model folder: skips stage b

    @property
    def rl_steps(self) -> int:
        return self.ppo_steps if self.ppo_steps is not None else self.steps

    def validate(self) -> None:
        super().validate()
        if self.lora:
            raise BenchError("ppo trains full weights (policy, value head and reward model); drop --lora")
        for name in ("ppo_epochs", "response_length", "sft_batch_size", "rm_batch_size", "ppo_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise BenchError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("sft_steps", "rm_steps", "eval_every", "eval_prompts"):
            if getattr(self, name) < 0:
                raise BenchError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("sft_lr", "rm_lr", "temperature", "clip_range", "clip_range_value", "kl_horizon"):
            check_positive(name, getattr(self, name))
        for name in ("kl_coef", "vf_coef"):
            check_non_negative(name, getattr(self, name))
        if self.kl_target is not None and not self.kl_target > 0:
            raise BenchError(f"kl_target must be > 0, got {self.kl_target}")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise BenchError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.rm_held_out < 1:
            raise BenchError(f"rm_held_out must be in [0, 1), got {self.rm_held_out}")
        if self.reward_model is not None:
            check_reward_model_folder(self.reward_model)


@torch.no_grad()
def greedy_reward(policy, prompts: list[list[int]], score, config, pad_id: int, eos_id: int | None) -> float:
    """The mean reward-model score of the policy's greedy responses to `prompts`: the noise-free
    check that PPO raises the reward (the rollouts' reward is a sampled batch of 8, noisy by ±1)."""
    from transformers import GenerationConfig

    device = next(policy.parameters()).device
    ids, mask = pad_left(prompts, pad_id, device)
    greedy = GenerationConfig(do_sample=False, max_new_tokens=config.response_length, pad_token_id=pad_id,
                              eos_token_id=eos_id, temperature=None, top_p=None, top_k=None)
    with autocast_for(config.precision, device):
        out = policy.generate(input_ids=ids, attention_mask=mask, generation_config=greedy)
        _, full, last_index = rollout_masks(out, mask, eos_id)
        return float(score(out, full, last_index).float().mean())


def ppo_train(policy, prompts: list[list[int]], score, config: PPOConfig, log, pad_id: int, eos_id: int | None,
              step_offset: int = 0, eval_prompts: list[list[int]] | None = None, monitor=None,
              tokens_before: tuple[int, int] = (0, 0)) -> dict:
    """PPO on `policy` in place, from prompts given as token ids; `score(ids, mask, last_index) -> [B]`.

    The reference is a frozen copy of `policy` as it comes in. Logs, per PPO step: the mean
    score (reward), the KL to the reference summed over the response (mean over rollouts), the
    policy and value losses, the clip fraction and approximate KL of the last update epoch.
    The greedy-reward checks on `eval_prompts` are an evaluation: their tokens are not counted.
    `monitor` (--eval-every) is called before the first PPO step and after each, with the tokens
    of the whole pipeline so far: `tokens_before` (SFT and reward model) plus PPO's own.
    """
    from transformers import GenerationConfig, get_linear_schedule_with_warmup

    device = next(policy.parameters()).device
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    policy.eval().requires_grad_(True)  # eval: no dropout, the rollout's and the update's log-probs must agree
    with torch.no_grad():
        hidden_size = policy(input_ids=torch.tensor([prompts[0][:1]], device=device),
                             output_hidden_states=True).hidden_states[-1].shape[-1]
    value_head = torch.nn.Linear(hidden_size, 1).to(device=device, dtype=next(policy.parameters()).dtype)
    torch.nn.init.zeros_(value_head.weight)
    torch.nn.init.zeros_(value_head.bias)
    parameters = [p for p in policy.parameters() if p.requires_grad] + list(value_head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, config.rl_steps * config.ppo_epochs)
    kl_control = (AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
                  if config.kl_target is not None else FixedKLController(config.kl_coef))
    generation = GenerationConfig(do_sample=True, temperature=config.temperature, top_k=0, top_p=1.0,
                                  max_new_tokens=config.response_length, pad_token_id=pad_id, eos_token_id=eos_id)
    batches = reshuffled_batches(prompts, min(config.batch_size, len(prompts)), config.seed)
    trained = forward = 0

    def forward_pass(model, ids, mask, width, head=None):
        out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_of(mask),
                    output_hidden_states=head is not None)
        logits = out.logits[:, width - 1:-1] / config.temperature  # the distribution the rollout sampled from
        logprobs = logprobs_from_logits(logits, ids[:, width:])
        values = head(out.hidden_states[-1][:, width - 1:-1]).squeeze(-1).float() if head is not None else None
        return logprobs, values

    evaluations = []  # (PPO steps done, greedy reward on the held-out prompts)

    def evaluate(done: int) -> float:
        evaluations.append([done, greedy_reward(policy, eval_prompts, score, config, pad_id, eos_id)])
        return evaluations[-1][1]

    if eval_prompts:
        evaluate(0)
    if monitor is not None:
        monitor(0, policy, *tokens_before)
    progress = bar(range(1, config.rl_steps + 1), desc="ppo 3/3: PPO against the reward model", unit="step")
    for step in progress:
        started = time.perf_counter()
        prompt_ids, prompt_mask = pad_left(next(batches), pad_id, device)
        width = prompt_ids.shape[1]
        with torch.no_grad(), autocast_for(config.precision, device):
            out = policy.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=generation)
            response_mask, mask, last_index = rollout_masks(out, prompt_mask, eos_id)
            old_logprobs, old_values = forward_pass(policy, out, mask, width, value_head)
            ref_logprobs, _ = forward_pass(reference, out, mask, width)
            scores = score(out, mask, last_index).float()
            sequence_tokens = int(mask.sum())
            forward += int(prompt_mask.sum()) + int(response_mask.sum()) + 3 * sequence_tokens
        signal = normalized_scores(scores) if config.score_norm else scores
        rewards, kl = kl_penalized_rewards(old_logprobs, ref_logprobs, signal, response_mask, kl_control.value)
        advantages, returns = gae(rewards, old_values, response_mask, config.gamma, config.lam)
        if config.whiten_advantages:
            advantages = whiten(advantages, response_mask)
        kl_per_rollout = float(kl.sum(1).mean())
        row = {"step": step_offset + step, "reward": float(scores.mean()), "kl": kl_per_rollout,
               "kl_coef": kl_control.value, "ppo_lr": schedule.get_last_lr()[0],
               "response_tokens": float(response_mask.float().sum(1).mean())}
        for _ in range(config.ppo_epochs):
            with autocast_for(config.precision, device):
                logprobs, values = forward_pass(policy, out, mask, width, value_head)
            policy_loss, clip_fraction, approx_kl = clipped_policy_loss(logprobs, old_logprobs, advantages,
                                                                        response_mask, config.clip_range)
            value_loss = clipped_value_loss(values, old_values, returns, response_mask, config.clip_range_value)
            total = policy_loss + config.vf_coef * value_loss
            values_logged = {"total": float(total.detach()), "policy_loss": float(policy_loss.detach()),
                             "value_loss": float(value_loss.detach()), "clip_fraction": float(clip_fraction),
                             "approx_kl": float(approx_kl)}
            row.update(values_logged)
            optimizer_step(total, row, {k: row[k] for k in ("reward", "kl", *values_logged)}, optimizer=optimizer,
                           schedule=schedule, parameters=parameters, max_grad_norm=config.max_grad_norm, log=log)
            trained += sequence_tokens
        kl_control.update(kl_per_rollout, len(prompt_ids))
        row["ppo_seconds"] = round(time.perf_counter() - started, 4)
        if eval_prompts and (step == config.rl_steps or (config.eval_every and step % config.eval_every == 0)):
            row["greedy_reward"] = evaluate(step)  # after this step's update; outside ppo_seconds
        log(row)
        progress.set_postfix(reward=f"{row['reward']:.3f}", kl=f"{row['kl']:.3f}")
        if monitor is not None:
            monitor(step, policy, tokens_before[0] + trained, tokens_before[1] + forward)
    policy.requires_grad_(False).eval()
    return {"trained_tokens": trained, "forward_tokens": forward,
            "trainable_parameters": sum(p.numel() for p in parameters), "greedy_reward": evaluations}


class PPO(Method):
    description = "the RLHF baseline: SFT on safe responses, a reward model, then PPO (harmful task)"
    name = "ppo"
    Config = PPOConfig
    uses = ()  # draws preference pairs, not the forget/normal batches

    def check_data(self, data) -> None:
        preferences = getattr(data, "preferences", None) or []
        if not preferences:
            raise BenchError("ppo needs preference pairs (prompt, chosen, rejected), which only the harmful task "
                             "has: use --task harmful")
        if len(preferences) < 2 and self.config.reward_model is None:
            raise BenchError(f"ppo needs at least 2 preference pairs to train and check a reward model, got {len(preferences)}")

    def monitored_steps(self) -> int:
        return self.config.rl_steps  # --eval-every counts PPO steps; SFT and the reward model come first

    def check_resume(self) -> None:
        raise BenchError("ppo runs cannot be resumed: its three stages (SFT, reward model, PPO) are not "
                         "checkpointed; start a new run")

    def fit(self, model, tokenizer, data, template, log, accelerator=None, frozen_original=None, checkpointing=None,
            stage_compute: dict | None = None, monitor=None):
        from unlearnbench.methods.sft import SupervisedFinetune

        if checkpointing is not None and checkpointing.resume:
            self.check_resume()  # the runner asks before touching the run folder; this covers direct callers
        c = self.config
        self.check_data(data)
        stages = stage_compute if stage_compute is not None else {}
        record: dict = {}
        parameters = sum(p.numel() for p in model.parameters())
        preferences = list(data.preferences)

        def sft_log(row):  # the shared loop's row with its terms named for the stage: sft_ce, sft_lr, ...
            log({"step": row["step"], **{f"sft_{k}": v for k, v in row.items() if k not in ("step", "total")}})

        totals = {"trained": 0, "forward": 0}

        def account(phase, trained, forward):
            phase.tokens, phase.flops = trained + forward, training_flops(parameters, trained, forward)
            totals["trained"] += trained
            totals["forward"] += forward

        # a. SFT on the chosen (safe) responses, with the shared loop.
        policy = model
        with measure(stages, "sft") as phase:
            if c.sft_steps:
                chosen = [Pair(prompt, good) for prompt, good, _ in preferences]
                sft = SupervisedFinetune(TrainConfig(
                    steps=c.sft_steps, lr=c.sft_lr, batch_size=min(c.sft_batch_size, len(chosen)),
                    weight_decay=c.weight_decay, max_grad_norm=c.max_grad_norm, max_length=c.max_length,
                    precision=c.precision, shuffle=c.shuffle, seed=c.seed))
                result = train(sft, model, tokenizer, TrainData(forget=chosen, normal=[], mismatch_pool=[]), template,
                               sft_log, desc="ppo 1/3: SFT on the chosen responses")
                policy = result.model
                account(phase, result.trained_tokens, 0)

        # b. The reward model, trained on the pairs (or loaded); its accuracy on held-out pairs.
        rm_pairs, held_out = held_out_split(preferences, c.rm_held_out, c.seed)
        torch.manual_seed(c.seed)  # stages b and c draw from the seed (score head, rollouts), not from what a left
        with measure(stages, "reward_model") as phase:
            reward_model, rm = reward_model_stage(policy, tokenizer, rm_pairs, held_out, template, c, log, c.sft_steps)
            account(phase, rm["trained_tokens"], rm["forward_tokens"])
        record["reward_model"] = rm["record"]

        # c. PPO from the SFT model, against the frozen SFT model.
        prompts = list(dict.fromkeys(prompt for prompt, _, _ in preferences))
        prompt_ids = [tokenizer(template.prompt(p), add_special_tokens=template.adds_special_tokens)["input_ids"]
                      [-(c.max_length - c.response_length):] if c.max_length > c.response_length else [] for p in prompts]
        if not all(prompt_ids):
            raise BenchError(f"max_length ({c.max_length}) leaves no room for prompts with response_length "
                             f"{c.response_length}")
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        held_out_prompts = set(list(dict.fromkeys(prompt for prompt, _, _ in held_out))[:c.eval_prompts])
        eval_ids = [ids for prompt, ids in zip(prompts, prompt_ids) if prompt in held_out_prompts]
        evaluated = (monitor.compute.wall_seconds, monitor.compute.cpu_seconds) if monitor is not None else (0, 0)
        with measure(stages, "ppo") as phase:
            stats = ppo_train(policy, prompt_ids, lambda ids, mask, last: reward_scores(reward_model, ids, mask, last),
                              c, log, pad_id, tokenizer.eos_token_id, step_offset=c.sft_steps + rm["steps"],
                              eval_prompts=eval_ids, monitor=monitor, tokens_before=(totals["trained"], totals["forward"]))
            account(phase, stats["trained_tokens"], stats["forward_tokens"])
        if monitor is not None:  # the evaluation along PPO is not PPO's time (the runner moves it out of "train")
            stages["ppo"].wall_seconds -= monitor.compute.wall_seconds - evaluated[0]
            stages["ppo"].cpu_seconds -= monitor.compute.cpu_seconds - evaluated[1]
            monitor.finish(policy)  # --select best: the kept PPO step's weights
        steps = c.sft_steps + rm["steps"] + c.rl_steps
        record["stages"] = {"sft_steps": c.sft_steps, "rm_steps": rm["steps"], "ppo_steps": c.rl_steps}
        record["greedy_reward"] = {
            "prompts": len(eval_ids), "source": "prompts of the reward model's held-out pairs, greedy responses",
            "after_ppo_steps": stats["greedy_reward"]}
        return TrainResult(policy, steps, totals["trained"], totals["forward"], stats["trainable_parameters"], record)
