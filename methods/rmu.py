"""Representation misdirection for unlearning, RMU (Li et al. 2024, "The WMDP Benchmark",
arXiv 2403.03218): scramble the forget answers' hidden states at one layer, keep the normal
answers' hidden states where the original had them, and train only the MLPs just below.

    L = mean_{forget answer tokens} ‖h_ℓ(x) − c·u‖²  +  α · mean_{normal answer tokens} ‖h_ℓ(x) − h_ℓ^o(x)‖²

h_ℓ are the hidden states after layer ℓ, h^o the frozen original's, u a fixed random unit
vector (uniform entries, normalised, seeded), c the steering coefficient, α the retain weight.
Only the MLP weights of layers ℓ−2 … ℓ train. The WMDP paper steers layer 7 of Zephyr-7B's 32
(c 6.5, α 1200); the default here takes the same depth by layer count, ℓ = round(7/32 · L),
layer 7 of the embedded model's 30, and sizes c to that model's hidden states there, whose
mean norm on the forget answers is 108–124 (16 answers of each task): c = 100, so c·u is as
large as what it replaces. c and α are untuned starting points for the tuning protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from unlearnbench.batching import IGNORE
from unlearnbench.errors import BenchError
from unlearnbench.methods import Method, TrainConfig, check_non_negative, check_positive

WMDP_DEPTH = 7 / 32  # layer 7 of Zephyr-7B's 32


@dataclass
class RMUConfig(TrainConfig):
    layer: int | None = None  # ℓ counted from 0; None: round(7/32 · number of layers)
    steering: float = 100.0  # c
    retain_weight: float = 100.0  # α
    lr: float = 5e-5  # WMDP's
    shown: ClassVar[tuple[str, ...] | None] = ("layer", "steering", "retain_weight")
    search_space: ClassVar[dict] = {"lr": ("log", 1e-5, 5e-4), "steering": ("log", 5.0, 500.0),
                                    "retain_weight": ("log", 1.0, 2000.0), "layer": ("int", 2, 20)}

    def validate(self) -> None:
        super().validate()
        check_positive("steering", self.steering)
        check_non_negative("retain_weight", self.retain_weight)
        if self.layer is not None and self.layer < 0:
            raise BenchError(f"layer must be a layer index (0 or more), got {self.layer}")


def decoder_layers(model) -> torch.nn.ModuleList:
    """The transformer blocks, found by name so that wrappers (LoRA, the packed forward) don't matter."""
    return next(module for name, module in model.named_modules()
                if name.endswith("layers") and isinstance(module, torch.nn.ModuleList))


def answer_states(outputs, batch, layer: int) -> torch.Tensor:
    """Hidden states after `layer` (hidden_states[0] is the embeddings) at the answer tokens."""
    return outputs.hidden_states[layer + 1][batch.labels != IGNORE].float()


class RMU(Method):
    name = "rmu"
    description = "steer a layer's hidden states on forget answers to a random vector; MLPs only (WMDP)"
    Config = RMUConfig
    uses = ("forget", "normal")
    needs_reference = True  # the original's hidden states on normal answers

    def layer_of(self, model) -> int:
        count = len(decoder_layers(model))
        layer = round(WMDP_DEPTH * count) if self.config.layer is None else self.config.layer
        if layer >= count:
            raise BenchError(f"rmu layer {layer} does not exist: the model has layers 0 to {count - 1}")
        return layer

    def trainable_parameters(self, model) -> list:
        layer = self.layer_of(model)
        return [p for block in decoder_layers(model)[max(0, layer - 2):layer + 1] for p in block.mlp.parameters()]

    def loss(self, model, step, reference) -> dict:
        c, forget, normal = self.config, step.forget, step.normal
        layer = self.layer_of(model)
        states = answer_states(model(input_ids=forget.input_ids, attention_mask=forget.attention_mask,
                                     output_hidden_states=True), forget, layer)
        u = torch.rand(states.shape[-1], generator=torch.Generator().manual_seed(c.seed)).to(states)
        steer = ((states - c.steering * u / u.norm()) ** 2).mean()
        kept = answer_states(model(input_ids=normal.input_ids, attention_mask=normal.attention_mask,
                                   output_hidden_states=True), normal, layer)
        original = answer_states(reference.outputs(normal, output_hidden_states=True), normal, layer)
        retain = ((kept - original) ** 2).mean()
        return {"total": steer + c.retain_weight * retain, "steer": steer, "retain": retain}
