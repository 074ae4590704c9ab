"""Safe loading: no remote code unless asked, weights-only torch.load, safe YAML, contained run
names, and no network when HF_HUB_OFFLINE is set."""

from __future__ import annotations

import ast
import json
import pickle
import socket
from pathlib import Path

import pytest

from unlearnbench import models, runner
from unlearnbench.errors import BenchError
from conftest import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_remote_code_is_not_run_unless_asked(tmp_path, tokenizer):
    model = tmp_path / "custom-model"
    tokenizer.save_pretrained(model)
    marker = tmp_path / "code-ran"
    (model / "config.json").write_text(json.dumps({
        "model_type": "unlearnbench-custom", "architectures": ["CustomModel"],
        "auto_map": {"AutoConfig": "configuration_custom.CustomConfig",
                     "AutoModelForCausalLM": "modeling_custom.CustomModel"}}))
    payload = f"open({str(marker)!r}, 'w').write('ran')\n"
    (model / "configuration_custom.py").write_text(payload)
    (model / "modeling_custom.py").write_text(payload)
    with pytest.raises(BenchError, match="--trust-remote-code"):
        models.load(str(model))
    assert not marker.exists()


def torch_load_calls(source: str) -> list[tuple[int, bool]]:
    """(line, weights_only=True?) for every `torch.load(...)` call in the source."""
    calls = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "load" and \
                getattr(node.func.value, "id", None) == "torch":
            safe = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)
            calls.append((node.lineno, safe))
    return calls


def test_the_torch_load_scan_tells_safe_from_unsafe_calls():
    source = "import torch\na = torch.load(f)\nb = torch.load(f, weights_only=True)\nc = torch.load(f, weights_only=False)\n"
    assert torch_load_calls(source) == [(2, False), (3, True), (4, False)]


def test_every_torch_load_in_the_package_is_weights_only():
    sources = [*ROOT.joinpath("bench").rglob("*.py"), *ROOT.joinpath("methods").rglob("*.py"),
               *ROOT.joinpath("metrics").rglob("*.py")]
    assert len(sources) > 30  # the scan reads the package, not an empty folder
    unsafe = [(path.name, line) for path in sources for line, safe in torch_load_calls(path.read_text()) if not safe]
    assert unsafe == []


class _RunsCode:
    def __reduce__(self):
        return (exec, ("open('PWNED_PATH', 'w').write('ran')",))


def test_a_checkpoint_holding_a_code_pickle_is_refused(tiny_model_dir, tmp_path):
    from unlearnbench.methods.unlearn import Unlearn

    real_loss, calls = Unlearn.loss, []

    def interrupt_at_step_4(self, model, step, reference):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_loss(self, model, step, reference)

    config = runner.RunConfig(model=str(tiny_model_dir), hyper={"steps": 6}, limit=2, original="base", max_new_tokens=4,
                              output_dir=str(tmp_path), run_name="poisoned", checkpoint_every=2)
    Unlearn.loss = interrupt_at_step_4
    try:
        with pytest.raises(KeyboardInterrupt):
            runner.run(config)
    finally:
        Unlearn.loss = real_loss
    marker = tmp_path / "pwned"
    poison = pickle.dumps(_RunsCode()).replace(b"PWNED_PATH", str(marker).encode())
    # Both pickled files of the checkpoint: accelerate skips an unreadable RNG file (with a log
    # line) and fails on an unreadable optimizer state, which we report. Neither runs the code.
    for name in ("random_states_0.pkl", "optimizer.bin"):
        assert (tmp_path / "poisoned" / "checkpoint" / name).is_file()
        (tmp_path / "poisoned" / "checkpoint" / name).write_bytes(poison)
    with pytest.raises(BenchError, match="cannot be loaded safely"):
        runner.run(resume=tmp_path / "poisoned")
    assert not marker.exists()


def test_config_files_are_read_with_safe_load(tmp_path):
    marker = tmp_path / "yaml-ran"
    config = tmp_path / "run.yaml"
    config.write_text(f"steps: !!python/object/apply:os.system ['touch {marker}']\n")
    assert_one_line_error(run_cli("run", "--config", str(config)), "not valid (safe) YAML")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["../../escape", "/etc/passwd", "a/../../b", "~root/x", "run\nname"])
def test_run_names_cannot_escape_the_output_root(tmp_path, name):
    root = tmp_path / "runs"
    run_dir = runner.make_run_dir(runner.RunConfig(output_dir=str(root), run_name=name))
    assert run_dir.resolve().parent == root.resolve()


def test_a_run_name_of_only_dots_is_refused(tmp_path):
    with pytest.raises(BenchError, match="no usable characters"):
        runner.make_run_dir(runner.RunConfig(output_dir=str(tmp_path), run_name=".."))


def test_nothing_reaches_the_network_offline(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BenchError, match="could not load model"):
        models.load("unlearnbench-test/no-such-model")
    from unlearnbench.tasks.hallucination import HallucinationTask

    with pytest.raises(BenchError, match="from the hub"):
        HallucinationTask().load("hub", 0)
    from unlearnbench.metrics.judges import utility_judge

    with pytest.raises(BenchError):
        utility_judge("OpenAssistant/reward-model-deberta-v3-large-v2", None).score(["q"], ["a"])
    assert attempts == []
