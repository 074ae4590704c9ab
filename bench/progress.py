"""Progress reporting: tqdm bars on stderr, silenced with UNLEARNBENCH_QUIET=1."""

from __future__ import annotations

import contextlib
import os
import sys
import time


def quiet() -> bool:
    return os.environ.get("UNLEARNBENCH_QUIET") == "1"


def bar(iterable=None, **kwargs):
    from tqdm.auto import tqdm

    # Off a terminal (CI logs, pipes) every redraw becomes a line: redraw rarely there.
    kwargs.setdefault("mininterval", 0.1 if sys.stderr.isatty() else 15.0)
    return tqdm(iterable, disable=quiet(), dynamic_ncols=True, file=sys.stderr, **kwargs)


def say(message: str) -> None:
    if not quiet():
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def status(message: str):
    start = time.perf_counter()
    say(f"{message} ...")
    yield
    say(f"{message}: done in {time.perf_counter() - start:.1f}s")
