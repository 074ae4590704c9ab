"""Compute accounting per phase, in hardware-independent and hardware-dependent forms.

Hardware-independent: tokens processed and estimated FLOPs, with the usual transformer
approximations (N = parameters; Kaplan et al. 2020):
    forward           2·N FLOPs per token
    forward+backward  6·N FLOPs per token when all weights train,
                      4·N when only adapters train (LoRA: no weight gradients for frozen N)
Hardware-dependent: wall seconds, CPU seconds (all threads of this process), GPU seconds
(wall time while a CUDA device was in use), and the peak resident memory (and peak CUDA memory).
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import asdict, dataclass

import psutil


def forward_flops(parameters: int, tokens: int) -> float:
    return 2.0 * parameters * tokens


def training_flops(parameters: int, trained_tokens: int, reference_tokens: int = 0, lora: bool = False) -> float:
    per_token = 4.0 if lora else 6.0
    return per_token * parameters * trained_tokens + forward_flops(parameters, reference_tokens)


@dataclass
class PhaseCompute:
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    gpu_seconds: float = 0.0
    peak_rss_mb: float = 0.0
    peak_cuda_mb: float = 0.0
    tokens: int = 0
    flops: float = 0.0

    def to_dict(self) -> dict:
        return {k: (round(v, 3) if isinstance(v, float) and k != "flops" else v) for k, v in asdict(self).items()}


class _PeakRSS(threading.Thread):
    """Samples this process's resident memory; ru_maxrss only gives the peak since start."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.process = psutil.Process()
        self.peak = self.process.memory_info().rss
        self.interval = interval
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.wait(self.interval):
            self.peak = max(self.peak, self.process.memory_info().rss)


def release_memory() -> None:
    """Return freed heap to the OS between phases.

    glibc keeps freed blocks (an optimizer's state, a discarded model copy) mapped, so without
    this every phase would inherit the previous phase's peak as resident memory.
    """
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@contextlib.contextmanager
def measure(phases: dict, name: str):
    """`with measure(compute, "train") as c: ...; c.tokens = ...` fills compute[name]."""
    import torch

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    release_memory()
    record = PhaseCompute()
    sampler = _PeakRSS()
    sampler.start()
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield record
    finally:
        if cuda:
            torch.cuda.synchronize()
            record.peak_cuda_mb = torch.cuda.max_memory_allocated() / 2**20
        record.wall_seconds = time.perf_counter() - wall
        record.cpu_seconds = time.process_time() - cpu
        record.gpu_seconds = record.wall_seconds * torch.cuda.device_count() if cuda else 0.0
        sampler.stopped.set()
        sampler.join()
        record.peak_rss_mb = max(sampler.peak, sampler.process.memory_info().rss) / 2**20
        # A resumed run measures a phase again: its compute adds to what the first attempt spent.
        phases[name] = combine(phases[name], record) if name in phases else record


def combine(*parts: PhaseCompute) -> PhaseCompute:
    """Times, tokens and FLOPs add up; memory peaks do not."""
    out = PhaseCompute()
    for p in parts:
        out.wall_seconds += p.wall_seconds
        out.cpu_seconds += p.cpu_seconds
        out.gpu_seconds += p.gpu_seconds
        out.tokens += p.tokens
        out.flops += p.flops
        out.peak_rss_mb = max(out.peak_rss_mb, p.peak_rss_mb)
        out.peak_cuda_mb = max(out.peak_cuda_mb, p.peak_cuda_mb)
    return out


def total(phases: dict) -> PhaseCompute:
    # "train:sft" and the like are parts of "train" (a multi-stage method, ppo), already in it.
    return combine(*(c for name, c in phases.items() if ":" not in name))


def from_dicts(recorded: dict) -> dict:
    """PhaseCompute per phase from a run record's "compute" (its "total" is recomputed, not read)."""
    known = set(PhaseCompute.__dataclass_fields__)
    return {name: PhaseCompute(**{k: v for k, v in values.items() if k in known})
            for name, values in recorded.items() if name != "total" and isinstance(values, dict)}
