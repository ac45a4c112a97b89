"""The machine a stage ran on, recorded beside its outputs, so two runs that differ can be told apart.

Float kernels are chosen by CPU: torch dispatches its own kernels by instruction set (AVX2, AVX512) and MKL
picks code paths by CPU model, so the same params and seed give byte-identical outputs on one machine but
can give other weights, and other last digits of a metric, on another (docs/design.md, "Reproducible where").
Two runs that differ by these fields differ by machine, not by code.
"""
from __future__ import annotations

import os
import platform
import re
from functools import cache
from pathlib import Path
from typing import Any


@cache
def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (Linux), else what the platform module knows."""
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        found = None
    return found.group(1).strip() if found else (platform.processor() or platform.machine())


def describe() -> dict[str, Any]:
    """CPU, cores, the threads torch computes with, and the float libraries and instruction set it uses."""
    import numpy as np
    import torch

    blas = re.search(r"BLAS_INFO=(\w+)", torch.__config__.show())
    numpy_blas = np.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_blas": blas.group(1) if blas else "unknown",
        "numpy_blas": f"{numpy_blas.get('name', 'unknown')} {numpy_blas.get('version', '')}".strip(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.machine()}",
    }


def one_line(machine: dict[str, Any]) -> str:
    """`Intel Xeon, 2 cores, torch 2.13.0 on 2 threads (AVX512, mkl)` for the report and logs."""
    gpu = f", GPU {machine['cuda']}" if machine.get("cuda") else ""
    return (f"{machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} on {machine['torch_threads']} threads "
            f"({machine['torch_cpu_capability']}, {machine['torch_blas']}), numpy BLAS {machine['numpy_blas']}{gpu}")
