"""The reward model of the `ppo` baseline (methods/ppo.py, stage b): a scalar score r(x, y) of a
response y to a prompt x, trained on preference pairs (x, y^chosen, y^rejected) with the
Bradley–Terry loss

    L = −mean_b log σ(r(x_b, y_b^chosen) − r(x_b, y_b^rejected))

the negative log-likelihood of the chosen response winning when P(y^chosen ≻ y^rejected) =
σ(r(x, y^chosen) − r(x, y^rejected)). r(x, y) is a scalar head on the hidden state of the last
token of prompt + response (its EOS). The model is a sequence-classification model with one
label: the policy's backbone with a new head (InstructGPT §3.5), or a trained one loaded from a
folder (`--set reward_model=DIR`). Its pairwise accuracy on held-out pairs says whether it learned
the preference at all before PPO optimises against it.
"""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from unlearnbench.batching import encode, reshuffled_batches
from unlearnbench.errors import BenchError, first_line
from unlearnbench.methods import TrainConfig
from unlearnbench.progress import bar
from unlearnbench.training import autocast_for, make_schedule, optimizer_step


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


def held_out_split(pairs: list, share: float, seed: int) -> tuple[list, list]:
    """(training pairs, held-out pairs): a seeded `share` of the pairs is held out, at least one
    when share > 0 and there are two or more, and never all of them."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    held = round(len(pairs) * share) if len(pairs) >= 2 else 0
    held = min(max(held, 1 if share > 0 and len(pairs) >= 2 else 0), len(pairs) - 1)
    return [pairs[i] for i in order[held:]], [pairs[i] for i in order[:held]]


def pad_right(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    return ids, mask


def train_reward_model(reward_model, pairs, held_out, template, pad_id, config, log, step_offset=0) -> dict:
    """Bradley–Terry training on (prompt, chosen, rejected); returns token counts and held-out accuracy.

    `config` is the ppo config (rm_steps, rm_lr, rm_batch_size, ...); each step logs rm_lr,
    rm_loss, rm_accuracy (the batch's pairwise accuracy) and rm_seconds at step_offset + step.
    """
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
        parameters = [p for p in reward_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(parameters, lr=config.rm_lr, weight_decay=config.weight_decay)
        schedule = make_schedule(optimizer, TrainConfig(steps=config.rm_steps, lr=config.rm_lr))
        batches = reshuffled_batches(pairs, min(config.rm_batch_size, len(pairs)), config.seed)
        progress = bar(range(1, config.rm_steps + 1), desc="ppo 2/3: reward model on the preference pairs", unit="step")
        for step in progress:
            started = time.perf_counter()
            chosen, rejected, tokens = scores(next(batches))
            loss = -F.logsigmoid(chosen - rejected).mean()
            values = {"rm_loss": float(loss.detach()), "rm_accuracy": float((chosen > rejected).float().mean())}
            row = {"step": step_offset + step, "rm_lr": schedule.get_last_lr()[0], **values}
            optimizer_step(loss, row, values, optimizer=optimizer, schedule=schedule, parameters=parameters,
                           max_grad_norm=config.max_grad_norm, log=log)
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


def reward_model_stage(policy, tokenizer, pairs, held_out, template, config, log, step_offset=0) -> tuple[object, dict]:
    """Stage b of ppo: the model of `config.reward_model` loaded (not trained), or one initialised
    from `policy` and trained on `pairs`; frozen, with its accuracy on `held_out` either way.

    Returns the model and train_reward_model's counts, plus `steps` (the training steps logged)
    and `record` (what metrics.json keeps under train.reward_model).
    """
    if config.reward_model is not None:
        model = load_reward_model(config.reward_model, tokenizer, next(policy.parameters()).device)
        config = copy.copy(config)
        config.rm_steps = 0
    else:
        model = reward_model_from(policy, tokenizer)
    stats = train_reward_model(model, pairs, held_out, template, tokenizer.pad_token_id, config, log, step_offset)
    record = {"source": config.reward_model or "trained (Bradley-Terry) from the SFT model",
              "held_out_accuracy": stats["held_out_accuracy"], "held_out_pairs": stats["held_out_pairs"],
              "train_pairs": stats["train_pairs"] if config.reward_model is None else 0}
    return model, {**stats, "steps": config.rm_steps, "record": record}
