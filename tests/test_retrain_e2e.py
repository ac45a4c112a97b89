"""The retrain deployment end to end: a real Prefect server, `reweigh serve`, runs started through the API.

The harness (tests/retrain_harness.py) committed a baseline `dvc repro` of a CSV-backed project, then ran
the served deployment four times: after 100 new rows, with nothing new, after 600 mislabelled rows, and
with overrides (promote=always). Here we check what each run did and left.
"""
from __future__ import annotations

import json
import re
import sys

import pytest
import yaml

from retrain_harness import DEPLOYMENT, CRON, RUN_PARAMETERS, Served, served_retrain  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def _completed(served: Served, key: str) -> dict:
    run = served.runs[key]
    assert run["state_type"] == "COMPLETED", (
        f"retrain run {key} ended {run['state_type']}: {run['state'].get('message')}\n" + served.run_logs(run["id"])[-6000:])
    return run


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


def test_override_run_is_an_experiment_promoted_into_the_workspace_and_pushed(served_retrain: Served) -> None:
    run = _completed(served_retrain, "override")
    assert run["parameters"]["overrides"] == RUN_PARAMETERS["overrides"]
    project = served_retrain.project
    # the challenger's dvc.lock (applied into the workspace) ran tokenize again with the new vocabulary size
    lock = yaml.safe_load(served_retrain.snapshots["after_override"]["lock"])
    baseline = yaml.safe_load(served_retrain.baseline_lock)
    assert lock["stages"]["tokenize"]["params"]["params.yaml"]["tokenize"]["vocab_size"] == 20
    assert baseline["stages"]["tokenize"]["params"]["params.yaml"]["tokenize"]["vocab_size"] != 20
    assert lock["stages"]["tokenize"]["outs"] != baseline["stages"]["tokenize"]["outs"]
    # `dvc exp apply` left the override in the workspace's params.yaml (until the rollback after it)
    assert yaml.safe_load(served_retrain.snapshots["after_override"]["params"])["tokenize"]["vocab_size"] == 20
    experiments = project.dvc("exp", "list", "--all-commits", "--name-only").stdout.split()
    assert len([e for e in experiments if e.startswith("retrain-")]) >= 3, experiments
    markdown = served_retrain.artifact_of(run)
    assert "promoted: " in markdown and "retrain.promote is always" in markdown
    assert "tokenize.vocab_size=20" in markdown and "dvc exp run --temp" in markdown
    assert str(served_retrain.remote) in markdown
    logs = served_retrain.run_logs(run["id"])
    for step in ("$ dvc pull", "$ dvc exp run --temp", "-S tokenize.vocab_size=20", "$ dvc exp apply", "$ dvc push"):
        assert step in logs, logs[-4000:]
    assert "Running stage 'tokenize'" in logs


def test_new_rows_are_seen_retrained_on_and_reported_old_to_new(served_retrain: Served) -> None:
    run = _completed(served_retrain, "new_data")
    markdown = served_retrain.artifact_of(run)
    assert re.search(r"\*\*promoted: \+100 rows \(test \+20, train \+\d+, val \+\d+\)", markdown), markdown[:600]
    assert "- source `reviews.csv`: reviews.csv (" in markdown  # old → new fingerprint
    rows = dict(((s, lab), (int(b.replace(",", "")), int(a.replace(",", ""))))
                for s, lab, b, a in re.findall(r"^\| (train|val|test) \| (neg|pos) \| ([\d,]+) \| ([\d,]+) \|", markdown, re.M))
    assert rows[("test", "pos")] == (30, 40) and rows[("test", "neg")] == (30, 40)
    assert sum(a - b for b, a in rows.values()) == 100
    # only metrics that changed are listed, champion (old) → challenger (new)
    section = markdown.split("## Metrics that changed")[1].split("## Run")[0]
    listed = re.findall(r"^\| (reports/[^|]+) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", section, re.M)
    assert listed and all(old.strip() != new.strip() for _, _, old, new in listed)
    assert "reports/tokenize.json" in {f.strip() for f, _, _, _ in listed}  # more documents: the tokenizer saw them
    logs = served_retrain.run_logs(run["id"])
    assert "source reviews.csv changed" in logs and "Running stage 'ingest'" in logs
    # the documented layout: data/raw/reviews.csv, untracked, reached the challenger's temp copy
    assert "-C data/raw" in markdown + logs and "Unable to copy" not in logs
    assert served_retrain.project.run("git", "ls-files", "data/raw").stdout == ""
    # the promoted challenger was pushed: the remote has every output of the workspace's dvc.lock
    status = served_retrain.project.dvc("status", "--cloud", "--json")
    assert json.loads(status.stdout or "{}") == {}, status.stdout


def test_a_run_with_nothing_new_ends_in_seconds_without_a_challenger(served_retrain: Served) -> None:
    run = _completed(served_retrain, "nothing_new")
    markdown = served_retrain.artifact_of(run)
    assert "nothing new" in markdown.splitlines()[0]
    steps = dict((k, float(v)) for k, v in re.findall(r"(\w+) ([\d.]+) s", markdown.split("- steps: ")[1]))
    assert set(steps) == {"check"}, steps  # no experiment, no stage: only the check ran
    print(f"nothing-new run: DVC work {sum(steps.values()):.1f} s, flow run {run['total_run_time']:.1f} s", file=sys.stderr)
    logs = served_retrain.run_logs(run["id"])
    assert "dvc exp run" not in logs and "Running stage" not in logs
    assert served_retrain.snapshots["after_nothing_new"] == served_retrain.snapshots["before_nothing_new"]


def test_a_bad_batch_is_flagged_judged_on_the_reference_set_and_not_promoted(served_retrain: Served) -> None:
    run = served_retrain.runs["corrupted"]
    assert run["state_type"] == "FAILED" and run["state"]["message"].startswith("not promoted: "), run["state"]
    assert "reference set" in run["state"]["message"] and "worse" in run["state"]["message"]
    assert "not-promoted" in served_retrain.get(f"/flow_runs/{run['id']}")["tags"]  # recognisable in the run list
    before, after = served_retrain.snapshots["before_corrupted"], served_retrain.snapshots["after_corrupted"]
    assert after["workspace"] == before["workspace"]  # dvc.lock, params, reports, data, artifacts: unchanged
    assert after["remote"] == before["remote"]  # nothing pushed
    markdown = served_retrain.artifact_of(run)
    assert markdown.splitlines()[0].endswith("NOT promoted")
    name = re.search(r"DVC experiment `(retrain-[\d-]+)`", markdown).group(1)
    assert f"dvc exp apply {name} && dvc push" in markdown  # how to force it
    assert "+600 rows" in markdown
    # the drift table: the label shift and the conflicting near copies, each with what it measured
    drift = markdown.split("## Drift")[1].split("\n## ")[0]
    assert re.search(r"^\| label_shift \| \*\*warning\*\* \| 0\.[2-4]\d* \|", drift, re.M), drift
    assert re.search(r"^\| label_conflicts \| \*\*warning\*\* \| 1 \|", drift, re.M), drift
    assert "Re: " in drift and "'old_label': 'neg'" in drift  # sample rows: the new text and its old twin's label
    # both judgements: the new test split (which holds flipped rows) and the reference set, where it is worse
    assert "### On the new test split" in markdown
    reference = markdown.split("### On the reference set: the challenger FAILS")[1].split("###")[0]
    assert "McNemar p" in reference and "worse" in reference
    shown = served_retrain.project.dvc("exp", "show", "--all-commits", "--json").stdout
    assert name in shown  # the challenger is kept as an experiment for inspection
    assert not [a for a in served_retrain.artifacts("retrain-failure") if a["flow_run_id"] == run["id"]]
    print(f"served retrain timings: {served_retrain.timings}", file=sys.stderr)


def test_a_blocking_drift_check_stops_the_retrain_before_training(served_retrain: Served) -> None:
    run = served_retrain.runs["blocked"]
    assert run["state_type"] == "FAILED" and run["state"]["message"].startswith("blocked: drift check(s) label_conflicts"), run["state"]
    assert "blocked" in served_retrain.get(f"/flow_runs/{run['id']}")["tags"]
    after_corrupted, after = served_retrain.snapshots["after_corrupted"], served_retrain.snapshots["after_blocked"]
    assert after == after_corrupted  # workspace, remote and the experiments: nothing new, no challenger
    markdown = served_retrain.artifact_of(run)
    assert markdown.splitlines()[0].endswith("BLOCKED")
    assert re.search(r"^\| label_conflicts \| \*\*BLOCKS\*\* \|", markdown, re.M), markdown
    steps = dict((k, float(v)) for k, v in re.findall(r"(\w+) ([\d.]+) s", markdown.split("- steps: ")[1]))
    assert set(steps) == {"check", "drift"}, steps  # seconds, no training
    logs = served_retrain.run_logs(run["id"])
    assert "dvc exp run" not in logs and "drift check label_conflicts failed (block)" in logs


def test_a_promotion_is_a_commit_and_a_gto_version_and_rollback_restores_it_byte_for_byte(served_retrain: Served) -> None:
    project, snaps = served_retrain.project, served_retrain.snapshots
    after = snaps["after_new_data"]
    # the new rows' promotion: the champion before it registered first (v0.0.1), then the promotion (v0.0.2)
    registered = {v["version"]: v["commit_hexsha"] for v in json.loads(after["versions"])}
    assert set(registered) == {"v0.0.1", "v0.0.2"} and registered["v0.0.2"] == after["head"], registered
    message = project.run("git", "log", "-1", "--format=%s", after["head"]).stdout
    assert re.match(r"retrain retrain-[\d-]+: promoted; new test split", message), message
    changed = project.run("git", "show", "--name-only", "--format=", after["head"]).stdout.split()
    assert "dvc.lock" in changed and any(f.startswith("reports/") for f in changed), changed
    markdown = served_retrain.artifact_of(served_retrain.runs["new_data"])
    assert "- version: `text-classifier@v0.0.2`" in markdown and "`reweigh rollback v0.0.1`" in markdown
    # rollback from the override's version (v0.0.3) to v0.0.2: the workspace as it was, byte for byte
    rollback = snaps["rollback"]
    assert "text-classifier v0.0.2 is the champion again (was v0.0.3)" in rollback["cli"], rollback["cli"]
    assert rollback["workspace"] == after["workspace"]  # dvc.lock, params.yaml, reports/, data/, artifacts/
    shown = [line for line in rollback["versions"].splitlines() if "v0.0." in line]
    assert [("champion" in line) for line in shown if "v0.0.2" in line] == [True], rollback["versions"]
    # the next retrain (the bad batch) judged against v0.0.2: its champion values are v0.0.2's metrics
    run = served_retrain.runs["corrupted"]
    markdown = served_retrain.artifact_of(run)
    assert "text-classifier@v0.0.2" in markdown or "reweigh rollback v0.0.2" in markdown, markdown[-1500:]
    old_metrics = json.loads(project.run("git", "show", f"{registered['v0.0.2']}:reports/metrics.json").stdout)

    def value(data: dict, dotted: str):
        for part in dotted.split("."):
            data = data[part]
        return data

    listed = re.findall(r"^\| reports/metrics\.json \| ([^|]+) \| ([^|]+) \|", markdown, re.M)
    assert listed, markdown
    for name, old in listed[:20]:
        if old.strip() != "—":
            assert float(old) == pytest.approx(value(old_metrics, name.strip()), rel=1e-3), name


def test_a_running_model_service_serves_each_promoted_version_and_no_request_fails(served_retrain: Served) -> None:
    """`reweigh serve-model`, started on the baseline and asked twice a second through every retrain, serves what
    each promotion and the rollback made the champion, names its registered version, and never fails a request."""
    snaps = served_retrain.snapshots
    before = snaps["service_before"]
    assert before["registered"] is None and before["version"] == before["commit"][:12]  # committed, not yet registered
    after = snaps["after_new_data"]
    service = after["service"]
    assert service["registered"] == "v0.0.2" and service["commit"] == after["head"], service
    lock = yaml.safe_load(served_retrain.project.run("git", "show", f"{after['head']}:dvc.lock").stdout)
    outs = {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])}
    assert service["files"] == {p: outs[p] for p in ("artifacts/gru_attention.pt", "artifacts/tokenizer.json")}
    assert service["files"] != before["files"] and service["metrics"] != before["metrics"]
    tiny = snaps["after_override"]["service"]  # v0.0.3: the tiny vocabulary, a new tokenizer and model
    assert tiny["registered"] == "v0.0.3" and tiny["files"]["artifacts/tokenizer.json"] != service["files"]["artifacts/tokenizer.json"]
    assert snaps["rollback"]["service"]["files"] == service["files"]  # v0.0.2 again: the same files
    final = snaps["service_after"]
    assert final["model"]["version"] == "v0.0.2" and not final["failures"], final["failures"][:5]
    registered = [v for i, v in enumerate(final["answers"]) if v.startswith("v") and (i == 0 or final["answers"][i - 1] != v)]
    assert [v for v in registered if v != "v0.0.1"] == ["v0.0.2", "v0.0.3", "v0.0.2"], registered  # in the order promoted
    assert len(final["answers"]) > 100  # asked all along: every retrain ran while it served
