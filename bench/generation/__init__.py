"""Generators turn prompts into completions. Batching, padding and dtype are theirs to decide.

Contract (the same for every backend):
    generator.load_weights(model, tokenizer)
    generator.generate(prompts, GenerationConfig) -> list[str]   # same order as prompts
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from unlearnbench.errors import BenchError


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 32
    do_sample: bool = False  # greedy by default: deterministic and backend-comparable
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    # Whether tokenizing a prompt adds the tokenizer's special tokens (BOS): False for chat-templated
    # prompts, which already contain them; True for plain templates, matching training.
    add_special_tokens: bool = False

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise BenchError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise BenchError("sampling needs temperature > 0 and 0 < top_p <= 1")

    def to_dict(self) -> dict:
        return asdict(self)


class Generator:
    name = "base"

    def load_weights(self, model, tokenizer) -> None:
        raise NotImplementedError

    def generate(self, prompts: list[str], config: GenerationConfig) -> list[str]:
        raise NotImplementedError

    def describe(self) -> dict:
        """What produced the outputs, for the run record."""
        return {"backend": self.name}


BACKENDS = ("hf", "vllm", "ctranslate2", "auto")


def installed(module: str) -> bool:
    """Whether `import MODULE` can find a module, without importing it (vllm imports take seconds)."""
    import importlib.util
    import sys

    if module in sys.modules:  # imported already, or a stand-in put there (find_spec raises without a spec)
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def vllm_installed() -> bool:
    return installed("vllm")


def choose_backend(name: str) -> str:
    """The generator to use for --backend NAME. `auto` is vllm where it can run (vllm installed and
    a CUDA device visible); on a CPU without fast bf16, ctranslate2 where it is installed (measured
    faster there; docs/benchmarks-cpu.md); else hf, saying in one line when ctranslate2 would have
    been taken. Any other name is checked against the registry (did-you-mean error)."""
    from unlearnbench import registry

    if name == "auto":
        import torch

        from unlearnbench.hardware import fast_low_precision

        if vllm_installed() and torch.cuda.is_available():
            name = "vllm"
        elif torch.cuda.is_available() or fast_low_precision(torch.device("cpu")):
            name = "hf"
        elif installed("ctranslate2"):
            name = "ctranslate2"
        else:
            from unlearnbench.generation.ct2 import INSTALL_HINT
            from unlearnbench.progress import say

            say(f"--backend auto: ctranslate2 is not installed, so generation uses hf ({INSTALL_HINT})")
            name = "hf"
    registry.get("generator", name)
    return name
