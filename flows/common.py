"""What every stage shares: paths, params, the labels file, and the `python -m flows.<stage>` entry point."""
from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
from adapters.base import AdapterError
from adapters.download import DownloadError
from adapters.expectations import ValidationFailed
from reweigh.params import Params, ParamsError, load_params

DATA = Path("data")
ARTIFACTS = Path("artifacts")
REPORTS = Path("reports")
PARAMS_FILE = Path(os.environ.get("REWEIGH_PARAMS", "params.yaml"))
DATASET_FILE = DATA / "dataset.json"

# Errors a user can act on: printed as they are, without a traceback, with a non-zero exit.
# DownloadError reaches here only once the ingest task's retries are spent.
USER_ERRORS = (AdapterError, ValidationFailed, ParamsError, FileNotFoundError, DownloadError)


def cache_dir() -> Path:
    """Where downloads are cached: REWEIGH_CACHE, else ~/.cache/reweigh."""
    return Path(os.environ.get("REWEIGH_CACHE") or Path.home() / ".cache" / "reweigh")


def params() -> Params:
    return load_params(PARAMS_FILE)


def read_dataset_info() -> dict[str, Any]:
    if not DATASET_FILE.exists():
        raise FileNotFoundError(f"{DATASET_FILE} is missing: run the ingest stage first (dvc repro ingest)")
    return json.loads(DATASET_FILE.read_text())


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed run with its traceback; for a user error the message alone is the answer."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], USER_ERRORS):
            record.exc_info, record.exc_text = None, None
        return True


def run_stage(flow: Callable[[], Any], name: str) -> None:
    """Run one stage's flow as a command: a clear message and exit code 1 on a user error."""
    started = time.perf_counter()
    for logger in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(logger).addFilter(_NoTracebackForUserErrors())
    try:
        params()  # a bad params.yaml fails here, before the flow (and Prefect's server) starts
        flow()
    except USER_ERRORS as exc:
        print(f"\nreweigh {name}: {exc}", file=sys.stderr)
        sys.exit(1)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    print(f"reweigh {name}: done in {time.perf_counter() - started:.1f} s, peak RSS {peak_mib:,.0f} MiB", file=sys.stderr)


def stop_temporary_prefect_servers() -> None:
    """Stop the temporary local Prefect API that flow calls in this process started.

    Prefect stops it at interpreter exit, but a process that ends without running `atexit` handlers (a
    multiprocessing worker) would leave it running for good, and pytest closes its output streams before
    `atexit`, so the stop would log into a closed stream.

    The flow runs' logs and events go to that API from background workers: they are sent first. Stopped
    with logs still queued, the process then spent 70 s at exit retrying to send them to a gone server."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    if not SubprocessASGIServer._instances:
        return
    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=10)
    for server in list(SubprocessASGIServer._instances.values()):
        server.stop()
