"""What every stage shares: paths, params, the labels file, and the `python -m flows.<stage>` entry point."""
from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
from adapters.base import AdapterError
from adapters.expectations import ValidationFailed
from reweigh.params import Params, ParamsError, load_params

DATA = Path("data")
ARTIFACTS = Path("artifacts")
REPORTS = Path("reports")
PARAMS_FILE = Path(os.environ.get("REWEIGH_PARAMS", "params.yaml"))
DATASET_FILE = DATA / "dataset.json"

# Errors a user can act on: printed as they are, without a traceback, with a non-zero exit.
USER_ERRORS = (AdapterError, ValidationFailed, ParamsError, FileNotFoundError)


def cache_dir() -> Path:
    """Where downloads are cached: REWEIGH_CACHE, else ~/.cache/reweigh."""
    return Path(os.environ.get("REWEIGH_CACHE") or Path.home() / ".cache" / "reweigh")


def params() -> Params:
    return load_params(PARAMS_FILE)


def read_dataset_info() -> dict[str, Any]:
    if not DATASET_FILE.exists():
        raise FileNotFoundError(f"{DATASET_FILE} is missing: run the ingest stage first (dvc repro ingest)")
    return json.loads(DATASET_FILE.read_text())


def run_stage(flow: Callable[[], Any], name: str) -> None:
    """Run one stage's flow as a command: a clear message and exit code 1 on a user error."""
    started = time.perf_counter()
    try:
        flow()
    except USER_ERRORS as exc:
        print(f"\nreweigh {name}: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"reweigh {name}: done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
