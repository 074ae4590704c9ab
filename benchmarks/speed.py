"""Speed of the embedded model on this machine: generation tokens/s and training seconds/step.

    python benchmarks/speed.py [--batches 1,8,32,64] [--new-tokens 64] [--steps 4] [--engines] [--static-cache]
                               [--skip-generation] [--skip-training] [--methods unlearn,ga,...]
                               [--precisions fp32,auto] [--profile METHOD]

Prints two tables; --engines replaces the first with CPU engines beside every HF path, and
--static-cache and each --profile precision add one. Figures, not assertions: speed goals live here, not
in timed tests.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("UNLEARNBENCH_QUIET", "1")

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from unlearnbench import models  # noqa: E402
from unlearnbench.batching import Template, pad_left  # noqa: E402
from unlearnbench.errors import BenchError  # noqa: E402
from unlearnbench.generation import GenerationConfig  # noqa: E402
from unlearnbench.generation.hf import HFGenerator  # noqa: E402
from unlearnbench.tasks.hallucination import HallucinationTask  # noqa: E402


def timed(generator, prompts, config):
    start = time.perf_counter()
    outputs = generator.generate(prompts, config)
    return outputs, time.perf_counter() - start, generator.last_counts["generated_tokens"]


def timed_each(generators: dict, prompts, config) -> dict:
    """Each generator on the same prompts, all of them in one batch: name -> (outputs, seconds, new tokens)."""
    measured = {}
    for name, generator in generators.items():
        generator.batch_size = len(prompts)
        measured[name] = timed(generator, prompts, config)
    return measured


def generation_rows(loaded, template, questions, batches, new_tokens):
    """Plain greedy `generate` against the backend's greedy loop on the same prompts in the same
    process: tokens/s of each, the speed-up, and how many outputs are identical."""
    rows = []
    config = GenerationConfig(max_new_tokens=new_tokens)
    for dtype in ("float32", "bfloat16"):
        engines = {name: HFGenerator(batch_size=max(batches), dtype=dtype, decoding=name) for name in ("generate", "loop")}
        for generator in engines.values():
            generator.load_weights(loaded.model, loaded.tokenizer)
            generator.batch_size = 1
            generator.generate([template.prompt(questions[0])], GenerationConfig(max_new_tokens=4))  # warm-up
        for batch in batches:
            measured = timed_each(engines, [template.prompt(q) for q in questions[:batch]], config)
            (plain, plain_s, plain_n), (fast, fast_s, fast_n) = measured["generate"], measured["loop"]
            same = sum(a == b for a, b in zip(plain, fast))
            rows.append([dtype, batch, plain_n, f"{plain_n / plain_s:.1f}", fast_n, f"{fast_n / fast_s:.1f}",
                         f"{(fast_n / fast_s) / (plain_n / plain_s):.2f}x", f"{same}/{batch}"])
    return rows


def static_cache_rows(loaded, template, questions, batch, new_tokens):
    """Tried for the HF backend and not used there: `generate` with transformers' static
    KV cache, without and with `torch.compile` of the decode step (transformers compiles it only on
    accelerators unless `CompileConfig._compile_all_devices` is set). bf16, one batch, against plain
    `generate` on the same padded batch; the first call (compilation included) is timed apart."""
    from transformers import CompileConfig

    tokenizer = loaded.tokenizer
    model = copy.deepcopy(loaded.model).to(torch.bfloat16).eval()
    rows = [tokenizer(template.prompt(q), add_special_tokens=False)["input_ids"] for q in questions[:batch]]
    input_ids, attention_mask = pad_left(rows, tokenizer.pad_token_id)
    width = input_ids.shape[1]
    compiled = CompileConfig(dynamic=False, mode="default")
    compiled._compile_all_devices = True  # transformers' flag "to compile on e.g. CPU"; not an __init__ argument
    variants = {"plain generate": {"disable_compile": True},
                "static cache": {"cache_implementation": "static", "disable_compile": True},
                "static cache + torch.compile": {"cache_implementation": "static", "compile_config": compiled}}
    results, table = {}, []
    for name, options in variants.items():
        times = []
        for _ in range(2):
            start = time.perf_counter()
            with torch.no_grad():
                generated = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=new_tokens,
                                           do_sample=False, temperature=None, top_p=None, top_k=None,
                                           pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                           **options)
            times.append(time.perf_counter() - start)
        texts = tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
        tokens = int((generated[:, width:] != tokenizer.pad_token_id).sum())
        results[name] = texts
        same = sum(a == b for a, b in zip(results["plain generate"], texts))
        table.append([name, batch, f"{times[0]:.1f}", tokens, f"{tokens / times[1]:.1f}", f"{same}/{batch}"])
    return table


def engine_rows(loaded, template, questions, batches, new_tokens):
    """CPU inference engines against HF, in one process, at each batch size: tokens/s, the ratio to
    HF bf16 `generate` (the issue's baseline) and to the HF backend's own choice here (the greedy
    loop, bf16 where the CPU runs it fast, else fp32), and how many greedy outputs are identical to
    HF fp32 `generate`'s. The CTranslate2 rows are the suite's backend (bench/generation/ct2.py),
    its conversion done before timing."""
    from unlearnbench.generation.hf import preferred_dtype

    config = GenerationConfig(max_new_tokens=new_tokens)
    own = f"hf loop {str(preferred_dtype(torch.device('cpu'))).removeprefix('torch.')}"
    generators = {f"hf {decoding} {dtype}": HFGenerator(batch_size=1, dtype=dtype, decoding=decoding)
                  for dtype in ("float32", "bfloat16") for decoding in ("generate", "loop")}
    try:
        from unlearnbench.generation.ct2 import COMPUTE_TYPES, CTranslate2Generator, import_ctranslate2

        version = import_ctranslate2().__version__
        generators.update({f"ctranslate2 {version} {compute_type}": CTranslate2Generator(compute_type=compute_type)
                           for compute_type in COMPUTE_TYPES})
    except BenchError:
        version = None
    for generator in generators.values():
        generator.load_weights(loaded.model, loaded.tokenizer)
        generator.batch_size = 1
        generator.generate([template.prompt(q) for q in questions[:2]], GenerationConfig(max_new_tokens=4))  # warm-up
    rows = []
    for batch in batches:
        measured = timed_each(generators, [template.prompt(q) for q in questions[:batch]], config)
        rate = {name: tokens / seconds for name, (_, seconds, tokens) in measured.items()}
        reference = measured["hf generate float32"][0]
        for name, (outputs, _, tokens) in measured.items():
            same = sum(a == b for a, b in zip(reference, outputs))
            rows.append([name, batch, tokens, f"{rate[name]:.1f}", f"{rate[name] / rate['hf generate bfloat16']:.2f}x",
                         f"{rate[name] / rate[own]:.2f}x", f"{same}/{batch}"])
    if not version:
        rows.append(["ctranslate2 (not installed)", "", "", "", "", "", ""])
    return rows, own


def matmul_gflops(dtype: torch.dtype, rows: int, inner: int = 576, outer: int = 1536, repeats: int = 20) -> float:
    """The rate of one (rows x inner) @ (inner x outer) product on this machine, now: the ceiling a
    training step's matrix products (hidden 576, MLP 1536 in the embedded model) can reach."""
    a, b = torch.randn(rows, inner, dtype=dtype), torch.randn(inner, outer, dtype=dtype)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * rows * inner * outer * repeats / (time.perf_counter() - start) / 1e9


def training_rows(loaded, template, data, steps, methods=("unlearn", "ga", "npo"), precisions=("fp32", "auto")):
    """Seconds per step and achieved GFLOP/s (the suite's own FLOP count) for each method, full
    weights, fp32 and `auto` precision, against the matmul rate at the step's row count."""
    from unlearnbench import registry
    from unlearnbench.compute import training_flops
    from unlearnbench.hardware import fast_low_precision

    rows = []
    for name in methods:
        for precision in precisions:
            model = models.load(loaded.spec).model
            method_cls = registry.get("method", name)
            method = method_cls(method_cls.Config.from_overrides({"steps": steps + 1, "precision": precision}))
            log = []
            result = method.fit(model, loaded.tokenizer, data, template, log.append)  # fit: dpo_refusal adds its answers
            per_step = statistics.median(row["seconds"] for row in log[1:])  # the first step warms up
            flops = training_flops(loaded.num_parameters, result.trained_tokens, result.reference_tokens) / (steps + 1)
            tokens = result.trained_tokens // (steps + 1)
            dtype = torch.float32 if precision == "fp32" else fast_low_precision(torch.device("cpu")) or torch.float32
            ceiling = matmul_gflops(dtype, tokens)
            achieved = flops / per_step / 1e9
            rows.append([name, precision, str(dtype).removeprefix("torch."), tokens, f"{flops / 1e9:.0f}", f"{per_step:.2f}",
                         f"{achieved:.0f}", f"{ceiling:.0f}", f"{achieved / ceiling:.0%}"])
    return rows


def profile_rows(loaded, template, data, method_name, precision, steps=2, top=15):
    """Where a training step's time goes: torch.profiler over steps 3 and 4 of a fit of METHOD (the
    first two warm up, and set up the optimizer), the operators with the most self CPU time per step."""
    from torch.profiler import ProfilerActivity, profile, schedule

    from unlearnbench import registry

    method_cls = registry.get("method", method_name)
    method = method_cls(method_cls.Config.from_overrides({"steps": 2 + steps, "precision": precision}))
    with profile(activities=[ProfilerActivity.CPU], schedule=schedule(wait=1, warmup=1, active=steps)) as profiled:
        method.fit(models.load(loaded.spec).model, loaded.tokenizer, data, template, lambda row: profiled.step())
    events = sorted(profiled.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    return [[e.key, e.count // steps, f"{e.self_cpu_time_total / steps / 1e6:.3f}", f"{e.self_cpu_time_total / total:.1%}"]
            for e in events[:top]], total / steps / 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--methods", default="unlearn,ga,npo,graddiff,simnpo,rmu,dpo_refusal,wga",
                        help="gradient methods to time (comma-separated)")
    parser.add_argument("--precisions", default="fp32,auto", help="training precisions to time")
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--profile", metavar="METHOD",
                        help="also profile two training steps of METHOD at each --precisions (torch.profiler)")
    parser.add_argument("--engines", action="store_true",
                        help="compare CPU inference engines (CTranslate2 where installed) with the HF paths instead")
    parser.add_argument("--static-cache", action="store_true",
                        help="also time generate with a static KV cache, with and without torch.compile (minutes)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    loaded = models.load(models.DEFAULT_MODEL)
    template = Template(loaded.tokenizer)
    data = HallucinationTask().load("embedded", seed=0)
    questions = [p.question for p in data.train.forget]
    from unlearnbench.records import cpu_description

    cpu = cpu_description()
    print(f"{cpu['cpu']} ({', '.join(cpu['cpu_features']) or 'no AVX2'}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} cores")
    if not args.skip_generation and not args.engines:  # --engines times the same HF paths in its own table
        print(f"\nGeneration (HF backend, greedy, at most {args.new_tokens} new tokens, EOS stops a row): plain "
              "`generate` against the greedy loop (bench/generation/greedy.py), same prompts, same process")
        print(tabulate(generation_rows(loaded, template, questions, batches, args.new_tokens),
                       headers=["dtype", "batch", "new tokens", "generate tok/s", "loop new tokens", "loop tok/s",
                                "speed-up", "identical"], tablefmt="github", disable_numparse=True))
    if args.engines:
        rows, own = engine_rows(loaded, template, questions, batches, args.new_tokens)
        print(f"\nCPU engines against HF (greedy, at most {args.new_tokens} new tokens, one process): tokens/s as a "
              f"ratio to HF bf16 `generate` and to the HF backend's own path here ({own}); 'identical' compares "
              "with HF fp32 `generate`'s outputs")
        print(tabulate(rows, headers=["engine", "batch", "new tokens", "tok/s", "vs bf16 generate", f"vs {own}",
                                      "identical"], tablefmt="github", disable_numparse=True))
    if args.static_cache:
        print(f"\nTried, not used: `generate` with a static KV cache, with and without torch.compile (bf16, batch "
              f"{max(batches)}; 'identical' compares with plain `generate`'s outputs)")
        print(tabulate(static_cache_rows(loaded, template, questions, max(batches), args.new_tokens),
                       headers=["decoding", "batch", "first call s (compile included)", "new tokens", "tok/s (second call)",
                                "identical"], tablefmt="github", disable_numparse=True))
    if args.profile:
        for precision in args.precisions.split(","):
            rows, seconds = profile_rows(loaded, template, data.train, args.profile, precision)
            print(f"\nProfile: {args.profile}, precision {precision}, {seconds:.2f} s of operator self time per step "
                  "(steps 3 and 4 of a fit; top operators)")
            print(tabulate(rows, headers=["operator", "calls/step", "self s/step", "share"], tablefmt="github",
                           disable_numparse=True))
    if not args.skip_training:
        print("\nTraining: one step of each method (full weights; GFLOP/s by the suite's FLOP count, against a "
              "matmul of the step's row count timed in this run)")
        print(tabulate(training_rows(loaded, template, data.train, args.steps, args.methods.split(","),
                                     args.precisions.split(",")),
                       headers=["method", "precision", "matmul dtype", "tokens/step", "GFLOP/step", "s/step (median)", "GFLOP/s",
                                "matmul GFLOP/s", "share"], tablefmt="github", disable_numparse=True))


if __name__ == "__main__":
    main()
