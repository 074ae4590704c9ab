"""Which precision runs fast here. Shared by training (autocast) and generation (weights)."""

from __future__ import annotations

import torch


def fast_low_precision(device: torch.device) -> torch.dtype | None:
    """bf16 where the hardware runs it faster than fp32 (fp16 on older CUDA cards), else None.

    Measured on a 2-core AVX512-BF16 CPU: a full fine-tuning step of the 135M model (16 x 60
    tokens) took 5.0 s in fp32 and 2.2 s under bf16 autocast; decoding at batch 32 ran 1.7x
    faster with bf16 weights. On AMX CPUs this is measured again by benchmarks/speed.py.
    """
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.cpu._is_avx512_bf16_supported():
        return torch.bfloat16
    return None
