"""A real Prefect server and a served retrain deployment on a throwaway project, shared by the tests.

`served_retrain` (session scope) starts, once per test session:
  a `prefect server start` on a free loopback port (temp PREFECT_HOME), a small project whose dataset is a
  CSV at data/raw/reviews.csv, untracked (the table adapter, with a split column), a temp DVC remote, its baseline `dvc repro` +
  `dvc push` + git commit, then `reweigh serve`, and five runs of the deployment started through the REST
  API, each waited for:
    1. `new_data`:  100 rows appended to the CSV: the challenger is judged and promoted (v0.0.2; the
       committed baseline is registered first, v0.0.1);
    2. `override`:  custom parameters (tokenize.vocab_size=20, pull, promote=always): promoted (v0.0.3);
       then `reweigh rollback` back to v0.0.2, without training;
    3. `nothing_new`: no change: ends in seconds without a challenger (the rolled-back workspace is whole);
    4. `corrupted`: one bad batch, 600 rows (100 of them test) that copy old negative reviews with "Re: "
       before them and the label pos: the drift checks warn (label shift, label conflicts), the challenger,
       judged against v0.0.2, is worse on the reference set (the champion's test split): not promoted;
    5. `blocked`: the same batch with retrain.drift.block [label_conflicts]: stopped before training
       (then the bad rows are taken out of the CSV again).
  Each promotion is committed and registered as a GTO version by the flow itself. What each run left is recorded in
  `Served.runs` (the flow run, and for `corrupted` a snapshot of workspace and remote before it). The
  e2e, browser, remote and worker tests read what it left. Everything it started is stopped (serve
  first, then the server) when the session ends, also after failures.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from conftest import ROOT, Project, make_project, review

# Where tests leave what a person should look at (screenshots, timings); build/ is git-ignored.
OUTPUT = Path(os.environ.get("REWEIGH_TEST_OUTPUT") or ROOT / "build" / "test-output")
DEPLOYMENT = "e2e-scheduled"
CRON = "0 3 * * *"
RUN_PARAMETERS = {"overrides": {"tokenize.vocab_size": 20}, "pull": True, "promote": "always"}
# the synthetic reviews are easy and few: a challenger on more data may differ by a few test rows
NEW_DATA_PARAMETERS = {"tolerance": 0.05}
BLOCK_PARAMETERS = {"overrides": {"retrain.drift.block": ["label_conflicts"]}}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
BIN = Path(sys.executable).parent
RAW_DATA = "data/raw/reviews.csv"


@dataclass
class Served:
    project: Project
    remote: Path
    api: str
    ui: str
    logs: Path
    processes: list[subprocess.Popen] = field(default_factory=list)
    data: Path = Path()
    baseline_lock: str = ""
    baseline_metrics: dict = field(default_factory=dict)
    deployment_id: str = ""
    flow_run: dict = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    snapshots: dict[str, dict] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    model_service: "ModelService | None" = None

    def get(self, path: str) -> Any:
        for attempt in range(6):
            response = httpx.get(f"{self.api}{path}", timeout=30)
            if response.status_code != 503:
                break
            time.sleep(2 + 2 * attempt)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict) -> Any:
        for attempt in range(6):  # a loaded 2-core machine: the server's SQLite can time out (503); retry
            response = httpx.post(f"{self.api}{path}", json=body, timeout=30)
            if response.status_code != 503:
                break
            time.sleep(2 + 2 * attempt)
        response.raise_for_status()
        return response.json()

    def run_logs(self, flow_run_id: str, pages: int = 10) -> str:
        """The run's log lines in order (the API serves at most 200 a request)."""
        rows: list[dict] = []
        for page in range(pages):
            batch = self.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "TIMESTAMP_ASC",
                                               "limit": 200, "offset": 200 * page})
            rows += batch
            if len(batch) < 200:
                break
        return "\n".join(r["message"] for r in rows)

    def artifacts(self, key: str) -> list[dict]:
        return self.post("/artifacts/filter", {"artifacts": {"key": {"any_": [key]}}})

    def artifact_of(self, run: dict, key: str = "retrain-report") -> str:
        found = [a for a in self.artifacts(key) if a["flow_run_id"] == run["id"]]
        assert len(found) == 1, f"run {run['name']} has {len(found)} {key} artifacts"
        return found[0]["data"]

    def run_deployment(self, parameters: dict, what: str, timeout: float = 600) -> dict:
        """Start a run of the served deployment through the API and wait until it ends."""
        run = self.post(f"/deployments/{self.deployment_id}/create_flow_run", {"parameters": parameters})

        def finished() -> dict | None:
            current = self.get(f"/flow_runs/{run['id']}")
            return current if current["state_type"] in TERMINAL else None

        return wait_until(finished, timeout, f"the served retrain run ({what}) to finish",
                          lambda: self.process_logs() + "\n--- run logs\n" + self.run_logs(run["id"]))

    def process_logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.logs.glob("*.log")))


class ModelService:
    """`reweigh serve-model` in the project, asked by a client every half second all through the retrains:
    which version answered each request, and any request that failed."""

    def __init__(self, project: Project, log: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.proc = start([sys.executable, "-m", "reweigh.cli", "serve-model", "--model", "gru_attention", "--no-access-log",
                           "--port", self.url.rsplit(":", 1)[1]], project.path, project.env, log)
        self.log, self.answers, self.failures = log, [], []
        self.stopping = threading.Event()
        wait_until(lambda: httpx.get(f"{self.url}/health", timeout=5).status_code == 200, 120, "reweigh serve-model",
                   lambda: log.read_text())
        self.client = threading.Thread(target=self._ask, daemon=True)
        self.client.start()

    def _ask(self) -> None:
        while not self.stopping.wait(0.5):
            try:
                response = httpx.post(f"{self.url}/predict", json={"text": "a great film, I loved it"}, timeout=30)
                if response.status_code == 200:
                    self.answers.append(response.json()["version"])
                else:
                    self.failures.append(f"{response.status_code} {response.text[:300]}")
            except httpx.HTTPError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")

    def model(self) -> dict:
        return httpx.get(f"{self.url}/model", timeout=30).json()

    def settled(self, version: str) -> dict:
        """/model once the service serves `version` (it reloads a second or two after a promotion)."""
        return wait_until(lambda: (m := self.model())["version"] == version and m, 60,
                          f"the model service to serve {version}", lambda: self.log.read_text()[-3000:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float, what: str, diagnose: Callable[[], str] = lambda: "") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` s saying what never happened."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, OSError) as exc:
            last_error = exc
        time.sleep(1)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})\n{diagnose()}")


def start(args: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """A background process in its own process group (so stopping it stops its children too)."""
    handle = open(log, "w")
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGINT, then SIGTERM, then SIGKILL to the process group this harness started; bounded waits."""
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    try:  # children left in the group (uvicorn, a flow run's subprocess)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def reviews(n: int, split: str, seed: int) -> list[tuple[str, str, str]]:
    """n synthetic reviews (half neg, half pos) for the CSV."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = ("neg", "pos")[i % 2]
        text = review(rng, label)
        rows.append((text, label, split))
    return rows


def flipped_copies(path: Path, n: int, label: str = "neg", to: str = "pos", prefix: str = "Re: ") -> list[tuple[str, str, str]]:
    """n rows (1 in 6 in test, the rest train) that copy the CSV's `label` rows (cycling) with `prefix` and the
    label `to`: one batch hit by a labelling bug. Its test rows favour a challenger that learned the bad labels."""
    with open(path, newline="") as fh:
        texts = [row["text"] for row in csv.DictReader(fh) if row["label"] == label]
    return [(f"{prefix}{texts[i % len(texts)]}", to, "test" if i % 6 == 5 else "train") for i in range(n)]  # 1 in 6 in test


def experiments(project: Project) -> list[str]:
    """The DVC experiments the project has, by name (`dvc exp list` orders them by commit, not stably)."""
    return sorted(project.dvc("exp", "list", "--all-commits", "--name-only").stdout.split())


def write_rows(path: Path, rows: list[tuple[str, str, str]], mode: str = "a") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode, newline="") as fh:
        writer = csv.writer(fh)
        if mode == "w":
            writer.writerow(["text", "label", "split"])
        writer.writerows(rows)


def snapshot(folder: Path, skip: tuple[str, ...] = (".git", ".dvc/tmp", ".dvc/cache")) -> dict[str, str]:
    """{relative path: md5} of every file under `folder` (the byte-for-byte state of a workspace or remote)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not any(rel == s or rel.startswith(s + "/") for s in skip) and "__pycache__" not in rel:
            out[rel] = hashlib.md5(path.read_bytes()).hexdigest()
    return out


def _start_served(tmp: Path, served_box: list[Served]) -> Served:
    started = time.monotonic()
    # one neural model (the one the service serves) and one baseline: every retrain runs the whole pipeline
    # (and the judge its best neural model), so each stage less is one process start less per run
    # its own server below, so not the test process's shared one (idle, it still costs a start and CPU)
    project = make_project(tmp, {"retrain": {"deployment": DEPLOYMENT, "cron": CRON},
                                 "train": {"models": ["gru_attention"]}, "baseline": {"models": ["tfidf_lr"]}},
                           prefect_server=False)
    # docs/adapters.md's layout: the file under data/raw/, named relative to the project, and not in git
    # (ignored here, so that committing the workspace never adds it): the challenger's temp copy needs it.
    data = project.path / RAW_DATA
    write_rows(data, reviews(160, "train", 1) + reviews(60, "test", 2), mode="w")
    project.replace_section("dataset", {"name": "table", "val_fraction": 0.1, "limit": 0, "train_limit": 0,
                                        "options": {"path": RAW_DATA, "split_column": "split"}})
    (project.path / ".gitignore").write_text(f"/{Path(RAW_DATA).parent}/\n")
    project.run("git", "add", ".gitignore")
    project.run("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "dataset: a CSV under data/raw/")
    remote = tmp / "dvc-remote"
    project.dvc("remote", "modify", "--local", "local", "url", str(remote))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    project.env.update({
        "PREFECT_API_URL": api,
        "PREFECT_UI_API_URL": api,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_LOGGING_LEVEL": "INFO",
        # `reweigh serve` looks for runs to start every 2 s, not Prefect's default 10 (five runs started here)
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    })
    logs = tmp / "logs"
    logs.mkdir()
    served = Served(project, remote, api, f"http://127.0.0.1:{port}", logs, data=data)
    served_box.append(served)  # from here on, the finalizer stops whatever was started

    served.processes.append(start([str(BIN / "prefect"), "server", "start"], project.path, project.env, logs / "server.log"))
    wait_until(lambda: httpx.get(f"{api}/health", timeout=5).status_code == 200, 180, "the Prefect server", served.process_logs)
    served.timings["server_start_s"] = time.monotonic() - started

    t = time.monotonic()
    project.dvc("repro", timeout=600)
    project.dvc("push")
    project.run("git", "add", "-A")
    project.run("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "baseline: dvc repro")
    served.baseline_lock = (project.path / "dvc.lock").read_text()
    served.baseline_metrics = json.loads(project.dvc("metrics", "show", "--json").stdout)
    served.timings["baseline_repro_s"] = time.monotonic() - t

    served.model_service = ModelService(project, logs / "serve-model.log")  # the champion, served while retrains run
    served.processes.append(served.model_service.proc)
    served.snapshots["service_before"] = served.model_service.model()
    served.processes.append(start([sys.executable, "-m", "reweigh.cli", "serve"], project.path, project.env, logs / "serve.log"))

    def deployment() -> dict | None:
        if served.processes[-1].poll() is not None:
            pytest.fail(f"`reweigh serve` exited {served.processes[-1].returncode}\n{served.process_logs()}")
        found = served.post("/deployments/filter", {"deployments": {"name": {"any_": [DEPLOYMENT]}}})
        return found[0] if found else None

    served.deployment_id = wait_until(deployment, 120, f"deployment {DEPLOYMENT} to be served", served.process_logs)["id"]

    def timed(key: str, parameters: dict) -> dict:
        t = time.monotonic()
        served.runs[key] = served.run_deployment(parameters, key)
        served.timings[f"{key}_wall_s"] = time.monotonic() - t
        served.timings[f"{key}_run_s"] = served.runs[key].get("total_run_time") or 0.0
        OUTPUT.mkdir(parents=True, exist_ok=True)
        for artifact in served.artifacts("retrain-report"):  # each run's report, for a person to read
            if artifact["flow_run_id"] == served.runs[key]["id"]:
                (OUTPUT / f"retrain-{key}.md").write_text(artifact["data"])
        return served.runs[key]

    write_rows(data, reviews(80, "train", 3) + reviews(20, "test", 4))
    timed("new_data", NEW_DATA_PARAMETERS)
    served.snapshots["after_new_data"] = {"workspace": snapshot(project.path, (".git", ".dvc/tmp", ".dvc/cache", RAW_DATA)),
                                          "versions": project.run(sys.executable, "-m", "gto.cli", "show", "text-classifier", "--json").stdout,
                                          "head": project.run("git", "rev-parse", "HEAD").stdout.strip(),
                                          "service": served.model_service.settled("v0.0.2")}
    # custom parameters, forced promotion (a tiny vocabulary)
    served.flow_run = timed("override", RUN_PARAMETERS)
    served.snapshots["after_override"] = {"lock": (project.path / "dvc.lock").read_text(),
                                          "params": (project.path / "params.yaml").read_text(),
                                          "service": served.model_service.settled("v0.0.3")}
    # the tiny vocabulary was a mistake: back to the version the new rows made, without training
    champion = (".git", ".dvc/tmp", ".dvc/cache", RAW_DATA)  # everything but the data file
    served.snapshots["rollback"] = {"cli": project.run(sys.executable, "-m", "reweigh.cli", "rollback").stdout,
                                    "workspace": snapshot(project.path, champion),
                                    "versions": project.run(sys.executable, "-m", "gto.cli", "show", "text-classifier").stdout,
                                    "service": served.model_service.settled("v0.0.2")}
    # the rolled-back workspace is whole: nothing new, nothing to rerun
    served.snapshots["before_nothing_new"] = {"exps": experiments(project)}
    timed("nothing_new", {})
    served.snapshots["after_nothing_new"] = {"exps": experiments(project)}
    # a bad batch, judged against the version rolled back to
    served.snapshots["before_corrupted"] = {"workspace": snapshot(project.path, champion), "remote": snapshot(remote)}
    clean = data.read_bytes()
    write_rows(data, flipped_copies(data, 600))
    timed("corrupted", {})
    served.snapshots["after_corrupted"] = {"workspace": snapshot(project.path, champion), "remote": snapshot(remote),
                                           "exps": experiments(project)}
    timed("blocked", BLOCK_PARAMETERS)
    served.snapshots["after_blocked"] = {"workspace": snapshot(project.path, champion), "remote": snapshot(remote),
                                         "exps": experiments(project)}
    data.write_bytes(clean)  # the bad rows are taken out
    served.model_service.stopping.set()
    served.model_service.client.join(30)
    served.snapshots["service_after"] = {"model": served.model_service.model(), "answers": served.model_service.answers,
                                         "failures": served.model_service.failures}
    project.run("git", "add", "-A")  # anything else the runs left, accepted into git as a user would
    project.run("git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "after the retrains")

    served.timings["harness_total_s"] = time.monotonic() - started
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "retrain-timing.json").write_text(json.dumps(served.timings, indent=2))
    return served


_STATE: dict[str, Any] = {}


@pytest.fixture(scope="session")
def served_retrain(request, tmp_path_factory) -> Served:
    """One server + served deployment + finished run per session, whichever test module asks first."""
    if "error" in _STATE:
        pytest.fail(f"the served retrain harness failed earlier: {_STATE['error']}")
    if "served" not in _STATE:
        box: list[Served] = []

        def cleanup() -> None:
            for served in box:
                for proc in reversed(served.processes):  # serve before the server, or the server hangs
                    stop(proc)

        request.config.add_cleanup(cleanup)
        try:
            _STATE["served"] = _start_served(tmp_path_factory.mktemp("retrain-e2e"), box)
        except BaseException as exc:
            _STATE["error"] = f"{type(exc).__name__}: {str(exc)[:2000]}"
            raise
    return _STATE["served"]
