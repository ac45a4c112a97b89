"""The retrain deployment end to end: a real Prefect server, `reweigh serve`, a run started through the API.

The harness (tests/retrain_harness.py) committed a baseline `dvc repro`, then started a run of the served
deployment with `tokenize.vocab_size=20` and `pull=true`; here we check what that run changed.
"""
from __future__ import annotations

import json
import sys

import pytest
import yaml

from retrain_harness import DEPLOYMENT, CRON, RUN_PARAMETERS, Served, served_retrain  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_deployment_is_served_with_the_cron_schedule_from_params(served_retrain: Served) -> None:
    deployment = served_retrain.get(f"/deployments/{served_retrain.deployment_id}")
    assert deployment["name"] == DEPLOYMENT
    crons = [s["schedule"].get("cron") for s in deployment["schedules"]]
    assert crons == [CRON], deployment["schedules"]
    assert deployment["schedules"][0]["active"]
    assert deployment["parameters"]["workdir"] == str(served_retrain.project.path)
    assert deployment["parameters"]["push"] is True
    flow = served_retrain.get(f"/flows/{deployment['flow_id']}")
    assert flow["name"] == "retrain"


def test_served_run_completes_and_records_new_params_lock_and_metrics(served_retrain: Served) -> None:
    run = served_retrain.flow_run
    assert run["state_type"] == "COMPLETED", (
        f"retrain run ended {run['state_type']}: {run['state'].get('message')}\n"
        + served_retrain.run_logs(run["id"])[-6000:])
    assert run["parameters"]["overrides"] == RUN_PARAMETERS["overrides"]
    project = served_retrain.project

    # dvc.lock changed: the tokenize stage (and what follows it) ran again with the new vocabulary size
    lock = yaml.safe_load((project.path / "dvc.lock").read_text())
    baseline = yaml.safe_load(served_retrain.baseline_lock)
    assert lock != baseline
    assert lock["stages"]["tokenize"]["params"]["params.yaml"]["tokenize"]["vocab_size"] == 20
    assert baseline["stages"]["tokenize"]["params"]["params.yaml"]["tokenize"]["vocab_size"] != 20
    assert lock["stages"]["tokenize"]["outs"] != baseline["stages"]["tokenize"]["outs"]
    # `dvc exp run -S` left the override in the workspace's params.yaml, as DVC documents
    assert yaml.safe_load((project.path / "params.yaml").read_text())["tokenize"]["vocab_size"] == 20

    # metrics (whatever dvc.yaml declares) changed against the committed baseline
    diff = json.loads(project.dvc("metrics", "diff", "--json").stdout)
    assert diff, "dvc metrics diff shows no change after the retrain"
    changed = {f"{f}:{m}" for f, ms in diff.items() for m, v in ms.items() if v.get("old") != v.get("new")}
    assert changed, diff

    # the experiment is recorded by DVC
    experiments = project.dvc("exp", "list", "--name-only").stdout.split()
    assert experiments, "dvc exp run recorded no experiment"

    # and its outputs were pushed: the remote has every output of the new dvc.lock
    status = project.dvc("status", "--cloud", "--json")
    assert json.loads(status.stdout or "{}") == {}, status.stdout


def test_served_run_publishes_a_metrics_artifact(served_retrain: Served) -> None:
    run = served_retrain.flow_run
    artifacts = [a for a in served_retrain.artifacts("retrain-report") if a["flow_run_id"] == run["id"]]
    assert len(artifacts) == 1, served_retrain.artifacts("retrain-report")
    markdown = artifacts[0]["data"]
    assert "| file | metric | old | new | change |" in markdown
    assert "tokenize.vocab_size=20" in markdown
    assert "dvc exp run" in markdown
    assert "report:" in markdown and str(served_retrain.project.path / "reports") in markdown
    assert str(served_retrain.remote) in markdown
    for metrics_file in served_retrain.baseline_metrics[""]["data"]:
        assert f"| {metrics_file} |" in markdown
    assert not [a for a in served_retrain.artifacts("retrain-failure") if a["flow_run_id"] == run["id"]]


def test_served_run_logs_show_each_dvc_step(served_retrain: Served) -> None:
    logs = served_retrain.run_logs(served_retrain.flow_run["id"])
    for step in ("$ dvc pull", "$ dvc exp run -S tokenize.vocab_size=20", "$ dvc push"):
        assert step in logs, logs[-4000:]
    assert "Running stage 'tokenize'" in logs
    print(f"served retrain timings: {served_retrain.timings}", file=sys.stderr)
