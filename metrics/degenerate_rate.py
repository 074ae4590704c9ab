"""Degenerate rate: the share of outputs that are broken text rather than language.

    degenerate(o) = empty(o) or not_language(o) or scattered(o) or unbroken(o) or looping(o)

    empty(o)        = o has fewer than MIN_CHARACTERS letters and digits
    not_language(o) = letters and digits / non-space characters < MIN_WORD_SHARE
    scattered(o)    = whitespace / characters > MAX_SPACE_SHARE  (stray words among runs of spaces)
    unbroken(o)     = o has a run of more than MAX_RUN characters without a space
    looping(o)      = |o| ≥ MIN_BYTES and zlib(o) / |o| < MIN_COMPRESSED_SHARE
                      or |words(o)| ≥ MIN_WORDS and |distinct words(o)| / |words(o)| < MIN_DISTINCT_WORDS
    rate = (1/n) Σ degenerate(o_i)

|o| and zlib(o) are UTF-8 byte lengths (zlib level 9); words are lower-cased \\w+ runs. Text
that loops compresses far better than prose: a sentence said once does not, and the same
phrase said ten times does. The thresholds were set on the development part of the labelled
set and are measured on its validation part (docs/judges.md); no judge model is involved, so
the measure is the same for every model and machine.
"""

from __future__ import annotations

import re
import zlib

from unlearnbench.metrics import Metric, MetricResult, mean

MIN_CHARACTERS = 2
MIN_WORD_SHARE = 0.6
MAX_SPACE_SHARE = 0.3
MAX_RUN = 40
MIN_BYTES = 60
MIN_COMPRESSED_SHARE = 0.45
MIN_WORDS = 8
MIN_DISTINCT_WORDS = 0.4

WORD = re.compile(r"\w+")
ALPHANUMERIC = re.compile(r"[^\W_]")


def degenerate(text: str) -> bool:
    alphanumeric = len(ALPHANUMERIC.findall(text))
    visible = len("".join(text.split()))
    if alphanumeric < MIN_CHARACTERS or alphanumeric / visible < MIN_WORD_SHARE:
        return True
    if (len(text) - visible) / len(text) > MAX_SPACE_SHARE:
        return True
    if max(len(run) for run in text.split()) > MAX_RUN:
        return True
    data = text.encode("utf-8")
    if len(data) >= MIN_BYTES and len(zlib.compress(data, 9)) / len(data) < MIN_COMPRESSED_SHARE:
        return True
    words = WORD.findall(text.lower())
    return len(words) >= MIN_WORDS and len(set(words)) / len(words) < MIN_DISTINCT_WORDS


class DegenerateRate(Metric):
    name = "degenerate_rate"
    higher_is_better = False

    def compute(self, outputs, refs=None, judge=None) -> MetricResult:
        flags = [float(degenerate(o)) for o in outputs]
        return MetricResult(mean(flags), flags, "text statistics (no judge): characters, spacing, runs, zlib ratio, distinct words",
                            self.higher_is_better)
