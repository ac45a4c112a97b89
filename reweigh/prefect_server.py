"""One Prefect server for a whole `dvc repro`, instead of one temporary API per stage.

A stage run with no PREFECT_API_URL starts Prefect's temporary local API in its own process and stops it
when it ends: 5-10 s a stage on a 2-core machine, a minute over a pipeline of a dozen stages. `reweigh repro`
(what `make repro` runs) starts `prefect server start` once, runs `dvc repro` with every stage pointed at
it, and stops it. The runs are kept in PREFECT_HOME's database, so `prefect server start` shows them later.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


@contextmanager
def prefect_server(home: Path | None = None, timeout: float = 180) -> Iterator[str]:
    """A `prefect server start` (API only, no UI or background services) on a free loopback port: its API URL.

    `home`: its PREFECT_HOME (database and log); default: the caller's. Stopped on exit, also after errors."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update({"PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(port),
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false", "DO_NOT_TRACK": "1"})
    if home is not None:
        home.mkdir(parents=True, exist_ok=True)
        env["PREFECT_HOME"] = str(home)
    log_path = Path(env.get("PREFECT_HOME") or Path.home() / ".prefect") / "reweigh-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}/api"
    with log_path.open("w") as log:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--no-services"],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while not _healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"prefect server did not start within {timeout:.0f} s; its log, {log_path}:\n"
                                       f"{log_path.read_text()[-3000:]}")
                time.sleep(0.3)
            yield url
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def repro(args: list[str]) -> int:
    """`dvc repro ARGS` with one Prefect server for all its stages (none started when PREFECT_API_URL is set)."""
    command = [str(Path(sys.executable).parent / "dvc"), "repro", *args]
    if os.environ.get("PREFECT_API_URL"):
        return subprocess.call(command)
    with prefect_server() as url:
        return subprocess.call(command, env={**os.environ, "PREFECT_API_URL": url})
