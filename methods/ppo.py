"""The full RLHF baseline the paper compares against (docs/paper.md §5): SFT → reward model → PPO.

    a. SFT      L = CE(chosen | prompt)                     the safe responses of the preference pairs
    b. RM       L = −mean_b log σ(r(x_b, y_b^chosen) − r(x_b, y_b^rejected))      (Bradley–Terry)
                r(x, y) = score head on the last token of prompt + response (+ EOS)
    c. PPO      rollouts y ~ π_θ(·|x) (sampling), s = r(x, y) at the last response token,
                s' = s standardised over the rollout batch                 (ppo_math.normalized_scores)
                r_t = −β·(log π_θ(y_t) − log π_sft(y_t)) + [t = last]·s'     (ppo_math.kl_penalized_rewards)
                A, R = GAE(r, V; γ, λ), A whitened over the batch
                L = clipped_policy_loss(A) + vf_coef · clipped_value_loss(V, R)

π_sft (the frozen reference) is the SFT model; the policy starts from it; the value head is a
linear layer on the policy's last hidden state (Ziegler et al. 2019 / TRL ≤ 0.11's
`AutoModelForCausalLMWithValueHead`), which costs one extra matrix per token instead of a
fourth network. The reward model is initialised from the SFT model with its LM head replaced by
a scalar head (InstructGPT §3.5).

Why our own loops and not TRL: TRL's PPOTrainer exists only in `trl.experimental.ppo` up to
1.12 and is removed in 1.13, takes a separate value model, and runs its own Trainer machinery (output folders, datasets, its own logging), so its
compute could not be measured per stage the way `bench/compute.py` measures everything else.
The same holds for RewardTrainer; the Bradley–Terry loop below is twenty lines. SFT reuses this
repository's `sft` method and `training.train` loop. The PPO arithmetic is `methods/ppo_math.py`,
pinned by tests/test_ppo_math.py.

Compute: each stage is measured (wall, CPU, memory) into `self.stage_compute`, which the runner
records as "train:sft", "train:reward_model", "train:ppo". FLOPs follow compute.py: 6·N per
token trained, 2·N per token only read (generation, reference, reward model, old-policy pass),
with N the policy's parameter count for every network (the RM differs only by its head).
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from unlearnbench.batching import Pair, TrainData, encode, pad_left
from unlearnbench.compute import measure, training_flops
from unlearnbench.errors import BenchError, TrainingDiverged, first_line
from unlearnbench.methods import Method, TrainConfig
from unlearnbench.methods.ppo_math import (
    AdaptiveKLController,
    FixedKLController,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalized_rewards,
    logprobs_from_logits,
    normalized_scores,
    whiten,
)
from unlearnbench.progress import bar


@dataclass
class PPOConfig(TrainConfig):
    # Sized for the embedded 135M model on 2 CPU cores. Measured there (harmful task, seed 0,
    # docs/compare-harmful.md): SFT 60 steps 107 s, reward model 80 steps 199 s, PPO 100 steps 738 s
    # (≈7 s per step, with the six greedy-reward checks: wall time of the ppo stage, not FLOPs), 17.4 min.
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
        if self.eval_every < 0 or self.eval_prompts < 0:
            raise BenchError("eval_every and eval_prompts must be >= 0")
        for name in ("ppo_epochs", "response_length", "sft_batch_size", "rm_batch_size"):
            if getattr(self, name) < 1:
                raise BenchError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("sft_steps", "rm_steps"):
            if getattr(self, name) < 0:
                raise BenchError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.ppo_steps is not None and self.ppo_steps < 1:
            raise BenchError(f"ppo_steps must be at least 1, got {self.ppo_steps}")
        for name in ("sft_lr", "rm_lr", "temperature", "clip_range", "clip_range_value", "kl_horizon"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < float("inf")):
                raise BenchError(f"{name} must be a positive finite number, got {value}")
        for name in ("kl_coef", "vf_coef"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 <= value < float("inf")):
                raise BenchError(f"{name} must be a finite number >= 0, got {value}")
        if self.kl_target is not None and not self.kl_target > 0:
            raise BenchError(f"kl_target must be > 0, got {self.kl_target}")
        for name in ("gamma", "lam"):
            if not 0 <= getattr(self, name) <= 1:
                raise BenchError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.rm_held_out < 1:
            raise BenchError(f"rm_held_out must be in [0, 1), got {self.rm_held_out}")
        if self.reward_model is not None:
            check_reward_model_folder(self.reward_model)


def check_reward_model_folder(path: str) -> None:
    """A one-line error, before anything slow, for a reward_model that cannot be a scalar scorer."""
    folder = Path(str(path)).expanduser()
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise BenchError(f"reward_model '{path}' is not a model folder (no config.json)")
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"reward_model '{path}': config.json is unreadable: {first_line(exc)}") from exc
    architectures = config.get("architectures") or [] if isinstance(config, dict) else []
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise BenchError(f"reward_model '{path}' is not a sequence-classification model (architectures: "
                         f"{', '.join(map(str, architectures)) or 'none'}); ppo needs one with num_labels=1")
    labels = len(config["id2label"]) if isinstance(config.get("id2label"), dict) else config.get("num_labels", 2)
    if labels != 1:
        raise BenchError(f"reward_model '{path}' has {labels} labels; a reward model has exactly one (num_labels=1)")


def score_head(reward_model):
    """The scalar head of a sequence-classification model (`score` in Llama/OPT/GPT-2, as TRL reads it)."""
    head = getattr(reward_model, "score", None) or getattr(reward_model, "classifier", None)
    if head is None:
        raise BenchError(f"the reward model ({type(reward_model).__name__}) has no `score` head to read")
    return head


def position_ids_of(attention_mask: torch.Tensor) -> torch.Tensor:
    # Left-padded rows must see the positions generate() gave them, not positions shifted by padding.
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)


def reward_scores(reward_model, input_ids, attention_mask, last_index) -> torch.Tensor:
    """r(x, y): the score head on the hidden state of each row's token `last_index` [B]."""
    backbone = getattr(reward_model, reward_model.base_model_prefix)
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask,
                      position_ids=position_ids_of(attention_mask)).last_hidden_state
    last = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_index]
    return score_head(reward_model)(last).squeeze(-1).float()


def reward_model_from(policy, tokenizer):
    """A sequence-classification model with the policy's backbone and a new scalar head."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(policy.config)
    config.num_labels = 1
    config.id2label, config.label2id = {0: "reward"}, {"reward": 0}
    config.pad_token_id = tokenizer.pad_token_id
    config.architectures = None
    model = AutoModelForSequenceClassification.from_config(config)
    getattr(model, model.base_model_prefix).load_state_dict(getattr(policy, policy.base_model_prefix).state_dict())
    parameter = next(policy.parameters())
    return model.to(device=parameter.device, dtype=parameter.dtype)


def load_reward_model(path: str, tokenizer, device):
    from transformers import AutoModelForSequenceClassification

    from safetensors import SafetensorError

    check_reward_model_folder(path)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(Path(path).expanduser()), num_labels=1)
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as exc:
        raise BenchError(f"reward_model '{path}' could not be loaded: {first_line(exc)}") from exc
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        raise BenchError(f"reward_model '{path}' has a vocabulary of {model.get_input_embeddings().num_embeddings} "
                         f"tokens, fewer than the policy's tokenizer ({len(tokenizer)}): they must share one")
    score_head(model)
    return model.to(device).eval().requires_grad_(False)


def pad_right(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    return ids, mask


def autocast_for(precision: str, device):
    from unlearnbench.training import autocast_dtype

    dtype = autocast_dtype(precision, device)
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def check_finite(step: int, values: dict, row: dict, log) -> None:
    if not all(math.isfinite(v) for v in values.values()):
        log(row)
        raise TrainingDiverged(step, values)


def train_reward_model(reward_model, pairs, held_out, template, pad_id, config, log, step_offset=0) -> dict:
    """Bradley–Terry training on (prompt, chosen, rejected); returns token counts and held-out accuracy."""
    from unlearnbench.training import make_schedule

    device = next(reward_model.parameters()).device

    def encoded(prompt, answer):
        return encode(template, prompt, answer, config.max_length)[0]  # ends with EOS: scored there

    def scores(batch):
        rows = [encoded(p, c) for p, c, _ in batch] + [encoded(p, r) for p, _, r in batch]
        ids, mask = pad_right(rows, pad_id, device)
        with autocast_for(config.precision, device):
            values = reward_scores(reward_model, ids, mask, mask.sum(1) - 1)
        return values[:len(batch)], values[len(batch):], int(mask.sum())

    trained = forward = 0
    if config.rm_steps:
        reward_model.train()
        optimizer = torch.optim.AdamW([p for p in reward_model.parameters() if p.requires_grad], lr=config.rm_lr,
                                      weight_decay=config.weight_decay)
        schedule = make_schedule(optimizer, TrainConfig(steps=config.rm_steps, lr=config.rm_lr))
        order, rng = [], random.Random(config.seed)
        size = min(config.rm_batch_size, len(pairs))
        progress = bar(range(1, config.rm_steps + 1), desc="ppo 2/3: reward model on the preference pairs", unit="step")
        for step in progress:
            started = time.perf_counter()
            if len(order) < size:
                order += rng.sample(range(len(pairs)), len(pairs))
            batch, order = [pairs[i] for i in order[:size]], order[size:]
            chosen, rejected, tokens = scores(batch)
            loss = -F.logsigmoid(chosen - rejected).mean()
            values = {"rm_loss": float(loss.detach()), "rm_accuracy": float((chosen > rejected).float().mean())}
            row = {"step": step_offset + step, "rm_lr": schedule.get_last_lr()[0], **values}
            check_finite(step_offset + step, values, row, log)
            loss.backward()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(reward_model.parameters(), config.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            trained += tokens
            row["rm_seconds"] = round(time.perf_counter() - started, 4)
            log(row)
            progress.set_postfix(loss=f"{values['rm_loss']:.3f}", acc=f"{values['rm_accuracy']:.2f}")
    reward_model.eval().requires_grad_(False)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(held_out), config.rm_batch_size):
            chosen, rejected, tokens = scores(held_out[start:start + config.rm_batch_size])
            correct += int((chosen > rejected).sum())
            forward += tokens
    accuracy = correct / len(held_out) if held_out else None
    return {"trained_tokens": trained, "forward_tokens": forward, "held_out_accuracy": accuracy,
            "held_out_pairs": len(held_out), "train_pairs": len(pairs)}


def rollout_masks(out, prompt_mask, eos_id):
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
              step_offset: int = 0, eval_prompts: list[list[int]] | None = None, eval_score=None) -> dict:
    """PPO on `policy` in place, from prompts given as token ids; `score(ids, mask, last_index) -> [B]`.

    The reference is a frozen copy of `policy` as it comes in. Logs, per PPO step: the mean
    score (reward), the KL to the reference summed over the response (mean over rollouts), the
    policy and value losses, the clip fraction and approximate KL of the last update epoch.
    """
    from transformers import GenerationConfig, get_linear_schedule_with_warmup

    device = next(policy.parameters()).device
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    policy.eval()  # no dropout: the rollout's and the update's log-probabilities must be comparable
    policy.requires_grad_(True)
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
    rng = random.Random(config.seed)
    order: list[int] = []
    size = min(config.batch_size, len(prompts))
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
        evaluations.append([done, greedy_reward(policy, eval_prompts, eval_score or score, config, pad_id, eos_id)])
        return evaluations[-1][1]

    if eval_prompts:
        evaluate(0)
    progress = bar(range(1, config.rl_steps + 1), desc="ppo 3/3: PPO against the reward model", unit="step")
    for step in progress:
        started = time.perf_counter()
        if len(order) < size:
            order += rng.sample(range(len(prompts)), len(prompts))
        batch, order = [prompts[i] for i in order[:size]], order[size:]
        prompt_ids, prompt_mask = pad_left(batch, pad_id, device)
        width = prompt_ids.shape[1]
        with torch.no_grad(), autocast_for(config.precision, device):
            out = policy.generate(input_ids=prompt_ids, attention_mask=prompt_mask, generation_config=generation)
            response_mask, mask, last_index = rollout_masks(out, prompt_mask, eos_id)
            old_logprobs, old_values = forward_pass(policy, out, mask, width, value_head)
            ref_logprobs, _ = forward_pass(reference, out, mask, width)
            scores = score(out, mask, last_index).float()
            sequence_tokens = int(mask.sum())
            forward += int(prompt_mask.sum()) + int(response_mask.sum()) + 2 * sequence_tokens
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
            check_finite(step_offset + step, {k: row[k] for k in ("reward", "kl", *values_logged)}, row, log)
            total.backward()
            if config.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            trained += sequence_tokens
        kl_control.update(kl_per_rollout, size)
        row["ppo_seconds"] = round(time.perf_counter() - started, 4)
        if eval_prompts and (step == config.rl_steps or (config.eval_every and step % config.eval_every == 0)):
            row["greedy_reward"] = evaluate(step)  # after this step's update; outside ppo_seconds
        log(row)
        progress.set_postfix(reward=f"{row['reward']:.3f}", kl=f"{row['kl']:.3f}")
    policy.requires_grad_(False).eval()
    del reference
    return {"trained_tokens": trained, "forward_tokens": forward,
            "trainable_parameters": sum(p.numel() for p in parameters), "greedy_reward": evaluations}


class PPO(Method):
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

    def fit(self, model, tokenizer, data, template, log, accelerator=None, frozen_original=None, checkpointing=None):
        # checkpointing: the three stages are not resumable; a resumed run trains them again.
        from unlearnbench.methods.sft import SupervisedFinetune
        from unlearnbench.training import TrainResult, train

        c = self.config
        self.check_data(data)
        self.stage_compute: dict = {}
        self.train_record: dict = {}
        parameters = sum(p.numel() for p in model.parameters())
        preferences = list(data.preferences)
        offset = [0]

        def stage_log(prefix=None):
            def write(row):
                shown = {"step": offset[0] + row["step"]} if prefix else dict(row)
                if prefix:
                    shown.update({f"{prefix}_{k}": v for k, v in row.items() if k not in ("step", "total")})
                log(shown)
            return write

        totals = {"trained": 0, "forward": 0}

        def account(phase, trained, forward):
            phase.tokens = trained + forward
            phase.flops = training_flops(parameters, trained, forward)
            totals["trained"] += trained
            totals["forward"] += forward

        # a. SFT on the chosen (safe) responses, with the shared loop.
        policy = model
        with measure(self.stage_compute, "sft") as phase:
            if c.sft_steps:
                chosen = [Pair(prompt, good) for prompt, good, _ in preferences]
                sft = SupervisedFinetune(TrainConfig(
                    steps=c.sft_steps, lr=c.sft_lr, batch_size=min(c.sft_batch_size, len(chosen)),
                    weight_decay=c.weight_decay, max_grad_norm=c.max_grad_norm, max_length=c.max_length,
                    precision=c.precision, shuffle=c.shuffle, seed=c.seed))
                result = train(sft, model, tokenizer, TrainData(forget=chosen, normal=[], mismatch_pool=[]), template,
                               stage_log("sft"), desc="ppo 1/3: SFT on the chosen responses")
                policy = result.model
                account(phase, result.trained_tokens, 0)
        offset[0] += c.sft_steps

        # b. The reward model, trained on the pairs (or loaded); its accuracy on held-out pairs.
        order = list(range(len(preferences)))
        random.Random(c.seed).shuffle(order)
        held = round(len(preferences) * c.rm_held_out) if len(preferences) >= 2 else 0
        held = min(max(held, 1 if c.rm_held_out > 0 and len(preferences) >= 2 else 0), len(preferences) - 1)
        held_out = [preferences[i] for i in order[:held]]
        rm_pairs = [preferences[i] for i in order[held:]]
        device = next(policy.parameters()).device
        torch.manual_seed(c.seed)
        with measure(self.stage_compute, "reward_model") as phase:
            if c.reward_model is not None:
                reward_model = load_reward_model(c.reward_model, tokenizer, device)
                rm_config = copy.copy(c)
                rm_config.rm_steps = 0
            else:
                reward_model, rm_config = reward_model_from(policy, tokenizer), c
            rm = train_reward_model(reward_model, rm_pairs, held_out, template, tokenizer.pad_token_id, rm_config,
                                    log, step_offset=offset[0])
            account(phase, rm["trained_tokens"], rm["forward_tokens"])
        offset[0] += rm_config.rm_steps
        self.train_record["reward_model"] = {
            "source": c.reward_model or "trained (Bradley-Terry) from the SFT model",
            "held_out_accuracy": rm["held_out_accuracy"], "held_out_pairs": rm["held_out_pairs"],
            "train_pairs": rm["train_pairs"] if c.reward_model is None else 0}

        # c. PPO from the SFT model, against the frozen SFT model.
        prompts = list(dict.fromkeys(prompt for prompt, _, _ in preferences))
        prompt_ids = [tokenizer(template.prompt(p), add_special_tokens=template.adds_special_tokens)["input_ids"]
                      [-(c.max_length - c.response_length):] if c.max_length > c.response_length else [] for p in prompts]
        if not all(prompt_ids):
            raise BenchError(f"max_length ({c.max_length}) leaves no room for prompts with response_length "
                             f"{c.response_length}")
        rm_tokens = [0]

        def score(ids, mask, last_index):
            rm_tokens[0] += int(mask.sum())
            return reward_scores(reward_model, ids, mask, last_index)

        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        held_out_prompts = set(list(dict.fromkeys(prompt for prompt, _, _ in held_out))[:c.eval_prompts])
        eval_ids = [ids for prompt, ids in zip(prompts, prompt_ids) if prompt in held_out_prompts]
        with measure(self.stage_compute, "ppo") as phase:
            stats = ppo_train(policy, prompt_ids, score, c, log, pad_id, tokenizer.eos_token_id, step_offset=offset[0],
                              eval_prompts=eval_ids,  # an evaluation: its scoring is not counted as training FLOPs
                              eval_score=lambda ids, mask, last: reward_scores(reward_model, ids, mask, last))
            account(phase, stats["trained_tokens"], stats["forward_tokens"] + rm_tokens[0])
        steps = c.sft_steps + rm_config.rm_steps + c.rl_steps
        self.train_record["stages"] = {"sft_steps": c.sft_steps, "rm_steps": rm_config.rm_steps, "ppo_steps": c.rl_steps}
        self.train_record["greedy_reward"] = {
            "prompts": len(eval_ids), "source": "prompts of the reward model's held-out pairs, greedy responses",
            "after_ppo_steps": stats["greedy_reward"]}
        return TrainResult(policy, steps, totals["trained"], totals["forward"], stats["trainable_parameters"])
