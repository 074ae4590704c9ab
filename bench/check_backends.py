"""`unlearnbench check-backends`: do two generation paths give the same outputs on the same prompts?

    --backend hf            HF batched (the normal HFGenerator, --batch-size) vs HF one prompt at a time
    --backend vllm          HF batched vs vLLM
    --backend ctranslate2   HF batched vs CTranslate2 (the share of its greedy outputs identical to HF fp32's)

Both paths decode greedily, in the same dtype (CTranslate2 in its own compute type), the first
--limit prompts of the task's `unlearned` evaluation set, built with the task's template exactly
as the runner builds them. Each path's outputs are scored with the task's metrics and judges
through evaluation.Evaluator, as a run scores them. Reported: the fraction of prompts with identical outputs, the mean token agreement (see
`token_agreement`), and each metric per path.

Low precision: batched greedy decoding in bf16/fp16 is not bit-reproducible across batch shapes
(padding and batch size change the order of floating-point sums, so near-tied tokens can flip);
in fp32 the HF paths agree exactly. `--dtype float32` separates the batching logic from that.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

from unlearnbench.errors import BenchError

SPLIT = "unlearned"


def token_agreement(a: list[int], b: list[int]) -> float:
    """Fraction of positions where two outputs' token ids agree, over the longer length:

        agreement(a, b) = |{ i < min(|a|, |b|) : a_i = b_i }| / max(|a|, |b|)     (1.0 if both are empty)

    Positions past the end of the shorter output count as disagreements, so an output that stops
    early against one that goes on is penalised by the length it misses.
    """
    longer = max(len(a), len(b))
    if longer == 0:
        return 1.0
    return sum(x == y for x, y in zip(a, b)) / longer


def compare_outputs(first: list[str], second: list[str], tokenizer) -> dict:
    """Identical-output fraction and mean token agreement (outputs re-tokenised without special tokens)."""
    if len(first) != len(second):
        raise ValueError(f"{len(first)} outputs against {len(second)}")
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    agreement = [token_agreement(ids(a), ids(b)) for a, b in zip(first, second)]
    differing = [i for i, (a, b) in enumerate(zip(first, second)) if a != b]
    n = len(first)
    return {"prompts": n, "identical": n - len(differing), "identical_fraction": (n - len(differing)) / n if n else 1.0,
            "mean_token_agreement": sum(agreement) / n if n else 1.0, "token_agreement": agreement,
            "differing_prompts": differing}


@dataclass
class CheckOptions:
    model: str = "smollm2-135m"
    task: str = "hallucination"
    limit: int = 32
    backend: str | None = None  # hf | vllm | ctranslate2; None: vllm where it can run, else hf
    max_new_tokens: int | None = None  # the task's default if None
    batch_size: int = 32
    dtype: str = "auto"  # auto: each generator's own choice (bf16 where the hardware runs it fast)
    data: str = "embedded"
    seed: int = 0
    template: str = "auto"
    min_identical: float = 1.0
    trust_remote_code: bool = False


def _paths(options: CheckOptions, device: str | None):
    from unlearnbench.generation.hf import HFGenerator

    batched = (f"hf batched ({options.batch_size})", HFGenerator(batch_size=options.batch_size, dtype=options.dtype,
                                                                 device=device))
    if options.backend == "hf":
        return [batched, ("hf one at a time", HFGenerator(batch_size=1, dtype=options.dtype, device=device))]
    if options.backend == "ctranslate2":
        from unlearnbench.generation.ct2 import CTranslate2Generator

        engine = CTranslate2Generator(batch_size=options.batch_size)
        return [batched, (f"ctranslate2 {engine.compute_type}", engine)]
    from unlearnbench.generation.vllm import VLLMGenerator

    return [batched, ("vllm", VLLMGenerator(dtype=options.dtype, trust_remote_code=options.trust_remote_code))]


def check(options: CheckOptions) -> dict:
    """Generate with both paths and compare; returns the report (see module docstring)."""
    from unlearnbench.generation import choose_backend

    if options.backend is None:
        options.backend = choose_backend("auto")
    if options.backend not in ("hf", "vllm", "ctranslate2"):
        raise BenchError(f"--backend must be hf, vllm or ctranslate2, got {options.backend!r}")
    if options.limit < 1:
        raise BenchError(f"--limit must be at least 1, got {options.limit}")
    if options.batch_size < 1:
        raise BenchError(f"--batch-size must be at least 1, got {options.batch_size}")
    if options.max_new_tokens is not None and options.max_new_tokens < 1:
        raise BenchError(f"--max-new-tokens must be at least 1, got {options.max_new_tokens}")
    if not 0 <= options.min_identical <= 1:
        raise BenchError(f"--min-identical must be between 0 and 1, got {options.min_identical}")
    import torch

    if options.backend == "vllm":
        from unlearnbench.generation.vllm import INSTALL_HINT, import_vllm

        import_vllm()  # one line and a non-zero exit when it is missing, before anything slow
        if not torch.cuda.is_available():
            raise BenchError(f"check-backends --backend vllm needs a CUDA GPU (none is visible); {INSTALL_HINT}")
    if options.backend == "ctranslate2":
        from unlearnbench.generation.ct2 import import_ctranslate2

        import_ctranslate2()

    from unlearnbench import models, registry
    from unlearnbench.batching import Template
    from unlearnbench.metrics.judges import LanguageModelJudge
    from unlearnbench.config import RunConfig
    from unlearnbench.evaluation import Evaluator, make_judges

    task = registry.get("task", options.task)()
    models.check(options.model)
    data = task.load(options.data, options.seed, eval_limit=options.limit)
    eval_set = data.eval_sets[SPLIT]
    # Nothing to compare an "original" with here: similarity_to_original is left out, as in `eval`.
    eval_set.metrics = tuple(m for m in eval_set.metrics if m != "similarity_to_original")
    data.eval_sets = {SPLIT: eval_set}
    loaded = models.load(options.model, trust_remote_code=options.trust_remote_code)
    template = Template(loaded.tokenizer, options.template if options.template != "auto" else (task.template or "auto"))
    config = RunConfig(task=options.task, model=options.model, data=options.data, seed=options.seed,
                       trust_remote_code=options.trust_remote_code)
    judges = make_judges(config, data)
    judges["lm"] = LanguageModelJudge(loaded.model, template, f"nll under {options.model}")
    max_new_tokens = options.max_new_tokens or task.max_new_tokens
    evaluator = Evaluator(data, template, judges, "hf", max_new_tokens, options.seed)
    evaluator.check_prompt_lengths(loaded.tokenizer, getattr(loaded.model.config, "max_position_embeddings", None))

    # HF on the card vLLM uses, where there is one; CTranslate2 is compared on the CPU.
    device = "cuda" if torch.cuda.is_available() and options.backend != "ctranslate2" else None
    paths, outputs = [], []
    for label, generator in _paths(options, device):
        start = time.perf_counter()
        generator.load_weights(loaded.model, loaded.tokenizer)
        load_seconds = time.perf_counter() - start
        start = time.perf_counter()
        results, rows = evaluator.evaluate(generator, label, splits=(SPLIT,))
        seconds = time.perf_counter() - start
        outputs.append([row["output"] for row in rows])
        scores = results[SPLIT]
        paths.append({"name": label, "generator": generator.describe(), "seconds": round(seconds, 2),
                      "load_seconds": round(load_seconds, 2),
                      "generated_tokens": getattr(generator, "last_counts", {}).get("generated_tokens"),
                      "metrics": {name: result.value for name, result in scores.items()},
                      "judges": {name: result.judge_name for name, result in scores.items()}})
        if hasattr(generator, "release"):
            generator.release()
        del generator
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the HF copy's memory goes back before vLLM sizes its cache

    comparison = compare_outputs(outputs[0], outputs[1], loaded.tokenizer)
    passed = comparison["identical_fraction"] >= options.min_identical
    dtypes = sorted({str(p["generator"].get("dtype")) for p in paths})
    verdict = (f"verdict: {'PASS' if passed else 'FAIL'}: {comparison['identical']}/{comparison['prompts']} outputs "
               f"identical ({comparison['identical_fraction']:.1%}; at least {options.min_identical:.0%} required), "
               f"mean token agreement {comparison['mean_token_agreement']:.3f}, dtype {'/'.join(dtypes)}")
    if not passed and any(d in ("bfloat16", "float16") for d in dtypes):
        verdict += "; low-precision decoding depends on batch shape: --dtype float32 checks the batching alone"
    questions = eval_set.questions
    examples = [{"index": i, "question": questions[i], paths[0]["name"]: outputs[0][i], paths[1]["name"]: outputs[1][i]}
                for i in comparison["differing_prompts"][:5]]
    return {
        "backend": options.backend, "model": options.model, "task": options.task, "data": options.data,
        "split": SPLIT, "seed": options.seed, "max_new_tokens": max_new_tokens, "dtype": options.dtype,
        "template": template.kind, "decoding": "greedy", "paths": paths,
        **{k: v for k, v in comparison.items() if k != "token_agreement"},
        "token_agreement_formula": "|{i < min(|a|,|b|): a_i = b_i}| / max(|a|,|b|), averaged over prompts",
        "min_identical": options.min_identical, "passed": passed, "verdict": verdict, "examples": examples,
    }


def report_table(report: dict) -> str:
    """The metric table per path, then the agreement figures (the verdict line is printed after it)."""
    from tabulate import tabulate

    first, second = report["paths"]
    fmt = lambda v: "NM" if v is None else f"{v:.3f}"  # noqa: E731
    rows = []
    for name, value in first["metrics"].items():
        other = second["metrics"].get(name)
        rows.append([name, fmt(value), fmt(other), "" if value is None or other is None else f"{other - value:+.3f}"])
    rows.append(["generated tokens", str(first["generated_tokens"]), str(second["generated_tokens"]), ""])
    rows.append(["seconds", f"{first['seconds']:.1f}", f"{second['seconds']:.1f}", ""])
    rate = lambda p: "" if not p["generated_tokens"] or not p["seconds"] else f"{p['generated_tokens'] / p['seconds']:.1f}"  # noqa: E731
    rows.append(["generated tokens/s (scoring included)", rate(first), rate(second), ""])
    load = lambda p: f"{p['load_seconds']:.1f}" if "load_seconds" in p else ""  # noqa: E731
    rows.append(["load seconds (a conversion included)", load(first), load(second), ""])
    table = tabulate(rows, headers=[f"{report['task']}/{report['split']}, {report['prompts']} prompts",
                                    first["name"], second["name"], "difference"],
                     tablefmt="simple_outline", disable_numparse=True)
    return (f"{table}\n"
            f"identical outputs: {report['identical']}/{report['prompts']} ({report['identical_fraction']:.1%})\n"
            f"mean token agreement: {report['mean_token_agreement']:.3f} "
            f"(per prompt: {report['token_agreement_formula']})")
