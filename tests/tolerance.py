"""Tolerances for fp32 results checked against fp64 hand computations, portable across CPU kinds.

A sum of fp32 terms is exact only up to rounding that grows with the size of the terms, not of
the result: the NPO log-ratio is a difference of two log-likelihoods of about -100 each, so a
relative tolerance on the small difference depends on how the CPU orders its accumulations
(AVX-512 with AMX on Intel, AVX2 on AMD). The tolerance here is absolute and scales with the
magnitudes that went into the value, so it holds on both and still fails on a wrong formula.
"""

import torch

FP32_EPS = torch.finfo(torch.float32).eps  # 1.19e-7

# Each per-token log-softmax rounds at about log2(vocab) ≈ 16 ulps of its own size (a reduction
# over 49,152 logits); 64 leaves room for the matmul's accumulation order as well.
ULPS = 64


# A loss whose terms all have one sign (a mean of per-token cross-entropies) has its own value as
# its magnitude, so `rel=1e-5` there is the same rule at about 84 ulps; a sum of terms of both
# signs (GA's minus plus a KL) or a difference (a log-ratio) needs the explicit form below.


def fp32_tolerance(*magnitudes: float) -> float:
    """Absolute tolerance for an fp32 value built from terms whose absolute sizes add up to the
    given magnitudes (for a loss: the sum of |per-token loss| over the tokens it averages)."""
    return ULPS * FP32_EPS * sum(abs(m) for m in magnitudes)
