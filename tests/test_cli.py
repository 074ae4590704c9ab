"""Bad input: one clear line on stderr, a non-zero exit, never a traceback."""

import json
import os
import subprocess
import sys


BIN = [sys.executable, "-m", "unlearnbench.cli"]


def run_cli(*args, cwd=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "UNLEARNBENCH_QUIET": "1"}
    return subprocess.run([*BIN, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def assert_clean_error(result, *fragments):
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_method_suggests_the_closest(tmp_path):
    assert_clean_error(run_cli("run", "--method", "unlern", "--output-dir", str(tmp_path)), "unknown method 'unlern'", "Did you mean 'unlearn'")


def test_unknown_task(tmp_path):
    assert_clean_error(run_cli("run", "--task", "halucination", "--output-dir", str(tmp_path)), "Did you mean 'hallucination'")


def test_unknown_model(tmp_path):
    assert_clean_error(run_cli("run", "--model", "smollm2-13m", "--output-dir", str(tmp_path)), "unknown model", "smollm2-135m")


def test_missing_model_directory(tmp_path):
    assert_clean_error(run_cli("run", "--model", str(tmp_path / "nope"), "--output-dir", str(tmp_path)), "does not exist")


def test_steps_zero(tmp_path):
    assert_clean_error(run_cli("run", "--steps", "0", "--output-dir", str(tmp_path)), "--steps must be at least 1")


def test_negative_lr(tmp_path):
    assert_clean_error(run_cli("run", "--lr", "-1", "--output-dir", str(tmp_path)), "--lr must be a positive")


def test_unknown_hyper_parameter(tmp_path):
    assert_clean_error(run_cli("run", "--set", "mismatch_kk=3", "--output-dir", str(tmp_path)), "unknown hyper-parameter", "mismatch_kk")


def test_missing_data_file(tmp_path):
    assert_clean_error(run_cli("run", "--data", str(tmp_path / "missing.jsonl"), "--output-dir", str(tmp_path)), "does not exist")


def test_malformed_data_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q?", "right_answer": "r", "hallucinated_answer": "h"}\n{not json\n')
    assert_clean_error(run_cli("run", "--data", str(bad), "--output-dir", str(tmp_path)), "bad.jsonl:2", "malformed JSON")


def test_wrong_field_type(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": 3, "right_answer": "r", "hallucinated_answer": "h"}\n')
    assert_clean_error(run_cli("run", "--data", str(bad), "--output-dir", str(tmp_path)), "field 'question' should be str")


def test_empty_forget_set(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert_clean_error(run_cli("run", "--data", str(empty), "--output-dir", str(tmp_path)), "has no items")


def test_too_small_forget_set(tmp_path):
    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps({"question": "q?", "right_answer": "r", "hallucinated_answer": "h"}) + "\n")
    assert_clean_error(run_cli("run", "--data", str(small), "--output-dir", str(tmp_path)), "too few to split")


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    # Tests run as root in CI, where permission bits do not stop writes: a path under a file does.
    assert_clean_error(run_cli("run", "--output-dir", str(blocker / "runs")), "cannot write to output directory")


def test_list_shows_every_kind():
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    for name in ("hallucination", "unlearn", "ga", "hallucination_rate", "diversity", "fluency", "utility", "smollm2-135m", "hf"):
        assert name in result.stdout


def test_help_is_fast_and_imports_no_torch():
    code = "import sys; from unlearnbench.cli import cli; import unlearnbench.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
