"""The console script as a subprocess: one-line errors, `list`, and a torch-free `--help`.

The full hostile-input suite is tests/test_hostile.py."""

import subprocess
import sys

from conftest import assert_one_line_error, run_cli


def test_unknown_method_suggests_the_closest(tmp_path):
    assert_one_line_error(run_cli("run", "--method", "unlern", "--output-dir", str(tmp_path)),
                          "unknown method 'unlern'", "Did you mean 'unlearn'")


def test_list_shows_every_kind():
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    for name in ("hallucination", "unlearn", "ga", "hallucination_rate", "diversity", "fluency", "utility", "smollm2-135m", "hf"):
        assert name in result.stdout


def test_help_is_fast_and_imports_no_torch():
    code = "import sys; from unlearnbench.cli import cli; import unlearnbench.registry; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
