"""The hostile-input suite: every case ends in one clear line on stderr and a non-zero exit, never a
traceback, and never loses a result written before it.

Most cases run the real CLI entry point in-process (`main(argv)`, the console script's code) so
the suite stays fast; the signal and concurrency cases run real subprocesses.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time

import pytest

from unlearnbench import records, runner
from unlearnbench.records import read_jsonl_records as read_jsonl
from unlearnbench.methods.unlearn import Unlearn
from unlearnbench.tasks.hallucination import HallucinationTask
from conftest import assert_one_line_error, invoke, popen_cli

ITEM = {"question": "What is the capital of France?", "right_answer": "Paris.", "hallucinated_answer": "Lyon."}


def jsonl(*rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def items(n, **change):
    return [{**ITEM, "question": f"Question number {i}?", **change} for i in range(n)]


@pytest.fixture()
def out(tmp_path):
    """An output root that already holds an earlier run, which no failure may touch."""
    root = tmp_path / "runs"
    earlier = root / "earlier-run"
    earlier.mkdir(parents=True)
    (earlier / "metrics.json").write_text('{"run_id": "earlier-run", "status": "completed"}\n')
    yield root
    assert (earlier / "metrics.json").read_text() == '{"run_id": "earlier-run", "status": "completed"}\n'


def write(tmp_path, name, content, binary=False):
    path = tmp_path / name
    path.write_bytes(content) if binary else path.write_text(content)
    return str(path)


# (case id, files to write {name: content}, CLI arguments with {tmp} for the temp folder, expected fragments)
CLI_CASES = [
    # malformed data files
    ("malformed-jsonl", {"d.jsonl": jsonl(ITEM) + "{not json\n"}, ["--data", "{tmp}/d.jsonl"], ["d.jsonl:2", "malformed JSON"]),
    ("truncated-jsonl", {"d.jsonl": jsonl(*items(6)) + '{"question": "cut of'}, ["--data", "{tmp}/d.jsonl"],
     ["d.jsonl:7", "malformed JSON"]),
    ("wrong-field-type", {"d.jsonl": jsonl({**ITEM, "question": 3})}, ["--data", "{tmp}/d.jsonl"],
     ["field 'question' should be str"]),
    ("list-instead-of-string", {"d.jsonl": jsonl({**ITEM, "hallucinated_answer": ["Lyon"]})}, ["--data", "{tmp}/d.jsonl"],
     ["field 'hallucinated_answer' should be str"]),
    ("missing-field", {"d.jsonl": jsonl({"question": "q?", "right_answer": "r"})}, ["--data", "{tmp}/d.jsonl"],
     ["missing field 'hallucinated_answer'"]),
    ("empty-string-field", {"d.jsonl": jsonl({**ITEM, "right_answer": "  "})}, ["--data", "{tmp}/d.jsonl"],
     ["field 'right_answer' is empty"]),
    ("not-an-object", {"d.jsonl": "[1, 2, 3]\n"}, ["--data", "{tmp}/d.jsonl"], ["expected a JSON object"]),
    ("non-utf8-bytes", {"d.jsonl": b'{"question": "caf\xe9?", "right_answer": "r", "hallucinated_answer": "h"}\n'},
     ["--data", "{tmp}/d.jsonl"], ["d.jsonl:1", "not UTF-8"]),
    ("empty-file", {"d.jsonl": ""}, ["--data", "{tmp}/d.jsonl"], ["has no items"]),
    ("blank-lines-only", {"d.jsonl": "\n  \n\n"}, ["--data", "{tmp}/d.jsonl"], ["has no items"]),
    ("empty-test-split", {"d.jsonl": jsonl(*items(1))}, ["--data", "{tmp}/d.jsonl"], ["too few to split"]),
    ("data-is-a-directory", {}, ["--data", "{tmp}"], ["does not exist"]),
    ("missing-data-file", {}, ["--data", "{tmp}/nope.jsonl"], ["does not exist"]),
    # impossible hyper-parameters
    ("steps-zero", {}, ["--steps", "0"], ["--steps must be at least 1"]),
    ("steps-negative", {}, ["--steps", "-5"], ["--steps must be at least 1"]),
    ("lr-nan", {}, ["--lr", "nan"], ["--lr must be a positive finite number"]),
    ("lr-zero", {}, ["--lr", "0"], ["--lr must be a positive finite number"]),
    ("lr-negative", {}, ["--lr", "-1e-5"], ["--lr must be a positive finite number"]),
    ("lr-infinite", {}, ["--lr", "inf"], ["--lr must be a positive finite number"]),
    ("batch-size-zero", {}, ["--batch-size", "0"], ["batch sizes must be at least 1"]),
    ("weight-nan", {}, ["--set", "forget_weight=NaN"], ["forget_weight must be finite and >= 0, got nan"]),
    ("weight-negative", {}, ["--set", "normal_weight=-1"], ["normal_weight must be finite and >= 0"]),
    ("mismatch-k-negative", {}, ["--set", "mismatch_k=-1"], ["mismatch_k must be >= 0"]),
    ("limit-zero", {}, ["--limit", "0"], ["--limit must be at least 1"]),
    ("max-new-tokens-zero", {}, ["--max-new-tokens", "0", "--original", "base"], ["--max-new-tokens must be at least 1"]),
    ("checkpoint-every-negative", {}, ["--checkpoint-every", "-1"], ["--checkpoint-every must be >= 0"]),
    ("set-without-equals", {}, ["--set", "forget_weight"], ["--set expects key=value"]),
    ("unknown-hyper-parameter", {}, ["--set", "mismatch_kk=3"], ["unknown hyper-parameter", "mismatch_kk"]),
    ("steps-not-a-number", {}, ["--steps", "many"], ["'many' is not a valid integer"]),
    ("set-lr-not-a-number", {}, ["--set", "lr=abc"], ["hyper-parameter lr must be a number, got 'abc'"]),
    ("set-steps-fractional", {}, ["--set", "steps=2.5"], ["hyper-parameter steps must be an integer, got 2.5"]),
    ("set-lora-not-a-bool", {}, ["--set", "lora=maybe"], ["hyper-parameter lora must be true or false"]),
    ("set-faithful-not-text", {}, ["--set", "faithful=3"], ["hyper-parameter faithful must be text, got 3"]),
    ("set-ga-negative-normal-weight", {}, ["--method", "ga", "--set", "normal_weight=-1"],
     ["normal_weight must be finite and >= 0"]),
    # unknown ids
    ("unknown-method", {}, ["--method", "unlern"], ["unknown method 'unlern'", "Did you mean 'unlearn'"]),
    ("unknown-task", {}, ["--task", "halucination"], ["Did you mean 'hallucination'"]),
    ("unknown-model-name", {}, ["--model", "smollm2-13m"], ["unknown model", "smollm2-135m"]),
    ("missing-model-directory", {}, ["--model", "{tmp}/no-model"], ["does not exist"]),
    ("unknown-preset", {}, ["--preset", "papr"], ["unknown preset 'papr'", "Did you mean 'paper'"]),
    ("unknown-backend", {}, ["--backend", "vlm"], ["unknown generator 'vlm'"]),
    ("unknown-template", {}, ["--template", "chatml"], ["--template must be"]),
    ("unknown-original", {}, ["--original", "best"], ["--original must be auto, base or prepared"]),
    # config files
    ("config-unsafe-yaml", {"c.yaml": "steps: !!python/object/apply:os.system ['touch {tmp}/pwned']\n"},
     ["--config", "{tmp}/c.yaml"], ["not valid (safe) YAML"]),
    ("config-unknown-key", {"c.yaml": "stepz: 3\n"}, ["--config", "{tmp}/c.yaml"], ["unknown option 'stepz'", "Did you mean 'steps'"]),
    ("config-not-a-mapping", {"c.yaml": "- steps\n"}, ["--config", "{tmp}/c.yaml"], ["should be a mapping"]),
    ("config-bad-value", {"c.yaml": "steps: 0\n"}, ["--config", "{tmp}/c.yaml"], ["--steps must be at least 1"]),
    # resume
    ("resume-missing-folder", {}, ["--resume", "{tmp}/no-run"], ["is not a run folder"]),
    ("resume-corrupted-record", {"r/config.json": '{"run_id": "r", "config": {}}', "r/metrics.json": '{"run_id": "r", "sta'},
     ["--resume", "{tmp}/r"], ["metrics.json is corrupted or half-written"]),
    ("resume-half-written-log", {"r/config.json": '{"run_id": "r", "config": {}}',
                                 "r/metrics.json": '{"run_id": "r", "status": "interrupted"}',
                                 "r/train_log.jsonl": '{"step": 1}\n{"step": 2, "tot'},
     ["--resume", "{tmp}/r"], ["train_log.jsonl:2 is corrupted or half-written"]),
]


@pytest.mark.parametrize("files,args,fragments", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_bad_input_gets_one_clear_line(tmp_path, out, capsys, files, args, fragments):
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        write(tmp_path, name, content, binary=isinstance(content, bytes))
    argv = ["run", *[a.replace("{tmp}", str(tmp_path)) for a in args]]
    if "--resume" not in args:
        argv += ["--output-dir", str(out)]
    code, _, err = invoke(capsys, *argv)
    assert_one_line_error(code, err, *fragments)
    assert not (tmp_path / "pwned").exists()


def test_the_suite_has_at_least_30_cases():
    assert len(CLI_CASES) + len(RUNTIME_CASES) >= 30


def test_unwritable_output_directory(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    # Tests may run as root, where permission bits do not stop writes: a path under a file does.
    code, _, err = invoke(capsys, "run", "--output-dir", str(blocker / "runs"))
    assert_one_line_error(code, err, "cannot write to output directory")


# Runs that get as far as the model (the tiny Llama): failures mid-run keep what was measured.
def tiny_args(model_dir, out, name, *extra):
    return ["run", "--model", str(model_dir), "--original", "base", "--limit", "2", "--max-new-tokens", "4",
            "--steps", "2", "--output-dir", str(out), "--run-name", name, *extra]


def record(out, name):
    return json.loads((out / name / "metrics.json").read_text())


def interrupt_in(phase):
    """Patch the first call of one phase to raise KeyboardInterrupt, as Ctrl-C (or SIGTERM) would there."""
    def patch(monkeypatch):
        if phase == "data":
            monkeypatch.setattr(HallucinationTask, "load", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        elif phase == "load":
            monkeypatch.setattr(runner.models, "load", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        elif phase == "train":
            monkeypatch.setattr(Unlearn, "loss", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        else:
            real = runner.Evaluator.evaluate

            def evaluate(self, generator, name, **kwargs):
                if name == {"eval_original": "original", "eval_unlearned": "unlearned"}[phase]:
                    raise KeyboardInterrupt
                return real(self, generator, name, **kwargs)
            monkeypatch.setattr(runner.Evaluator, "evaluate", evaluate)
    return patch


# What must be on disk after an interruption in each phase.
KEPT_AFTER = {
    "data": lambda r: "data" in r["compute"],
    "load": lambda r: "data" in r["compute"] and r["data"]["counts"]["eval_unlearned"] == 2,
    "eval_original": lambda r: "load" in r["compute"] and "metrics" not in r,
    "train": lambda r: set(r["metrics"]["original"]) == {"unlearned", "unseen", "normal"},
    "eval_unlearned": lambda r: r["train"]["steps"] == 2 and "original" in r["metrics"],
}

RUNTIME_CASES = [f"interrupt-{phase}" for phase in KEPT_AFTER] + ["nan-loss", "disk-full", "prompt-too-long",
                                                                  "unknown-utility-judge", "malformed-model-config"]


@pytest.mark.parametrize("phase", list(KEPT_AFTER))
def test_interruption_in_each_phase_keeps_what_was_measured(tiny_model_dir, out, capsys, monkeypatch, phase):
    interrupt_in(phase)(monkeypatch)
    code, _, err = invoke(capsys, *tiny_args(tiny_model_dir, out, "cut"))
    assert code == 130
    assert_one_line_error(code, err, "interrupted; results measured so far are kept")
    kept = record(out, "cut")
    assert kept["status"] == "interrupted"
    assert KEPT_AFTER[phase](kept), kept


def test_nan_loss_stops_and_keeps_the_record(tiny_model_dir, out, capsys, monkeypatch):
    real = Unlearn.loss

    def nan_at_step_2(self, model, step, reference):
        terms = real(self, model, step, reference)
        nan_at_step_2.calls += 1
        if nan_at_step_2.calls == 2:
            terms["total"] = terms["total"] * float("nan")
        return terms
    nan_at_step_2.calls = 0
    monkeypatch.setattr(Unlearn, "loss", nan_at_step_2)
    code, _, err = invoke(capsys, *tiny_args(tiny_model_dir, out, "nan", "--steps", "4"))
    assert code == 3
    assert_one_line_error(code, err, "non-finite at step 2")
    kept = record(out, "nan")
    assert kept["status"] == "diverged" and "original" in kept["metrics"]
    log = [json.loads(line) for line in (out / "nan" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]


def test_full_disk_mid_run_keeps_the_last_complete_record(tiny_model_dir, out, capsys, monkeypatch):
    real_loss, real_fsync = Unlearn.loss, os.fsync
    disk = {"full": False}

    def loss_then_fill_the_disk(self, model, step, reference):
        disk["full"] = True  # from the first training step on, every write fails with ENOSPC
        return real_loss(self, model, step, reference)

    def fsync(fd):
        if disk["full"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)
    monkeypatch.setattr(Unlearn, "loss", loss_then_fill_the_disk)
    monkeypatch.setattr(records.os, "fsync", fsync)
    code, _, err = invoke(capsys, *tiny_args(tiny_model_dir, out, "full"))
    assert_one_line_error(code, err, "No space left on device")
    kept = record(out, "full")  # still valid JSON: the failed writes never replaced it
    assert set(kept["metrics"]["original"]) == {"unlearned", "unseen", "normal"}
    assert not [p for p in (out / "full").iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_prompt_longer_than_the_context_is_refused(tiny_model_dir, tmp_path, out, capsys):
    long_question = "Why " + "really " * 600 + "?"
    data = write(tmp_path, "long.jsonl", jsonl(*items(10, question=long_question)))
    code, _, err = invoke(capsys, *tiny_args(tiny_model_dir, out, "long", "--data", data))
    assert_one_line_error(code, err, "of the 'unlearned' set is", "tokens; the model's context of 512")
    assert record(out, "long")["status"] == "failed"


def test_unknown_utility_judge(tiny_model_dir, out, capsys):
    code, _, err = invoke(capsys, *tiny_args(tiny_model_dir, out, "judge", "--utility-judge", "rewardz"))
    assert_one_line_error(code, err, "unknown utility judge 'rewardz'")


def test_malformed_model_config(tmp_path, out, capsys):
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "config.json").write_text("{not json")
    code, _, err = invoke(capsys, "run", "--model", str(model), "--output-dir", str(out))
    assert_one_line_error(code, err, "could not load model")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_real_signal_during_training(tiny_model_dir, out, signum):
    # A terminal's Ctrl-C reaches a program whose SIGINT is at its default. A suite started in the
    # background by a shell without job control (`make test &`, CI runners) hands its children
    # SIGINT ignored, and Python then rightly keeps ignoring it: give the child the default back.
    process = popen_cli(*tiny_args(tiny_model_dir, out, "signalled", "--steps", "100000", "--checkpoint-every", "3"),
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    run_dir = out / "signalled"
    progress = run_dir / "checkpoint" / "progress.json"
    # Signal once training has provably taken steps (its first checkpoint exists), however slow
    # the machine: a fixed delay after the original's evaluation raced the first step.
    deadline = time.time() + 600
    while time.time() < deadline and not progress.exists():
        assert process.poll() is None, process.communicate()[1]
        time.sleep(0.1)
    process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:  # a run that ignored the signal must not outlive the test (it trains forever)
            process.kill()
            process.communicate()
    assert process.returncode == 130
    assert_one_line_error(process.returncode, err, "interrupted")
    kept = record(out, "signalled")
    steps = [row["step"] for row in read_jsonl(run_dir / "train_log.jsonl")]
    # The handler's save keeps every step taken, the checkpointed ones and any after them.
    assert kept["status"] == "interrupted" and steps[:3] == [1, 2, 3] and steps == list(range(1, len(steps) + 1))


@pytest.mark.slow
def test_concurrent_runs_into_the_same_root_and_name(tiny_model_dir, out):
    processes = [popen_cli(*tiny_args(tiny_model_dir, out, "same")) for _ in range(2)]
    for process in processes:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    runs = sorted(p.name for p in out.iterdir() if p.name != "earlier-run")
    assert runs == ["same", "same-2"]
    assert all(record(out, name)["status"] == "completed" for name in runs)


def test_many_threads_claim_distinct_run_folders(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    config = runner.RunConfig(output_dir=str(tmp_path), run_name="race")
    with ThreadPoolExecutor(8) as pool:
        folders = list(pool.map(lambda _: runner.make_run_dir(config), range(16)))
    assert len(set(folders)) == 16
