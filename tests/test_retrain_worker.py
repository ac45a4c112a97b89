"""The scale-out path is Prefect's own: the same retrain deployment, registered with a process work pool
(`reweigh deploy --pool`), run by `prefect worker start` (a Docker or Kubernetes pool swaps in the same way;
docs/retraining.md). Uses the harness's server and project; the served run has finished by then.
"""
from __future__ import annotations

import sys
import time

import pytest

from retrain_harness import BIN, Served, served_retrain, start, stop, wait_until  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
POOL = "e2e-process"
NAME = "e2e-pool"


def test_deployment_runs_through_a_process_work_pool_and_worker(served_retrain: Served) -> None:
    project = served_retrain.project
    env = dict(project.env, PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="5")
    project.run(str(BIN / "prefect"), "work-pool", "create", POOL, "--type", "process", "--overwrite")
    deployed = project.run(sys.executable, "-m", "reweigh.cli", "deploy", "--pool", POOL, "--name", NAME)
    assert f"deployed retrain/{NAME} to work pool '{POOL}'" in deployed.stdout

    deployment = served_retrain.post("/deployments/filter", {"deployments": {"name": {"any_": [NAME]}}})[0]
    assert deployment["work_pool_name"] == POOL
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [served_retrain.get(
        f"/deployments/{served_retrain.deployment_id}")["schedules"][0]["schedule"]["cron"]]

    worker = start([str(BIN / "prefect"), "worker", "start", "--pool", POOL], project.path, env, served_retrain.logs / "worker.log")
    served_retrain.processes.append(worker)  # the session finalizer stops it too, before serve and the server
    try:
        started = time.monotonic()
        run = served_retrain.post(f"/deployments/{deployment['id']}/create_flow_run", {"parameters": {"push": False}})

        def finished() -> dict | None:
            current = served_retrain.get(f"/flow_runs/{run['id']}")
            return current if current["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None

        done = wait_until(finished, 300, "the work-pool run to finish",
                          lambda: served_retrain.process_logs() + served_retrain.run_logs(run["id"]))
        served_retrain.timings["worker_retrain_wall_s"] = time.monotonic() - started
        assert done["state_type"] == "COMPLETED", f"{done['state']}\n{served_retrain.run_logs(run['id'])[-4000:]}"
        assert done["work_pool_name"] == POOL
        # the harness's runs left nothing to do (the artifact, written before the run ends; log lines arrive later)
        assert "nothing new" in served_retrain.artifact_of(done).splitlines()[0]
    finally:
        stop(worker)
