"""Across-seed summaries: the mean with a two-sided 95% Student-t confidence interval.

    mean ± t_{0.975, n−1} · s / √n,   s the sample standard deviation (ddof = 1)

With one seed there is no interval; a table then shows the value alone and says n = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Summary:
    mean: float | None  # None: no seed measured a value ("NM" in the paper's tables)
    half_width: float | None  # None: fewer than two values
    n: int

    def format(self, scale: float = 1.0, digits: int = 3) -> str:
        if self.mean is None:
            return "NM"
        text = f"{self.mean * scale:.{digits}f}"
        return text if self.half_width is None else f"{text} ± {self.half_width * scale:.{digits}f}"


def summarize(values, confidence: float = 0.95) -> Summary:
    """The mean and CI half-width of the finite values (None and NaN, e.g. NM fluency, are left out)."""
    from scipy.stats import t

    kept = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(kept)
    if n == 0:
        return Summary(None, None, 0)
    mean = math.fsum(kept) / n
    if n == 1:
        return Summary(mean, None, 1)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in kept) / (n - 1))
    return Summary(mean, float(t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n), n)
