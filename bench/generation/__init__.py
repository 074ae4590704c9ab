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


def vllm_installed() -> bool:
    """Whether `import vllm` can find a module, without importing it (vllm imports take seconds)."""
    import importlib.util
    import sys

    if "vllm" in sys.modules:  # imported already, or a stand-in put there (find_spec raises without a spec)
        return sys.modules["vllm"] is not None
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def choose_backend(name: str) -> str:
    """The generator to use for --backend NAME: `auto` is vllm where it can run (vllm installed and a
    CUDA device visible), else hf; any other name is checked against the registry (did-you-mean error).

    `auto` never takes ctranslate2: converting the model for it costs about 10 s per evaluation,
    which on this suite's evaluation sets cancels what it saves (docs/benchmarks-cpu.md)."""
    from unlearnbench import registry

    if name == "auto":
        import torch

        name = "vllm" if vllm_installed() and torch.cuda.is_available() else "hf"
    registry.get("generator", name)
    return name
