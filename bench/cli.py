"""`unlearnbench` command line. Bad input ends in one line on stderr and a non-zero exit."""

from __future__ import annotations

import os
import signal
import sys
import time

import click

from unlearnbench.errors import BenchError, first_line


def _parse_set(values: tuple[str, ...]) -> dict:
    """--set key=value pairs for method hyper-parameters; values parsed as JSON when they can be."""
    import json

    overrides = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise BenchError(f"--set expects key=value, got {item!r}")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


def _load_config_file(ctx, param, value):
    """--config FILE.yaml: run options as a YAML mapping; flags on the command line win.

    Read with yaml.safe_load, so a file cannot construct Python objects.
    """
    if not value:
        return value
    import yaml

    from unlearnbench.registry import unknown_name_message

    try:
        with open(value, encoding="utf-8") as handle:
            options = yaml.safe_load(handle)
    except OSError as exc:
        raise BenchError(f"--config: cannot read '{value}': {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise BenchError(f"--config: '{value}' is not valid (safe) YAML: {first_line(exc)}") from exc
    if not isinstance(options, dict):
        raise BenchError(f"--config: '{value}' should be a mapping of option: value")
    names = {p.name for p in ctx.command.params if p.name not in ("config", "resume")}
    defaults = {}
    for key, option_value in options.items():
        name = str(key).replace("-", "_")
        if name not in names:
            raise BenchError(f"--config: {unknown_name_message('option', str(key), sorted(names))}")
        defaults[name] = option_value
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return value


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="unlearnbench")
def cli():
    """Unlearning benchmark for LLMs: unlearn, evaluate before/after, and record everything."""


@cli.command()
@click.option("--method", default="unlearn", show_default=True, help="unlearning method (see `unlearnbench list`)")
@click.option("--task", default="hallucination", show_default=True, help="task (see `unlearnbench list`)")
@click.option("--model", default="smollm2-135m", show_default=True, help="embedded name, hub id or local directory")
@click.option("--data", default="embedded", show_default=True, help="embedded | hub | PATH to a JSONL file")
@click.option("--steps", type=int, help="optimizer steps (method default if unset)")
@click.option("--lr", type=float, help="learning rate (method default if unset)")
@click.option("--batch-size", type=int, help="forget/normal batch size (method default if unset)")
@click.option("--lora/--full", default=None, help="train LoRA adapters (peft) or all weights")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default=None,
              help="training autocast; auto = bf16 on CUDA cards that support it, else fp32")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="any method hyper-parameter, e.g. --set mismatch_k=3")
@click.option("--preset", default="default", show_default=True,
              help="default | paper (the paper's settings per model and task) | faithful-code")
@click.option("--from-tune", "from_tune", type=click.Path(file_okay=False), metavar="TUNE_DIR",
              help="run the settings a `tune` study selected (its tune.json); the record and boards call the preset 'tuned'")
@click.option("--faithful", type=click.Choice(["paper", "code"]), default=None,
              help="code: the official code's exact loss, sampling and schedule semantics (bugs included)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--seeds", help="several seeds, e.g. 0,1,2 or 0-2: one run each in a group folder, tables show mean ± 95%% CI")
@click.option("--limit", type=int, help="evaluate at most this many prompts per evaluation set")
@click.option("--output-dir", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--run-name", help="folder name under --output-dir (default: time-task-method-seed)")
@click.option("--template", default="auto", show_default=True,
              help="auto | chat | paper ('### Question: ... ### Answer: ') | plain (text continuation)")
@click.option("--original", default="auto", show_default=True,
              help="auto: prepare an original showing the behaviour if the base model lacks it; base; prepared")
@click.option("--backend", default="hf", show_default=True,
              help="generation backend: hf | vllm (CUDA, pip install 'unlearnbench[vllm]') | ctranslate2 (CPU; float32, "
                   "or UNLEARNBENCH_CT2_COMPUTE_TYPE=int8) | auto (vllm where it can run, else hf)")
@click.option("--encoder", default="all-MiniLM-L6-v2", show_default=True, help="encoder for similarity metrics")
@click.option("--utility-judge", default="similarity", show_default=True,
              help="'similarity' or a reward model id, e.g. OpenAssistant/reward-model-deberta-v3-large-v2")
@click.option("--harm-judge", default="embedded", show_default=True,
              help="'embedded' (offline classifier) or a moderation model id, e.g. PKU-Alignment/beaver-dam-7b")
@click.option("--similarity-judge", default="embedding", show_default=True,
              help="similarity to the original's outputs: 'embedding' or a BLEURT-style checkpoint id")
@click.option("--book", type=click.Path(dir_okay=False), help="copyright task: your own book as a UTF-8 text file")
@click.option("--max-new-tokens", type=int, help="generation length (task default if unset)")
@click.option("--trust-remote-code", is_flag=True, help="allow models/tokenizers that run their own code")
@click.option("--checkpoint-every", type=int, default=50, show_default=True,
              help="save the training state every N steps (0: only at the end) so that --resume can continue")
@click.option("--keep-checkpoint", is_flag=True, help="keep the final training state after the run completes")
@click.option("--save-model", is_flag=True, help="write the unlearned model to RUN_DIR/model (for `unlearnbench attack`)")
@click.option("--attacks", metavar="LIST", help="after the run, attack the unlearned model: relearn,rephrase,quantize,mia")
@click.option("--eval-every", type=int, default=0, show_default=True,
              help="score the forget and utility metrics on the validation split every K steps (eval_log.jsonl)")
@click.option("--eval-limit", type=int, default=32, show_default=True, help="validation prompts per set for --eval-every")
@click.option("--select", type=click.Choice(["last", "best"]), default="last", show_default=True,
              help="best: keep the step --eval-every found best under the selection rule (lowest forget_val rate within "
                   "the two limits), not the last")
@click.option("--max-utility-drop", type=float, default=0.10, show_default=True,
              help="--select best: largest relative fall of normal_val utility")
@click.option("--max-degenerate", type=float, default=0.10, show_default=True,
              help="--select best: largest degenerate rate on forget_val")
@click.option("--resume", "resume", type=click.Path(file_okay=False), metavar="RUN_DIR",
              help="continue an interrupted or failed run from its folder, with its recorded options")
@click.option("--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
              callback=_load_config_file, help="YAML file of run options (safe_load); flags override it")
@click.pass_context
def run(ctx, method, task, model, data, steps, lr, batch_size, lora, precision, sets, preset, seed, limit, output_dir,
        run_name, template, original, backend, encoder, utility_judge, max_new_tokens, trust_remote_code,
        checkpoint_every, keep_checkpoint, resume, faithful, harm_judge, similarity_judge, book, seeds, eval_every,
        eval_limit, save_model, attacks, select, max_utility_drop, max_degenerate, from_tune):
    """Unlearn with METHOD on TASK and evaluate the original and unlearned models."""
    from click.core import ParameterSource

    from unlearnbench.config import RunConfig

    if resume:
        given = _given_options(ctx, besides="resume")
        if given:
            raise BenchError(f"--resume continues the run with its recorded options; drop {', '.join(given)}")
        from pathlib import Path

        if (Path(resume) / "summary.json").is_file():  # a --seeds group
            _run_seeds_and_report(None, None, group=Path(resume))
        else:
            _run_and_report(None, resume=resume)
        return
    if seeds is not None and ctx.get_parameter_source("seed") not in (ParameterSource.DEFAULT, None):
        raise BenchError("give --seed or --seeds, not both")
    hyper = _parse_set(sets)
    if book:
        if task != "copyright":
            raise BenchError("--book is for --task copyright")
        data = book
    for key, value in (("steps", steps), ("lr", lr), ("batch_size", batch_size), ("lora", lora),
                       ("precision", precision), ("faithful", faithful)):
        if value is not None:
            hyper[key] = value
    tuned = None
    if from_tune:
        if ctx.get_parameter_source("preset") not in (ParameterSource.DEFAULT, None):
            raise BenchError("give --preset or --from-tune, not both")
        from pathlib import Path

        from unlearnbench.tune import selected_settings

        tuned_hyper, tuned = selected_settings(Path(from_tune), method=method, task=task, model=model)
        hyper, preset = {**tuned_hyper, **hyper}, "tuned"  # the user's flags still win, as over any preset
    config = RunConfig(method=method, task=task, model=model, data=data, seed=seed, preset=preset, hyper=hyper, tuned=tuned,
                       limit=limit, output_dir=output_dir, run_name=run_name, template=template, original=original,
                       backend=backend, encoder=encoder, utility_judge=utility_judge, max_new_tokens=max_new_tokens,
                       trust_remote_code=trust_remote_code, checkpoint_every=checkpoint_every,
                       harm_judge=harm_judge, similarity_judge=similarity_judge,
                       keep_checkpoint=keep_checkpoint, eval_every=eval_every, eval_limit=eval_limit,
                       save_model=save_model, attacks=_attack_names(attacks) if attacks else (), select=select,
                       max_utility_drop=max_utility_drop, max_degenerate=max_degenerate)
    if seeds is not None:
        _run_seeds_and_report(config, seeds)
    else:
        _run_and_report(config)


def _attack_names(text: str) -> tuple[str, ...]:
    from unlearnbench.attack import parse_attacks

    return parse_attacks(text)


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...")
@click.option("--attacks", default="relearn,rephrase,quantize,mia", show_default=True, metavar="LIST",
              help="comma-separated attacks (see `unlearnbench list`)")
@click.option("--limit", type=int, default=100, show_default=True,
              help="forget prompts per attacked evaluation (and items per membership-inference side)")
@click.option("--relearn-steps", default="10,30", show_default=True, metavar="K,K", help="relearning steps to evaluate after")
@click.option("--relearn-lr", type=float, help="relearning learning rate  [default: the run's own]")
def attack(run_dirs, attacks, limit, relearn_steps, relearn_lr):
    """Attack runs' unlearned models: does the forgetting survive relearning, rephrasing,
    quantization and membership inference? Results go into each run's record and README."""
    from unlearnbench.attack import AttackSettings, attack as attack_run, drop_model_kept_for_attacks
    from unlearnbench.leaderboard import expand_run_dirs
    from unlearnbench.run_folder import RunRecord

    try:
        steps = tuple(int(part) for part in relearn_steps.split(",") if part.strip())
    except ValueError:
        raise BenchError(f"--relearn-steps expects step counts like 10,30, got {relearn_steps!r}") from None
    settings = AttackSettings(attacks=_attack_names(attacks), limit=limit, relearn_steps=steps, relearn_lr=relearn_lr)
    settings.check()
    _quiet_libraries()
    for run_dir in expand_run_dirs(run_dirs):
        attack_run(run_dir, settings)
        drop_model_kept_for_attacks(run_dir)
        summary = RunRecord.load(run_dir).attacks.get("summary", {})
        click.echo(f"{run_dir}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in summary.items()))
    click.echo("each run's README.md has the robustness section; every output is in attack_generations.jsonl")


def _run_seeds_and_report(config, seeds_text: str | None, group=None):
    from unlearnbench.multiseed import parse_seeds, resume_seeds, run_seeds, seed_records
    from unlearnbench.records import load_json
    from unlearnbench.run_folder import process_state
    from unlearnbench.tables import paper_table

    _quiet_libraries()
    if group is None:
        group, failures = run_seeds(config, parse_seeds(seeds_text))
    else:
        group, failures = resume_seeds(group)
    if not process_state().is_main_process:
        return
    summary = load_json(group / "summary.json")
    seeds, plan = summary["seeds"], summary["config"]
    records = seed_records(group)
    click.echo(f"\n{plan['method']} on {plan['task']} ({plan['model']}), {len(records)} of {len(seeds)} seeds completed")
    table = paper_table(records, fmt="simple_outline") if records else ""
    if table:
        click.echo(table)
    for metric, judge in (records[0].get("judges", {}) if records else {}).items():
        click.echo(f"  {metric}: judged by {judge}")
    click.echo(f"results: {group} (summary.json, README.md, one folder per seed)")
    if failures:
        raise BenchError(f"{len(failures)} of {len(seeds)} seeds did not complete; " + "; ".join(failures))


def _run_and_report(config, resume=None):
    from unlearnbench.run_folder import RunRecord, process_state
    from unlearnbench.runner import run as run_pipeline
    from unlearnbench.tables import comparison_table, paper_table

    _quiet_libraries()
    run_dir = run_pipeline(config, resume=resume)
    if not process_state().is_main_process:
        return
    metrics = RunRecord.load(run_dir).as_dict()
    saved = metrics["config"]
    click.echo(f"\n{saved['method']} on {saved['task']} ({saved['model']}, original: {metrics['original']['kind']})")
    click.echo(comparison_table(metrics, fmt="simple_outline"))
    table = paper_table(metrics)
    if table:
        click.echo("\nLaid out as the paper's Table 3:")
        click.echo(table)
    for metric, judge in metrics.get("judges", {}).items():
        click.echo(f"  {metric}: judged by {judge}")
    total = metrics["compute"]["total"]
    click.echo(f"  compute: {total['wall_seconds']:.0f} s wall, {total['flops']:.3g} FLOPs, peak {total['peak_rss_mb']:.0f} MB")
    if saved.get("data") not in ("embedded", "hub") and saved.get("preset") == "default":
        click.echo(f"  note: the defaults were chosen on the embedded data; to choose them on yours: unlearnbench tune "
                   f"--method {saved['method']} --task {saved['task']} --data {saved['data']}, then run --from-tune")
    click.echo(f"results: {run_dir}")


def _quiet_libraries():
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@cli.command(name="eval")
@click.option("--model", required=True, help="the model to score: hub id, local directory or embedded name")
@click.option("--task", default="hallucination", show_default=True, help="task (see `unlearnbench list`)")
@click.option("--reference", help="the model it was unlearned from, evaluated too for before/after and similarity")
@click.option("--data", default="embedded", show_default=True, help="embedded | hub | PATH")
@click.option("--seed", type=int, default=0, show_default=True, help="the split seed (match the run that unlearned)")
@click.option("--limit", type=int, help="evaluate at most this many prompts per evaluation set")
@click.option("--output-dir", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--run-name", help="folder name under --output-dir")
@click.option("--template", default="auto", show_default=True, help="auto | chat | paper | plain")
@click.option("--harm-judge", default="embedded", show_default=True)
@click.option("--utility-judge", default="similarity", show_default=True)
@click.option("--similarity-judge", default="embedding", show_default=True)
@click.option("--max-new-tokens", type=int)
@click.option("--trust-remote-code", is_flag=True)
@click.option("--backend", default="hf", show_default=True,
              help="generation backend: hf | vllm (CUDA, pip install 'unlearnbench[vllm]') | ctranslate2 (CPU; float32, "
                   "or UNLEARNBENCH_CT2_COMPUTE_TYPE=int8) | auto (vllm where it can run, else hf)")
def evaluate(model, task, reference, data, seed, limit, output_dir, run_name, template, harm_judge, utility_judge,
             similarity_judge, max_new_tokens, trust_remote_code, backend):
    """Score an existing model on TASK without training (a model unlearned elsewhere)."""
    from unlearnbench.config import RunConfig
    from unlearnbench.generation import choose_backend
    from unlearnbench.run_folder import RunRecord
    from unlearnbench.runner import evaluate_model
    from unlearnbench.tables import comparison_table

    _quiet_libraries()
    config = RunConfig(method="eval", task=task, model=model, data=data, seed=seed, limit=limit, output_dir=output_dir,
                       run_name=run_name or f"{time.strftime('%Y%m%d-%H%M%S')}-{task}-eval-s{seed}", template=template,
                       harm_judge=harm_judge, utility_judge=utility_judge, similarity_judge=similarity_judge,
                       max_new_tokens=max_new_tokens, trust_remote_code=trust_remote_code,
                       backend=choose_backend(backend))
    if max_new_tokens is not None and max_new_tokens < 1:
        raise BenchError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    run_dir = evaluate_model(config, reference)
    metrics = RunRecord.load(run_dir).as_dict()
    if reference:
        click.echo(comparison_table(metrics, fmt="simple_outline"))
    else:
        from tabulate import tabulate

        rows = [[split, name, "NM" if m["value"] is None else f"{m['value']:.3f}"]
                for split, scores in metrics["metrics"]["unlearned"].items() for name, m in scores.items()]
        click.echo(tabulate(rows, headers=["split", "metric", model], tablefmt="simple_outline", disable_numparse=True))
    for metric, judge in metrics.get("judges", {}).items():
        click.echo(f"  {metric}: judged by {judge}")
    click.echo(f"results: {run_dir}")


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...")
@click.option("--leaderboard", required=True, type=click.Path(dir_okay=False),
              help="the markdown file to (re)generate, e.g. leaderboards/hallucination.md")
@click.option("--no-plots", is_flag=True, help="skip the PNG plots")
def publish(run_dirs, leaderboard, no_plots):
    """Add runs (or --seeds groups) to a leaderboard and regenerate it from the run records."""
    from unlearnbench.leaderboard import publish as publish_runs

    counts = publish_runs(run_dirs, leaderboard, plots=not no_plots)
    click.echo(f"{leaderboard}: {counts['added']} run(s) added, {counts['replaced']} replaced, "
               f"{counts['unchanged']} already published; {counts['rows']} measured row(s)")


@cli.command()
@click.option("--method", required=True, help="the method to tune (its config declares the search space)")
@click.option("--task", default="hallucination", show_default=True)
@click.option("--model", default="smollm2-135m", show_default=True, help="embedded name, hub id or local directory")
@click.option("--data", default="embedded", show_default=True, help="embedded | hub | PATH")
@click.option("--seed", type=int, default=0, show_default=True, help="the runs' seed and the sampler's")
@click.option("--trials", type=int, default=12, show_default=True, help="completed trials the study should reach (a diverged trial does not count; rerun to top up)")
@click.option("--steps", type=int, help="training steps of every trial (method default if unset)")
@click.option("--limit", type=int, help="prompts per test set; trials evaluate none, and the flag is accepted so that an earlier study's command continues unchanged")
@click.option("--eval-limit", type=int, default=48, show_default=True, help="validation prompts per set")
@click.option("--max-utility-drop", type=float, default=0.10, show_default=True,
              help="selection limit: relative fall of utility on normal_val")
@click.option("--max-degenerate", type=float, default=0.10, show_default=True,
              help="selection limit: degenerate rate on forget_val")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="a hyper-parameter held fixed in every trial")
@click.option("--original", default="auto", show_default=True, help="auto | base | prepared (as for run)")
@click.option("--max-new-tokens", type=int, help="generation length (task default if unset)")
@click.option("--output-dir", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--name", help="group folder under --output-dir (default: tune-TASK-METHOD-sSEED); rerun to continue")
def tune(method, task, model, data, seed, trials, steps, limit, eval_limit, max_utility_drop, max_degenerate, sets,
         original, max_new_tokens, output_dir, name):
    """Search METHOD's hyper-parameters on TASK's validation split; select by one stated rule."""
    from pathlib import Path

    from tabulate import tabulate

    from unlearnbench.config import RunConfig, resolve_config
    from unlearnbench.tune import TuneConfig, feasible, tune as run_tune

    if trials < 1 or not 0 <= max_utility_drop <= 1 or not 0 <= max_degenerate <= 1:
        raise BenchError("--trials must be at least 1 and both limits between 0 and 1")
    hyper = _parse_set(sets)
    if steps is not None:
        hyper["steps"] = steps
    _quiet_libraries()
    config = RunConfig(method=method, task=task, model=model, data=data, seed=seed, hyper=hyper, limit=limit,
                       original=original, max_new_tokens=max_new_tokens, eval_limit=eval_limit, checkpoint_every=0)
    resolve_config(config)  # every name and number checked before the first trial
    group = Path(output_dir) / (name or f"tune-{task}-{method}-s{seed}")
    tuning = TuneConfig(config, trials, max_utility_drop, max_degenerate)
    summary = run_tune(tuning, group)
    chosen = summary["selected"]
    rows = [["*" if chosen and r["trial"] == chosen["trial"] else "", r["run"],
             ", ".join(f"{k}={v:.3g}" for k, v in r["params"].items()), f"{r['forget']:.3f}",
             f"{r['utility']:.3f}", f"{r['utility_drop']:+.1%}", f"{r['degenerate']:.3f}",
             "yes" if feasible(r, tuning) else "no"]
            for r in summary["results"]]
    click.echo(tabulate(rows, headers=["", "trial", "parameters", "forget (val)", "utility (val)", "utility drop",
                                       "degenerate (val)", "within limits"], tablefmt="simple_outline",
                        disable_numparse=True))
    click.echo(f"rule: {summary['rule']}")
    click.echo(f"selected: {chosen['run']} ({', '.join(f'{k}={v:.4g}' for k, v in chosen['params'].items())})"
               if chosen else "selected: none (no trial stayed within both limits)")
    click.echo(f"results: {group}/tune.json, {group}/tune.png")


@cli.command()
@click.argument("run_dirs", nargs=-1, required=True, metavar="RUN_DIR...")
def rescore(run_dirs):
    """Score finished runs' recorded outputs again with today's judges (no model is run). A
    compare folder is rescored run by run (the completed ones), and its table is rebuilt."""
    from pathlib import Path

    from unlearnbench.compare import compare_runs, is_compare_folder, rebuild_comparison
    from unlearnbench.leaderboard import expand_run_dirs
    from unlearnbench.progress import bar
    from unlearnbench.rescore import rescore as rescore_run
    from unlearnbench.run_folder import RunRecord

    _quiet_libraries()
    comparisons = [Path(d) for d in run_dirs if is_compare_folder(Path(d))]
    folders = expand_run_dirs([d for d in run_dirs if not is_compare_folder(Path(d))]) if len(comparisons) < len(run_dirs) else []
    for comparison in comparisons:
        for run_dir in compare_runs(comparison):
            status = RunRecord.load(run_dir).status
            if status == "completed":
                folders.append(run_dir)
            else:
                click.echo(f"{run_dir}: not rescored, its status is '{status}'")
    folders = list({path.resolve(): path for path in folders}.values())  # a run named twice is rescored once
    judges: dict = {}  # one set of judges per judge configuration, shared by the runs that use it
    for run_dir in bar(folders, desc="rescoring", unit="run"):
        recomputed = rescore_run(run_dir, judges)
        click.echo(f"{run_dir}: rescored {', '.join(recomputed)}")
    for comparison in comparisons:
        rebuild_comparison(comparison)
        click.echo(f"{comparison}: rebuilt compare.md, compare.json and the plots from the rescored records")


@cli.command(name="validate-judges")
@click.option("--output", default="docs/judges.md", show_default=True, type=click.Path(dir_okay=False),
              help="where to write the report")
def validate_judges(output):
    """Measure every judge against the labelled real outputs; write docs/judges.md."""
    from pathlib import Path

    from unlearnbench.judge_set import validate

    _quiet_libraries()
    result = validate(Path(output))
    for metric, entry in result["judges"].items():
        figures = entry["slices"]["all"]
        kappa = "-" if figures["kappa"] is None else f"{figures['kappa']:.2f}"
        click.echo(f"{metric}: accuracy {figures['accuracy']:.1%}, κ {kappa} on {figures['n']} items")


@cli.command()
@click.option("--methods", default="unlearn,ga,sft,ppo", show_default=True,
              help="comma-separated methods; 'sft' is the paper's SFT row (sft_safe: SFT on the safe responses)")
@click.option("--task", default="harmful", show_default=True, help="task (ppo and sft need the harmful task)")
@click.option("--model", default="smollm2-135m", show_default=True, help="embedded name, hub id or local directory")
@click.option("--data", default="embedded", show_default=True, help="embedded | hub | PATH")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--limit", type=int, help="evaluate at most this many prompts per evaluation set")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="a hyper-parameter for every method that has it, or METHOD.KEY=VALUE for one, e.g. ppo.rm_steps=40")
@click.option("--original", default="auto", show_default=True, help="auto | base | prepared (as for run)")
@click.option("--max-new-tokens", type=int, help="generation length (task default if unset)")
@click.option("--output-dir", default="runs", show_default=True, type=click.Path(file_okay=False))
@click.option("--compare-id", help="folder name under --output-dir (default: time-compare-task-seed)")
@click.option("--seeds", help="several seeds, e.g. 0,1,2: every method once per seed, rows are means")
@click.option("--eval-every", type=int, default=0, show_default=True,
              help="score forget_val and normal_val every K steps (ppo: PPO steps), for compute-to-target")
@click.option("--eval-limit", type=int, default=32, show_default=True, help="validation prompts per set for --eval-every")
@click.option("--target", type=float, help="compute-to-target: the forget_val rate to reach  [default: ppo's final + --tolerance]")
@click.option("--tolerance", type=float, default=0.05, show_default=True, help="added to ppo's final rate for the default target")
@click.option("--max-utility-drop", type=float, default=0.10, show_default=True,
              help="compute-to-target counts a step only if utility on normal_val fell by at most this (relative)")
@click.option("--max-degenerate", type=float, default=0.10, show_default=True,
              help="... and at most this share of forget_val answers is degenerate")
@click.option("--resume", "resume", type=click.Path(file_okay=False), metavar="COMPARE_DIR",
              help="finish an interrupted comparison with its recorded plan: completed runs are kept, "
                   "interrupted ones continue, missing ones start")
@click.pass_context
def compare(ctx, methods, task, model, data, seed, limit, sets, original, max_new_tokens, output_dir, compare_id, seeds,
            eval_every, eval_limit, target, tolerance, max_utility_drop, max_degenerate, resume):
    """Run several METHODS on the same model, data and seed; tabulate their metrics and training compute."""
    from pathlib import Path

    from unlearnbench.compare import compare as run_compare, parse_methods, resume_compare
    from unlearnbench.records import load_json
    from unlearnbench.config import RunConfig

    from unlearnbench.multiseed import parse_seeds

    if resume:
        given = _given_options(ctx, besides="resume")
        if given:
            raise BenchError(f"--resume finishes the comparison with its recorded options; drop {', '.join(given)}")
        _quiet_libraries()
        folder = resume_compare(Path(resume))
    else:
        names = parse_methods(methods)
        seed_list = parse_seeds(seeds) if seeds is not None else None
        if target is not None and not 0 <= target <= 1:
            raise BenchError(f"--target is a forget rate between 0 and 1, got {target}")
        if not (0 <= max_utility_drop <= 1 and 0 <= max_degenerate <= 1):
            raise BenchError("--max-utility-drop and --max-degenerate are shares between 0 and 1")
        _quiet_libraries()
        config = RunConfig(task=task, model=model, data=data, seed=seed, hyper=_parse_set(sets), limit=limit,
                           original=original, max_new_tokens=max_new_tokens, output_dir=output_dir,
                           eval_every=eval_every, eval_limit=eval_limit, max_utility_drop=max_utility_drop,
                           max_degenerate=max_degenerate)
        folder = run_compare(config, names, compare_id, seeds=seed_list, target=target, tolerance=tolerance)
    click.echo((folder / "compare.md").read_text())
    failed = [r["method"] for r in load_json(folder / "compare.json")["rows"] if r.get("error")]
    if failed:
        raise BenchError(f"{', '.join(failed)} did not complete (see {folder / 'compare.md'}); the others are compared")


@cli.command(name="list")
def list_entries():
    """List tasks, methods, metrics, generators, judges, attacks and models."""
    from tabulate import tabulate

    from unlearnbench.models import EMBEDDED_MODELS
    from unlearnbench.registry import REGISTRIES

    rows = []
    for kind in ("task", "method", "metric", "generator", "judge", "attack"):
        registry = REGISTRIES[kind]
        for name in registry.names():
            target = registry.target(name)
            origin = "built-in" if target.startswith("unlearnbench.") else "plugin"
            # Methods and tasks say what they do in one line (importing them is cheap; the
            # rest would load judges or engines just to be listed).
            about = getattr(registry.get(name), "description", "") if kind in ("method", "task", "attack") else ""
            rows.append([kind, name, origin, about or target])
    for name, embedded in EMBEDDED_MODELS.items():
        rows.append(["model", name, "embedded", f"{embedded.upstream_id} (GGUF from {embedded.package})"])
    rows.append(["model", "<org/name>", "hub", "any causal LM hub id or local directory"])
    click.echo(tabulate(rows, headers=["kind", "name", "origin", "what / where"], tablefmt="simple"))


@cli.command(name="check-backends")
@click.option("--model", default="smollm2-135m", show_default=True, help="embedded name, hub id or local directory")
@click.option("--task", default="hallucination", show_default=True, help="prompts from this task's unlearned evaluation set")
@click.option("--limit", type=int, default=32, show_default=True, help="number of prompts")
@click.option("--backend", type=click.Choice(["hf", "vllm", "ctranslate2"]), default=None,
              help="hf: HF batched vs HF one at a time; vllm: HF batched vs vLLM; ctranslate2: HF batched vs "
                   "CTranslate2 (its precision from UNLEARNBENCH_CT2_COMPUTE_TYPE, float32 by default)  "
                   "[default: vllm if it can run, else hf]")
@click.option("--max-new-tokens", type=int, help="generation length (task default if unset)")
@click.option("--batch-size", type=int, default=32, show_default=True, help="batch size of the batched HF path")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default=None,
              help="weights of both paths; auto = each generator's own choice (bf16 where the hardware runs it fast)  "
                   "[default: float32 with --backend hf, which isolates the batching logic (bf16 decoding depends on "
                   "batch shape, docs/scaling.md), and with ctranslate2; auto with vllm]")
@click.option("--min-identical", type=float, default=1.0, show_default=True,
              help="fraction of identical outputs needed to pass (exit 1 below it)")
@click.option("--data", default="embedded", show_default=True, help="embedded | hub | PATH")
@click.option("--seed", type=int, default=0, show_default=True, help="the split seed")
@click.option("--output", type=click.Path(dir_okay=False), help="also write the report as JSON to this file")
@click.option("--trust-remote-code", is_flag=True)
def check_backends(model, task, limit, backend, max_new_tokens, batch_size, dtype, min_identical, data, seed, output,
                   trust_remote_code):
    """Check that two generation paths give the same greedy outputs and metrics on the same prompts."""
    from pathlib import Path

    from unlearnbench.check_backends import CheckOptions, check, report_table
    from unlearnbench.records import write_json

    _quiet_libraries()
    if dtype is None:
        from unlearnbench.generation import choose_backend

        dtype = "auto" if (backend or choose_backend("auto")) == "vllm" else "float32"
    options = CheckOptions(model=model, task=task, limit=limit, backend=backend, max_new_tokens=max_new_tokens,
                           batch_size=batch_size, dtype=dtype, min_identical=min_identical, data=data, seed=seed,
                           trust_remote_code=trust_remote_code)
    report = check(options)
    click.echo(report_table(report))
    for example in report["examples"][:2]:
        first, second = (p["name"] for p in report["paths"])
        click.echo(f"  differs on prompt {example['index']}: {example['question']!r}\n"
                   f"    {first}: {example[first]!r}\n    {second}: {example[second]!r}")
    if output:
        write_json(Path(output), report)
        click.echo(f"report: {output}")
    click.echo(report["verdict"])
    if not report["passed"]:
        sys.exit(1)  # the verdict line says why


def _given_options(ctx, besides: str) -> list[str]:
    """The options the user gave (on the command line or in --config), as they are spelled."""
    from click.core import ParameterSource

    return [max(p.opts, key=len) for p in ctx.command.params if p.name != besides and p.name in ctx.params
            and ctx.get_parameter_source(p.name) not in (ParameterSource.DEFAULT, None)]


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    """Entry point: turns every failure into one line and an exit code, never a traceback."""
    debug = os.environ.get("UNLEARNBENCH_DEBUG") == "1"
    # SIGTERM (a scheduler, `kill`) takes the same path as Ctrl-C: the record is saved as interrupted.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        # One line, like every other error; click's own form spreads over four.
        command = exc.ctx.command_path if exc.ctx else "unlearnbench"
        click.echo(f"error: {exc.format_message()} (see '{command} --help')", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("error: interrupted; results measured so far are kept", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence against tracebacks
        if debug:
            raise
        message, code = _one_line(exc)
        click.echo(message, err=True)
        sys.exit(code)


def _one_line(exc: Exception) -> tuple[str, int]:
    if isinstance(exc, BenchError):
        return f"error: {exc}", exc.exit_code
    if isinstance(exc, MemoryError):
        return "error: out of memory; try --lora, a smaller --batch-size or --limit", 1
    if isinstance(exc, OSError):
        return f"error: {exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}", 1
    return f"internal error: {type(exc).__name__}: {exc} (UNLEARNBENCH_DEBUG=1 shows the traceback)", 1

if __name__ == "__main__":
    main()
