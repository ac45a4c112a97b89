"""The retrain flow fails loudly: the step, and the DVC stage, that failed; one retrain per workspace."""
from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import make_project
from flows.retrain.commands import LOCK_FILE, RetrainFailed, collect_overrides, failed_stage, workspace_lock
from retrain_harness import Served, reviews, served_retrain, snapshot, start, stop, wait_until, write_rows  # noqa: F401


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
        "model.gru.hidden_size": 32, "model.gru_attention.hidden_size": 32, "pretrain.hidden_size": 32,
        "dataset.name": "table"}
    widths = collect_overrides(tmp_path, {}, {"embedding_dim": 32})  # the pretrained vectors must fit every model
    assert widths == {**{f"model.{m}.embedding_dim": 32 for m in ("gru", "gru_attention", "cnn", "transformer")},
                      "pretrain.dim": 32}


def test_a_silent_hang_is_stopped_at_the_step_timeout_with_its_children(tmp_path) -> None:
    import time

    import psutil

    from flows.retrain.commands import dvc

    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    marker = tmp_path / "started"
    (tmp_path / "dvc.yaml").write_text(  # prints nothing once started: the timeout cannot wait for a line
        f"stages:\n  hang:\n    cmd: {sys.executable} -c \"import pathlib, time; pathlib.Path('started').touch(); time.sleep(120)\"\n")
    started = time.monotonic()
    with pytest.raises(RetrainFailed, match="ran past 5 s and was stopped") as caught:
        dvc(["repro"], tmp_path, "challenger", timeout=5)
    assert time.monotonic() - started < 30  # not the stage's 120 s
    assert caught.value.step == "challenger" and marker.exists()
    assert not [p for p in psutil.process_iter(["cmdline"]) if "time.sleep(120)" in " ".join(p.info["cmdline"] or [])]


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
    assert "retrain failed at step 'challenger', DVC stage 'sources'" in result.stderr, result.stderr[-4000:]
    assert "no_such_adapter" in result.stderr
    failures = [a for a in served_retrain.artifacts("retrain-failure") if "no_such_adapter" in (a["data"] or "")]
    assert failures and "FAILED at step `challenger`, DVC stage `sources`" in failures[0]["data"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_retrain_killed_while_training_leaves_the_champion_intact(served_retrain: Served, tmp_path) -> None:
    project, data = served_retrain.project, served_retrain.data
    clean = data.read_bytes()
    before = {"workspace": snapshot(project.path), "remote": snapshot(served_retrain.remote)}
    write_rows(data, reviews(40, "train", 7))  # new data: the retrain starts a challenger
    log = tmp_path / "killed-retrain.log"
    proc = start([sys.executable, "-m", "reweigh.cli", "retrain"], project.path, project.env, log)
    try:
        wait_until(lambda: "Running stage 'train@" in log.read_text() or proc.poll() is not None, 600,
                   "the challenger to start training", lambda: log.read_text()[-3000:])
        assert proc.poll() is None, f"the retrain ended before it could be killed:\n{log.read_text()[-3000:]}"
        os.killpg(proc.pid, signal.SIGKILL)  # no cleanup of any kind runs: as a power cut or the OOM killer
        proc.wait(30)
    finally:
        stop(proc)
        data.write_bytes(clean)
    assert snapshot(project.path) == before["workspace"]  # dvc.lock, params, reports, data/, artifacts/
    assert snapshot(served_retrain.remote) == before["remote"]
    assert json.loads(project.dvc("status", "--json").stdout) == {"sources": ["always changed"]}
    # the next retrain is not blocked by anything the killed one left: its lock, DVC's locks, the temp copy
    again = project.run(sys.executable, "-m", "reweigh.cli", "retrain", "--no-push", check=False, timeout=300)
    assert again.returncode == 0 and "nothing new" in again.stdout + again.stderr, again.stderr[-3000:]


@pytest.mark.timeout(300)
def test_a_promotion_cut_off_midway_is_undone_by_the_next_run(tmp_path) -> None:
    from flows.retrain.commands import RESTORE_POINT, recover_champion, save_restore_point

    def run(*args: str) -> None:
        subprocess.run(args, cwd=tmp_path, check=True, capture_output=True, timeout=120)

    run("git", "init", "-q")
    run(sys.executable, "-m", "dvc", "init", "-q")
    (tmp_path / "dvc.yaml").write_text(  # the real layout: a cached output, and git-tracked metrics under reports/
        "stages:\n  make:\n    cmd: mkdir -p reports && echo champion > out.txt && echo 0.9 > reports/metrics.json\n"
        "    outs: [out.txt]\n    metrics:\n    - reports/metrics.json:\n        cache: false\n")
    (tmp_path / "params.yaml").write_text("seed: 1\n")
    run(sys.executable, "-m", "dvc", "repro", "-q")
    champion = {p: (tmp_path / p).read_bytes() for p in ("dvc.lock", "params.yaml", "reports/metrics.json", "out.txt")}
    assert not recover_champion(tmp_path)  # no restore point: nothing to undo

    save_restore_point(tmp_path)
    # killed halfway through `dvc exp apply`: some files are the challenger's, one is new, the output is another
    (tmp_path / "params.yaml").write_text("seed: 2\n")
    (tmp_path / "reports" / "metrics.json").write_text("0.5\n")
    (tmp_path / "reports" / "challenger_only.png").write_bytes(b"x")
    (tmp_path / "out.txt").write_text("challenger\n")
    assert recover_champion(tmp_path)
    assert {p: (tmp_path / p).read_bytes() for p in champion} == champion
    assert not (tmp_path / "reports" / "challenger_only.png").exists()
    assert not (tmp_path / RESTORE_POINT).exists()
