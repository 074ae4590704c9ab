"""Third-party methods arrive through the `unlearnbench.methods` entry-point group."""

import textwrap

from conftest import run_cli


def make_plugin(root):
    """A minimal installed distribution on sys.path: a module plus a dist-info with entry points."""
    (root / "tiny_plugin").mkdir()
    (root / "tiny_plugin" / "__init__.py").write_text(textwrap.dedent('''
        """Gradient ascent at half strength: L = -0.5 * CE(forget)."""
        from unlearnbench.methods import Method
        from unlearnbench.methods.terms import answer_cross_entropy


        class HalfAscent(Method):
            name = "half_ascent"

            def loss(self, model, step, reference):
                ce = answer_cross_entropy(model, step.forget)
                return {"total": -0.5 * ce, "forget_ce": ce}
    '''))
    info = root / "tiny_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[unlearnbench.methods]\nhalf_ascent = tiny_plugin:HalfAscent\n")


def run_with_plugin(root, *args):
    return run_cli(*args, extra_env={"PYTHONPATH": str(root)})


def test_plugin_is_listed_and_runs(tmp_path, tiny_model_dir):
    make_plugin(tmp_path)
    listed = run_with_plugin(tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if "half_ascent" in line)
    assert "plugin" in line and "tiny_plugin:HalfAscent" in line

    result = run_with_plugin(tmp_path, "run", "--method", "half_ascent", "--model", str(tiny_model_dir), "--steps", "1",
                             "--limit", "2", "--max-new-tokens", "4", "--original", "base",
                             "--output-dir", str(tmp_path / "runs"), "--run-name", "plugin")
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "runs" / "plugin" / "train_log.jsonl").read_text()
    assert '"forget_ce"' in log
