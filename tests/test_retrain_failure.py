"""The retrain flow fails loudly: the step, and the DVC stage, that failed; one retrain per workspace."""
from __future__ import annotations

import fcntl
import sys

import pytest

from conftest import make_project
from flows.retrain import LOCK_FILE, RetrainFailed, collect_overrides, failed_stage, workspace_lock
from retrain_harness import Served, served_retrain  # noqa: F401


def test_failed_stage_is_read_from_dvc_output() -> None:
    output = "Running stage 'ingest':\n> python -m flows.ingest\nERROR: failed to reproduce 'train@gru': failed to run: python -m flows.train, exited with 1"
    assert failed_stage(output) == "train@gru"
    assert failed_stage("ERROR: unexpected error - boom") is None


def test_bad_override_fails_before_anything_runs(tmp_path) -> None:
    (tmp_path / "params.yaml").write_text("tokenize:\n  kind: bpe\n")
    with pytest.raises(RetrainFailed) as caught:
        collect_overrides(tmp_path, {"tokenize.kind": "nope"}, {"epochs": 0})
    assert caught.value.step == "parameters"
    assert "tokenize.kind" in str(caught.value) and "train.epochs" in str(caught.value)
    assert collect_overrides(tmp_path, {}, {"hidden_size": 32, "dataset": "table"}) == {
        "model.gru.hidden_size": 32, "model.gru_attention.hidden_size": 32, "dataset.name": "table"}


def test_a_second_retrain_waits_for_the_lock_then_fails_saying_who_holds_it(tmp_path) -> None:
    lock = tmp_path / LOCK_FILE
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as held:
        held.write("pid 1, flow run first-run\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RetrainFailed, match="first-run") as caught:
            with workspace_lock(tmp_path, timeout=1):
                pass
        assert caught.value.step == "lock"
    with workspace_lock(tmp_path, timeout=1):  # free again once the first one is done
        assert "pid" in lock.read_text()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_failing_stage_fails_the_run_naming_step_and_stage(served_retrain: Served, tmp_path, imdb_archive) -> None:
    project = make_project(tmp_path, {"dataset": {"options": {"archive": str(imdb_archive)}}})
    project.env["PREFECT_API_URL"] = served_retrain.api  # the run shows in the UI, with its failure artifact
    result = project.run(sys.executable, "-m", "reweigh.cli", "retrain", "-S", "dataset.name=no_such_adapter", "--no-push",
                         check=False, timeout=500)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "retrain failed at step 'reproduce', DVC stage 'ingest'" in result.stderr, result.stderr[-4000:]
    assert "no_such_adapter" in result.stderr
    failures = [a for a in served_retrain.artifacts("retrain-failure") if "no_such_adapter" in (a["data"] or "")]
    assert failures and "FAILED at step `reproduce`, DVC stage `ingest`" in failures[0]["data"]
