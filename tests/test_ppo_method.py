"""The ppo method (SFT → reward model → PPO): the loop learns, and the pipeline runs through the CLI."""

import json

import pytest
import torch

from unlearnbench.errors import BenchError
from unlearnbench.methods import ppo as ppo_module
from unlearnbench.methods.ppo import PPOConfig, ppo_train
from conftest import invoke, tiny_llama_config

TARGET = 5  # the toy reward: the share of response tokens that are this token


def toy_policy(vocab=8):
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    config = tiny_llama_config(None, vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                               num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0)
    return LlamaForCausalLM(config).eval()


def share_of_target(ids, mask, last_index):
    return ((ids == TARGET) & mask.bool()).float().sum(1) / 4.0  # prompts never hold TARGET; 4 new tokens


def run_toy(lr, steps=25, kl_coef=0.0):
    policy = toy_policy()
    prompts = [[1, 2], [3, 4], [2, 3], [4, 1], [1, 3], [2, 4], [3, 1], [4, 2]]
    config = PPOConfig(steps=steps, lr=lr, batch_size=8, response_length=4, temperature=1.0, kl_coef=kl_coef,
                       ppo_epochs=4, precision="fp32", max_grad_norm=1.0)
    log = []
    stats = ppo_train(policy, prompts, share_of_target, config, log.append, pad_id=0, eos_id=None)
    return log, stats


def test_ppo_loop_raises_the_reward_of_a_toy_task():
    log, stats = run_toy(lr=3e-2, steps=12)
    rewards = [row["reward"] for row in log]
    assert len(log) == 12 and all(k in log[0] for k in ("reward", "kl", "policy_loss", "value_loss", "clip_fraction"))
    start, end = sum(rewards[:2]) / 2, sum(rewards[-3:]) / 3
    assert start < 0.35, rewards  # about 1/8 for a random policy over 8 tokens
    assert end > 0.6, rewards
    assert stats["trained_tokens"] == 12 * 4 * 8 * 6  # steps × epochs × rollouts × (2 prompt + 4 response tokens)
    # No held-out prompts given: no greedy-reward check, and no empty value in the log for plots to trip on.
    assert stats["greedy_reward"] == [] and not any("greedy_reward" in row for row in log)


def test_ppo_loop_with_a_zero_learning_rate_does_not_learn():
    """The control for the test above: the same sampling without updates stays near 1/8."""
    log, _ = run_toy(lr=1e-12, steps=12)
    rewards = [row["reward"] for row in log]
    assert sum(rewards[-3:]) / 3 < 0.35, rewards


def test_ppo_config_rejects_bad_values(tmp_path):
    for bad in ({"clip_range": 0}, {"gamma": 1.5}, {"lora": True}, {"ppo_epochs": 0}, {"kl_coef": -1}):
        with pytest.raises(BenchError):
            PPOConfig.from_overrides(bad)
    (tmp_path / "causal").mkdir()
    (tmp_path / "causal" / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(BenchError, match="not a sequence-classification model"):
        PPOConfig.from_overrides({"reward_model": str(tmp_path / "causal")})
    with pytest.raises(BenchError, match="not a model folder"):
        PPOConfig.from_overrides({"reward_model": str(tmp_path / "missing")})


def ppo_args(model_dir, out, name, *extra):
    return ["run", "--method", "ppo", "--task", "harmful", "--model", str(model_dir), "--original", "base",
            "--limit", "2", "--max-new-tokens", "4", "--output-dir", str(out), "--run-name", name,
            "--set", "sft_steps=2", "--set", "rm_steps=2", "--set", "ppo_steps=2", "--set", "response_length=4",
            "--set", "batch_size=2", "--set", "sft_batch_size=2", "--set", "rm_batch_size=2", *extra]


def read_log(out, name):
    return [json.loads(line) for line in (out / name / "train_log.jsonl").read_text().splitlines()]


def test_ppo_pipeline_runs_through_the_cli(tiny_model_dir, tmp_path, capsys):
    code, _, err = invoke(capsys, *ppo_args(tiny_model_dir, tmp_path, "ppo"))
    assert code in (0, None), err
    metrics = json.loads((tmp_path / "ppo" / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    compute = metrics["compute"]
    stages = ["train:sft", "train:reward_model", "train:ppo"]
    assert all(compute[s]["flops"] > 0 and compute[s]["wall_seconds"] > 0 for s in stages), compute
    # The stages are parts of "train": their FLOPs add up to it, and the total counts them once.
    assert sum(compute[s]["flops"] for s in stages) == pytest.approx(compute["train"]["flops"], rel=1e-9)
    parts = [name for name in compute if name not in ("total", *stages)]
    assert compute["total"]["flops"] == pytest.approx(sum(compute[p]["flops"] for p in parts), rel=1e-9)
    assert metrics["train"]["steps"] == 6
    assert 0 <= metrics["train"]["reward_model"]["held_out_accuracy"] <= 1
    log = read_log(tmp_path, "ppo")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert "sft_ce" in log[0] and "rm_loss" in log[2]
    for row in log[4:]:
        assert all(k in row for k in ("reward", "kl", "policy_loss", "value_loss", "clip_fraction")), row


def test_ppo_on_a_task_without_preferences_is_a_one_line_error(tiny_model_dir, tmp_path, capsys):
    args = ppo_args(tiny_model_dir, tmp_path, "halluc")
    args[args.index("harmful")] = "hallucination"
    code, _, err = invoke(capsys, *args)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "ppo needs preference pairs" in lines[0] and "harmful" in lines[0]


def test_ppo_with_a_causal_lm_as_reward_model_is_a_one_line_error(tiny_model_dir, tmp_path, capsys):
    code, _, err = invoke(capsys, *ppo_args(tiny_model_dir, tmp_path, "rm", "--set", f"reward_model={tiny_model_dir}"))
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "not a sequence-classification model" in lines[0], err


def test_nan_in_ppo_exits_3_and_keeps_the_record(tiny_model_dir, tmp_path, capsys, monkeypatch):
    real = ppo_module.clipped_value_loss
    calls = [0]

    def nan_on_second_step(*args, **kwargs):
        calls[0] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls[0] == 2 else loss
    monkeypatch.setattr(ppo_module, "clipped_value_loss", nan_on_second_step)
    code, _, err = invoke(capsys, *ppo_args(tiny_model_dir, tmp_path, "nan", "--set", "ppo_epochs=1"))
    assert code == 3, err
    assert "non-finite at step 6" in err and len(err.strip().splitlines()) == 1, err
    metrics = json.loads((tmp_path / "nan" / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "original" in metrics["metrics"]
    assert {"train:sft", "train:reward_model", "train:ppo"} <= set(metrics["compute"])
    log = read_log(tmp_path, "nan")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6] and log[-1]["value_loss"] != log[-1]["value_loss"]


def test_a_saved_reward_model_loads_and_scores_and_a_broken_one_is_a_bench_error(tiny_model, tokenizer, tmp_path):
    from transformers import LlamaForSequenceClassification

    from unlearnbench.methods.reward_model import load_reward_model, reward_model_from, reward_scores

    reward_model = reward_model_from(tiny_model, tokenizer)
    assert torch.equal(reward_model.model.embed_tokens.weight, tiny_model.model.embed_tokens.weight)
    reward_model.save_pretrained(tmp_path / "rm")
    loaded = load_reward_model(str(tmp_path / "rm"), tokenizer, torch.device("cpu"))
    assert isinstance(loaded, LlamaForSequenceClassification)
    ids = torch.tensor([[0, 5, 6, 7], [5, 6, 7, 8]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    scores = reward_scores(loaded, ids, mask, torch.tensor([3, 2]))
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    # The score of a left-padded row equals the unpadded row's: positions follow the attention mask.
    alone = reward_scores(loaded, ids[:1, 1:], mask[:1, 1:], torch.tensor([2]))
    assert scores[0] == pytest.approx(float(alone[0]), abs=1e-5)
    (tmp_path / "rm" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BenchError, match="could not be loaded"):
        load_reward_model(str(tmp_path / "rm"), tokenizer, torch.device("cpu"))


REFUSED = ("error: ppo runs cannot be resumed: its three stages (SFT, reward model, PPO) are not checkpointed; "
           "start a new run")


def test_an_interrupted_ppo_run_refuses_resume_and_keeps_its_files(tiny_model_dir, tmp_path, capsys, monkeypatch):
    real = ppo_module.clipped_value_loss
    calls = [0]

    def interrupted_in_the_second_ppo_step(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(ppo_module, "clipped_value_loss", interrupted_in_the_second_ppo_step)
    code, _, err = invoke(capsys, *ppo_args(tiny_model_dir, tmp_path, "cut", "--set", "ppo_epochs=1"))
    assert code == 130, err
    run_dir = tmp_path / "cut"
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
    assert [r["step"] for r in read_log(tmp_path, "cut")] == [1, 2, 3, 4, 5]  # SFT, reward model, PPO step 1
    files = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    monkeypatch.setattr(ppo_module, "clipped_value_loss", real)

    code, out, err = invoke(capsys, "run", "--resume", str(run_dir))
    assert code == 2 and "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.strip()] == [REFUSED]
    # Refused before anything was written: the record, the train log and the generations are as they were.
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == files


def test_ppo_fit_refuses_a_checkpoint_to_resume_from(tmp_path):
    from unlearnbench.training import Checkpointing

    resuming = Checkpointing(tmp_path, resume=True)
    with pytest.raises(BenchError) as raised:  # before it looks at anything else
        ppo_module.PPO(PPOConfig()).fit(None, None, None, None, print, checkpointing=resuming)
    assert f"error: {raised.value}" == REFUSED
