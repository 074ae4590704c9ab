"""`quantize`: evaluate the unlearned model in lower precision. Does rounding undo the forgetting?

Unlearning moves weights by little; rounding them to a coarse grid can land them where the
original's weights round to (Zhang et al. 2024, arXiv 2410.16454). Forms:

    int8  torch's dynamic quantization of every nn.Linear: int8 weights (one scale per tensor),
          activations quantized on the fly; the closest maintained CPU API to a deployed int8 model
    int4  round-to-nearest 4-bit weights, symmetric, one scale per group of INT4_GROUP inputs:
              w ← s · clamp(round(w / s), −8, 7),  s = max|w_group| / 7
          applied to every nn.Linear except the output head, computed in fp32 (simulated)
    bf16  every weight cast to bfloat16 (the precision most GPUs serve in)

The forget rate of each form, with its recovery, is recorded; generation uses the HF backend
(the quantized modules are torch modules).
"""

from __future__ import annotations

import copy
import warnings

from unlearnbench.attacks import Attack

FORMS = ("int8", "int4", "bf16")
INT4_GROUP = 128


def fake_quantize_int4(weight, group: int = INT4_GROUP):
    """The int4 round-trip of one weight matrix (rows × inputs), groups along the inputs.

    Written here rather than with a library kernel: torchao's int4 layouts need CUDA, and the
    attack is about where the rounded weights land, which this computes exactly."""
    import torch

    rows, inputs = weight.shape
    padded = -inputs % group
    w = torch.nn.functional.pad(weight.float(), (0, padded)).reshape(rows, -1, group)
    scale = (w.abs().amax(-1, keepdim=True) / 7).clamp_min(1e-12)
    quantized = (w / scale).round().clamp(-8, 7) * scale
    return quantized.reshape(rows, -1)[:, :inputs].to(weight.dtype)


def quantized(model, form: str):
    """A copy of `model` in `form`; the model itself is left as it is."""
    import torch

    model = copy.deepcopy(model).float().eval()
    if form == "bf16":
        return model.to(torch.bfloat16)
    if form == "int4":
        head = model.get_output_embeddings()
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.Linear) and module is not head:
                    module.weight.copy_(fake_quantize_int4(module.weight))
        return model
    if form == "int8":
        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # torch marks its quantized tensors deprecated in favour of torchao
            warnings.simplefilter("ignore")
            return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    raise ValueError(f"unknown quantization form {form!r}")


class Quantize(Attack):
    name = "quantize"
    description = "the unlearned model with int8 (dynamic), int4 (round-to-nearest) and bf16 weights"

    def units(self, context) -> list[str]:
        return list(FORMS)

    def run_unit(self, unit: str, context):
        from unlearnbench.generation.hf import HFGenerator

        generator = HFGenerator(dtype="bfloat16" if unit == "bf16" else "float32")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            generator.load_weights(quantized(context.unlearned, unit), context.template.tokenizer)
            result, rows = context.forget_rate(None, f"quantize {unit}", generator=generator)
        return {**result, "generator_dtype": str(generator.dtype).removeprefix("torch.")}, rows
