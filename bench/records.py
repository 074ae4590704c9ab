"""Run records: atomic writes, validated loads, and the provenance every result carries."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from unlearnbench.errors import BenchError

_UMASK = os.umask(0)
os.umask(_UMASK)

PACKAGES = ("unlearnbench", "torch", "transformers", "datasets", "accelerate", "peft", "tokenizers", "numpy")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            # mkstemp creates the file 0600; give it the permissions a plain open() would.
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise BenchError(f"could not write {path}: {exc.strerror or exc}") from exc


def write_json(path: Path, payload) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


def write_jsonl(path: Path, rows) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows))


def load_json(path: Path, required: tuple[str, ...] = ()) -> dict:
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BenchError(f"{path} does not exist") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BenchError(f"{path} is corrupted or half-written: {exc}") from exc
    if not isinstance(payload, dict):
        raise BenchError(f"{path} is not a run record: expected a JSON object")
    missing = [k for k in required if k not in payload]
    if missing:
        raise BenchError(f"{path} is not a complete record: missing {', '.join(missing)}")
    return payload


def read_jsonl_records(path: Path, required: tuple[str, ...] = ()) -> list[dict]:
    """Rows of a JSONL record this suite wrote; a half-written or corrupted file is named."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise BenchError(f"{path} is corrupted: not UTF-8 text (byte {exc.start})") from exc
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BenchError(f"{path}:{number} is corrupted or half-written: {exc.msg}") from exc
        if not isinstance(row, dict) or any(k not in row for k in required):
            raise BenchError(f"{path}:{number} is not a valid record (needs {', '.join(required)})")
        rows.append(row)
    return rows


def safe_name(name: str) -> str:
    """A run name that cannot escape the output root (no separators, no dot-dot)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    if not cleaned:
        raise BenchError(f"run name {name!r} has no usable characters")
    return cleaned[:120]


def package_versions(packages) -> dict:
    """Each installed distribution's version, None for one that is not installed."""
    versions = {}
    for package in packages:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def environment() -> dict:
    import torch

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(PACKAGES),
        "git_commit": git_commit(),
        "hardware": {
            **cpu_description(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        },
    }


# CPU features that change numerics or speed: AMX and AVX512-BF16 run bf16 matmuls in hardware
# (autocast is on where they exist), and AVX-512 against AVX2 changes the order of fp32 sums.
CPU_FEATURES = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def cpu_description(cpuinfo: str | None = None) -> dict:
    """The CPU model and its numerics-relevant features, read from /proc/cpuinfo where there is one.

    The same seed gives different results on different CPU kinds, so a record names its kind.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {"cpu": fields.get("model name") or platform.processor() or platform.machine(),
            "cpu_features": [name for flag, name in CPU_FEATURES if flag in flags]}


def git_commit() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
