"""Speed of the embedded model on this machine: generation tokens/s and training seconds/step.

    python benchmarks/speed.py [--batches 1,8,32,64] [--new-tokens 64] [--steps 4]

Prints two tables. Figures, not assertions: speed goals live here, not in timed tests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("UNLEARNBENCH_QUIET", "1")

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from unlearnbench import models  # noqa: E402
from unlearnbench.batching import Template  # noqa: E402
from unlearnbench.generation import GenerationConfig  # noqa: E402
from unlearnbench.generation.hf import HFGenerator  # noqa: E402
from unlearnbench.methods.unlearn import Unlearn  # noqa: E402
from unlearnbench.tasks.hallucination import HallucinationTask  # noqa: E402
from unlearnbench.training import train  # noqa: E402


def generation_rows(loaded, template, questions, batches, new_tokens):
    rows = []
    for dtype in ("float32", "bfloat16"):
        generator = HFGenerator(batch_size=max(batches), dtype=dtype)
        generator.load_weights(loaded.model, loaded.tokenizer)
        config = GenerationConfig(max_new_tokens=new_tokens)
        generator.batch_size = 1
        generator.generate([template.prompt(questions[0])], GenerationConfig(max_new_tokens=4))  # warm-up
        for batch in batches:
            generator.batch_size = batch
            prompts = [template.prompt(q) for q in questions[:batch]]
            start = time.perf_counter()
            generator.generate(prompts, config)
            seconds = time.perf_counter() - start
            tokens = generator.last_counts["generated_tokens"]
            rows.append([dtype, batch, tokens, f"{seconds:.2f}", f"{tokens / seconds:.1f}"])
    return rows


def training_rows(loaded, template, data, steps):
    rows = []
    for lora in (False, True):
        for precision in ("fp32", "auto"):
            model = models.load(loaded.spec).model
            method = Unlearn(Unlearn.Config.from_overrides({"steps": steps + 1, "lora": lora, "precision": precision}))
            log = []
            train(method, model, loaded.tokenizer, data, template, log.append)
            per_step = [row["seconds"] for row in log[1:]]  # the first step warms up
            rows.append(["LoRA" if lora else "full", precision, method.config.batch_size, method.config.mismatch_k,
                         f"{statistics.median(per_step):.2f}", f"{min(per_step):.2f}-{max(per_step):.2f}"])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,8,32,64")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]

    loaded = models.load(models.DEFAULT_MODEL)
    template = Template(loaded.tokenizer)
    data = HallucinationTask().load("embedded", seed=0)
    questions = [p.question for p in data.train.forget]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    print("\nGeneration (HF backend, greedy, min(new tokens) not forced; EOS stops early)")
    print(tabulate(generation_rows(loaded, template, questions, batches, args.new_tokens),
                   headers=["dtype", "batch", "new tokens", "seconds", "tokens/s"], tablefmt="github"))
    if not args.skip_training:
        print("\nTraining: one `unlearn` step (forget + K mismatch + normal + reference forward)")
        print(tabulate(training_rows(loaded, template, data.train, args.steps),
                       headers=["weights", "precision", "batch", "K", "s/step (median)", "range"], tablefmt="github"))


if __name__ == "__main__":
    main()
