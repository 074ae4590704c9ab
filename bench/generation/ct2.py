"""CTranslate2 backend: the model converted to CTranslate2's format, decoded by its CPU kernels.

Measured against the HF backend in one process (docs/benchmarks-cpu.md#cpu-inference-engines,
batch 64) on a CPU without fast bf16 (AVX2 only), where the HF backend decodes in fp32: in float32,
with the shared prompt prefix given once (below), it generated 1.30x the tokens/s of the HF greedy
loop with every greedy output identical to HF fp32's; in int8, 1.64x with most outputs different.
On the Intel Xeon with AMX, HF decoding in bf16 was faster than either. Its conversion costs
about 10 s per evaluation, which on this suite's evaluation sets takes back what it saves, so it
is chosen by name only, never by `auto`.
float32 is its default; UNLEARNBENCH_CT2_COMPUTE_TYPE=int8 asks for int8.

Same inputs and decoding as hf.py: prompts tokenised by our tokenizer (`add_special_tokens` from
the GenerationConfig), greedy unless `do_sample`, at most `max_new_tokens`, stopping at the
tokenizer's EOS, outputs decoded by our tokenizer from the generated ids. CTranslate2 builds its
model from a folder, so `load_weights` saves the model (HF format, fp32) into a temporary folder,
converts it, loads the converted model into memory and deletes the folder: about 10 s for the
embedded model on a 2-core CPU, mostly the converter's own work (check-backends reports it as
the path's load time). The converter is given a saved copy, not the model: it takes apart the
model it converts.

Install: `pip install 'unlearnbench[cpu]'` (`make` does).
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

from unlearnbench.errors import BenchError, first_line
from unlearnbench.generation import GenerationConfig, Generator, greedy
from unlearnbench.progress import bar

INSTALL_HINT = "pip install 'unlearnbench[cpu]'"
COMPUTE_TYPES = ("float32", "int8", "int8_float32")
# The runner builds generators without arguments; this lets a user choose the precision without code.
ENV_COMPUTE_TYPE = "UNLEARNBENCH_CT2_COMPUTE_TYPE"


def import_ctranslate2():
    """`import ctranslate2`, or a one-line BenchError saying how to install it."""
    try:
        import ctranslate2
    except ImportError as exc:
        raise BenchError(f"--backend ctranslate2 needs the ctranslate2 package ({exc}); {INSTALL_HINT}") from None
    return ctranslate2


class CTranslate2Generator(Generator):
    name = "ctranslate2"

    def __init__(self, batch_size: int = 64, compute_type: str | None = None, threads: int | None = None):
        compute_type = compute_type or os.environ.get(ENV_COMPUTE_TYPE, "float32")
        if compute_type not in COMPUTE_TYPES:
            raise BenchError(f"CTranslate2 compute type must be one of {', '.join(COMPUTE_TYPES)}, got {compute_type!r}")
        self.batch_size, self.compute_type = batch_size, compute_type
        self.threads = threads
        self.engine = None
        self.model = None  # the caller's model (the runner's fluency judge falls back to a copy of it)
        self.tokenizer = None
        self.last_counts = {"prompt_tokens": 0, "generated_tokens": 0}

    def load_weights(self, model, tokenizer) -> None:
        ctranslate2 = import_ctranslate2()
        import torch

        self.model, self.tokenizer = model, tokenizer
        self.engine = None  # the previous model's memory goes before the next one is built
        generation_config = getattr(model, "generation_config", None)
        # What HF sampling and decoding would apply from the model's generation_config (top_k 50
        # is transformers' default when sampling), so that the two backends decode alike.
        self.sampling_topk = getattr(generation_config, "top_k", None) or 50
        self.repetition_penalty = getattr(generation_config, "repetition_penalty", None) or 1.0
        self.no_repeat_ngram_size = getattr(generation_config, "no_repeat_ngram_size", None) or 0
        with tempfile.TemporaryDirectory(prefix="unlearnbench-ct2-") as folder:
            saved, converted = Path(folder) / "hf", Path(folder) / "ct2"
            # The converter reads a full model folder in fp32 on the CPU: a LoRA model (evaluated
            # along training) is merged into a copy, and a bf16 or GPU model is copied, so that the
            # caller's model stays as it is and the weights are converted as trained.
            plain = model
            if hasattr(plain, "merge_and_unload"):
                plain = copy.deepcopy(plain).merge_and_unload()
            parameter = next(plain.parameters())
            if parameter.dtype != torch.float32 or parameter.device.type != "cpu":
                plain = (plain if plain is not model else copy.deepcopy(plain)).to(device="cpu", dtype=torch.float32)
            plain.save_pretrained(saved)
            tokenizer.save_pretrained(saved)
            try:
                # Converted in float32 and quantized at load, as the benchmark measures it.
                ctranslate2.converters.TransformersConverter(str(saved)).convert(str(converted), quantization="float32")
            except Exception as exc:  # noqa: BLE001 - the converter raises several kinds for one cause
                raise BenchError(f"CTranslate2 cannot convert this model ({type(exc).__name__}: {first_line(exc)}); "
                                 "use --backend hf") from None
            # The converted weights are read into memory here, so the folder can go at once.
            self.engine = ctranslate2.Generator(str(converted), device="cpu", compute_type=self.compute_type,
                                                intra_threads=self.threads or torch.get_num_threads())
        self.version = ctranslate2.__version__

    def describe(self) -> dict:
        return {"backend": self.name, "engine": "ctranslate2", "engine_version": getattr(self, "version", None),
                "dtype": self.compute_type, "batch_size": self.batch_size}

    def generate(self, prompts: list[str], config: GenerationConfig, desc: str = "generating") -> list[str]:
        import ctranslate2

        tokenizer = self.tokenizer
        encoded = [tokenizer(p, add_special_tokens=config.add_special_tokens)["input_ids"] for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))  # as hf.py: little padding per batch
        options = dict(max_length=config.max_new_tokens, include_prompt_in_result=False, end_token=tokenizer.eos_token,
                       repetition_penalty=self.repetition_penalty, no_repeat_ngram_size=self.no_repeat_ngram_size)
        if config.do_sample:
            ctranslate2.set_random_seed(config.seed)
            options.update(sampling_topk=self.sampling_topk, sampling_topp=config.top_p,
                           sampling_temperature=config.temperature)
        else:
            options.update(sampling_topk=1)
        # The prefix every prompt shares (the chat template's system turn) goes in once, as
        # CTranslate2's static prompt, whose state it keeps: 1.1-1.4x over CTranslate2 without it at
        # batch 64 on the embedded model, with the same outputs (docs/benchmarks-cpu.md). Each row
        # keeps at least two tokens of its own: CTranslate2 feeds a batch's shortest prompt minus one
        # token at once, and with nothing to feed it would return the longer rows' prompt tokens.
        shared = min(greedy.shared_prefix_length(encoded), min(map(len, encoded), default=0) - 2)
        shared = shared if shared >= greedy.MIN_SHARED_PREFIX else 0
        if shared:
            options.update(static_prompt=tokenizer.convert_ids_to_tokens(encoded[0][:shared]))
        self.last_counts = {"prompt_tokens": sum(map(len, encoded)), "generated_tokens": 0,
                            "shared_prefix_tokens": shared}
        outputs: list[str] = [""] * len(prompts)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for batch in bar(batches, desc=desc, unit="batch"):
            # For the same reason, a prompt of one token (possible without a template, where
            # nothing is shared) is generated on its own rather than beside longer ones.
            lone = [i for i in batch if len(encoded[i]) - shared < 2] if len(batch) > 1 else []
            for rows in [[i for i in batch if i not in lone]] + [[i] for i in lone]:
                if not rows:
                    continue
                starts = [tokenizer.convert_ids_to_tokens(encoded[i][shared:]) for i in rows]
                results = self.engine.generate_batch(starts, max_batch_size=self.batch_size, **options)
                for index, result in zip(rows, results):
                    tokens = result.sequences_ids[0]
                    self.last_counts["generated_tokens"] += len(tokens)
                    outputs[index] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
        return outputs

    def release(self) -> None:
        self.engine = None
