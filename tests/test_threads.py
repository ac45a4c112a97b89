"""Every torch CPU thread flushes denormals when training runs with train.threads > 1.

torch.set_flush_denormal sets the calling thread only; a worker thread copies the setting when it starts.
`models.train_loop` sets it at import, before torch starts its workers, and setup_torch warns when a worker started
earlier (such a worker computed the killed 2-thread run of 2026-11-26 at threads-1 speed). Fresh
processes, since the workers of this one have long started.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import warnings, torch
{before}
import models.train_loop
{after}
from models.train_loop import all_threads_flush_denormals, setup_torch
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    setup_torch("cpu", 2)
print(torch.get_num_threads(), all_threads_flush_denormals(), len(caught))
"""


START_WORKERS = "torch.set_num_threads(2); (torch.ones(1 << 20) * 2).sum()"  # a parallel op starts the workers


def _run(before: str = "", after: str = "") -> list[str]:
    code = CHECK.format(before=before, after=after)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_workers_flush_denormals_when_the_train_loop_is_imported_first():
    """As in flows/train: import models.train_loop, build the model (torch starts its workers), then setup_torch."""
    threads, flushing, warned = _run(after=START_WORKERS)
    if threads == "1":
        pytest.skip("one core: setup_torch caps train.threads at 1, so there is no worker thread to check")
    assert (flushing, warned) == ("True", "0")


def test_setup_torch_warns_when_a_worker_started_before_the_train_loop_was_imported():
    threads, flushing, warned = _run(before=START_WORKERS)
    if threads == "1":
        pytest.skip("one core: setup_torch caps train.threads at 1, so there is no worker thread to check")
    assert (flushing, warned) == ("False", "1")
