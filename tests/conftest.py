"""Shared test helpers: the one way to run the CLI, the embedded tokenizer, and the tiny Llama.

Plain functions are imported by the test files (`from conftest import run_cli`); fixtures are
found by pytest."""

import os
import subprocess
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["UNLEARNBENCH_QUIET"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests replace judges and data in-process, which the reuse key cannot see; the test of reuse
# turns it on with its own cache.
os.environ["UNLEARNBENCH_REUSE_ORIGINAL_EVAL"] = "0"
if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under `pytest -n N` each worker (and every CLI subprocess it starts) gets one thread:
    # N workers of the default width would oversubscribe the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

# ---- the CLI ------------------------------------------------------------------------------------


def invoke(capsys, *args) -> tuple[int | None, str, str]:
    """(exit code, stdout, stderr) of `unlearnbench ARGS` run in-process (the console script's
    `main`), fast; the code is 0 when the command returns normally."""
    from unlearnbench import cli

    try:
        cli.main(list(args))
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cli_env(extra_env=None) -> dict:
    """The environment of a CLI subprocess: this one, offline and quiet, plus `extra_env`."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "UNLEARNBENCH_QUIET": "1", **(extra_env or {})}


def cli_command(*args, launcher=None) -> list:
    """`python -m unlearnbench.cli ARGS`, or `LAUNCHER -m unlearnbench.cli ARGS` (e.g. accelerate launch)."""
    return [*(launcher or [sys.executable]), "-m", "unlearnbench.cli", *args]


def run_cli(*args, timeout=600, extra_env=None, launcher=None) -> subprocess.CompletedProcess:
    """`unlearnbench ARGS` as a subprocess that is waited for, its output captured as text."""
    return subprocess.run(cli_command(*args, launcher=launcher), capture_output=True, text=True,
                          env=cli_env(extra_env), timeout=timeout)


def popen_cli(*args, extra_env=None, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen_options) -> subprocess.Popen:
    """`unlearnbench ARGS` as a subprocess left running (to signal it, or race it with another)."""
    return subprocess.Popen(cli_command(*args), stdout=stdout, stderr=stderr, text=True, env=cli_env(extra_env),
                            **popen_options)


def assert_one_line_error(code, err, *fragments):
    """A failed command: a non-zero exit, no traceback, and exactly one line on stderr holding
    every fragment. Takes (exit code, stderr, *fragments), or a finished subprocess in place of the
    first two: `assert_one_line_error(run_cli(...), *fragments)`."""
    if isinstance(code, subprocess.CompletedProcess):
        code, err, fragments = code.returncode, code.stderr, (err, *fragments)
    assert code not in (0, None), err
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def loss_interrupted_at(real_loss, step: int):
    """A method's `loss` that raises KeyboardInterrupt on its `step`-th call: a run cut mid-training."""
    calls = []

    def loss(self, model, batch_step, reference):
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return real_loss(self, model, batch_step, reference)
    return loss


# ---- the embedded model and its tokenizer -------------------------------------------------------


@pytest.fixture(scope="session")
def smol():
    """The embedded default model (converted once into the user cache)."""
    from unlearnbench import models

    return models.load("smollm2-135m")


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded model's tokenizer alone, read from its converted cache folder (converting the
    model into the cache first only when that folder does not exist yet); no model is loaded."""
    from unlearnbench import models

    return models.load_tokenizer(models.resolve("smollm2-135m"))


# ---- the tiny Llama -----------------------------------------------------------------------------


def tiny_llama_config(tokenizer, **overrides):
    """The config of a tiny random Llama (2 layers, width 32, context 512) over `tokenizer`'s
    vocabulary and special tokens: fast, real architecture. `overrides` are LlamaConfig fields
    (num_labels for a classifier, ...); with no tokenizer, give vocab_size and pad_token_id."""
    from transformers import LlamaConfig

    fields = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 512}
    if tokenizer is not None:
        fields.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return LlamaConfig(**{**fields, **overrides})


@pytest.fixture()
def tiny_model(tokenizer):
    """A randomly initialised tiny Llama (tiny_llama_config) with the embedded tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config(tokenizer)).eval()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """The tiny Llama saved as a local model folder (safetensors + the embedded tokenizer):
    whole runs through the CLI in seconds."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(tiny_llama_config(tokenizer, tie_word_embeddings=True)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
