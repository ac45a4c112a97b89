"""What every benchmark section shares: measuring in a fresh child process, machine facts, the data.

Each measured item runs in its own fresh child process, so its peak RSS (`ru_maxrss`, read inside the child)
is its own and nothing leaks from one figure into the next. The parent only orchestrates.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("neg", "pos")


def rss_mb() -> float:
    """Peak resident memory of this process so far, MB (ru_maxrss is KiB on Linux)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def children_rss_mb() -> float:
    """Largest peak RSS among this process's finished (waited-for) descendants, MB."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


_CTX = get_context("forkserver")


def _noop() -> dict:
    return {}


def _child(fn: Callable[..., dict], env: dict[str, str], args: tuple, kwargs: dict) -> dict:
    os.environ.update(env)  # before fn imports anything that reads it (polars, prefect)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1), os.dup2(devnull, 2)  # progress bars and flow logs; errors come back as exceptions
    out = fn(*args, **kwargs)
    out["peak_rss_mb"] = rss_mb()
    return out


def in_child(fn: Callable[..., dict], *args: Any, env: dict[str, str] | None = None, **kwargs: Any) -> dict:
    """Run fn(*args, **kwargs) in a fresh process; its result gains that process's `peak_rss_mb`.

    Children come from a `forkserver`, not `spawn`: Linux carries a process's peak RSS across fork + exec,
    so a child spawned straight from this (data-holding) process would start at this process's peak.
    The fork server is a fresh, small interpreter; what a child forked from it reports is its own.

    `env` is set for the child only (e.g. POLARS_MAX_THREADS, read when polars is first imported).
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=_CTX) as pool:
        return pool.submit(_child, fn, dict(env or {}), args, kwargs).result()


@contextlib.contextmanager
def timer() -> Iterator[dict]:
    box: dict[str, float] = {}
    start = time.perf_counter()
    try:
        yield box
    finally:
        box["s"] = time.perf_counter() - start


def rate(n: float, seconds: float) -> float:
    return round(n / seconds, 1) if seconds > 0 else float("nan")


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def machine(threads: int) -> dict[str, Any]:
    import polars as pl
    import torch

    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "")
    mem_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem_gb = round(kb / 1024 / 1024, 1)
    return {
        "cores": os.cpu_count(),
        "torch_threads": threads or os.cpu_count(),
        "cpu": cpu,
        "memory_gb": mem_gb,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "polars": pl.__version__,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }


def git_commit(root: Path = ROOT) -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def now_utc() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


def python() -> str:
    return sys.executable
