"""Every champion a version (flows/retrain/versions.py): real git, real DVC, real GTO on a one-stage project."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flows.retrain import versions
from flows.retrain.commands import RetrainFailed
from retrain_harness import snapshot

FIT = """import pathlib, yaml
w = yaml.safe_load(open("params.yaml"))["w"]
pathlib.Path("artifacts").mkdir(exist_ok=True)
pathlib.Path("artifacts/model.bin").write_text(f"weights {w}")
pathlib.Path("reports").mkdir(exist_ok=True)
pathlib.Path("reports/metrics.json").write_text(f'{{"w": {w}}}')
"""
STAGE = """stages:
  fit:
    cmd: python fit.py
    deps: [fit.py]
    params: [w]
    outs: [artifacts/model.bin]
    metrics:
      - reports/metrics.json:
          cache: false
artifacts:
  text-classifier:
    path: artifacts
    type: model
"""


def sh(cwd: Path, *args: str) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout


def fit(project: Path, w: int) -> None:
    (project / "params.yaml").write_text(f"w: {w}\n")
    sh(project, sys.executable, "-m", "dvc", "repro", "-q")


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    root = tmp_path / "a project"  # a path with a space, as users have
    root.mkdir()
    sh(root, "git", "init", "-q")
    sh(root, "git", "config", "user.email", "t@t")
    sh(root, "git", "config", "user.name", "t")
    sh(root, sys.executable, "-m", "dvc", "init", "-q")
    sh(root, sys.executable, "-m", "dvc", "config", "core.analytics", "false")
    (root / "dvc.yaml").write_text(STAGE)
    (root / "fit.py").write_text(FIT)
    fit(root, 1)
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "first model")
    return root


def test_promotions_are_versions_and_rollback_restores_one_byte_for_byte(project: Path) -> None:
    first, _ = versions.version_champion(project, "the champion before retrain a")
    assert first == "v0.0.1" and versions.champion_version(project) == "v0.0.1"
    kept = snapshot(project)
    fit(project, 2)  # what `dvc exp apply` leaves: new dvc.lock, params, reports and outputs
    second, rev = versions.version_champion(project, "retrain b: promoted")
    assert second == "v0.0.2" and versions.champion_version(project) == "v0.0.2"
    assert "retrain b: promoted" in sh(project, "git", "log", "-1", "--format=%s")
    assert [v["version"] for v in versions.versions(project)] == ["v0.0.2", "v0.0.1"]
    assert "text-classifier@v0.0.2" in sh(project, "git", "tag")

    done = versions.rollback(project)  # the version before the champion
    assert done["version"] == "v0.0.1" and done["previous"] == "v0.0.2"
    assert snapshot(project) == kept  # params, dvc.lock, reports, the model: as v0.0.1 had them
    assert (project / "artifacts" / "model.bin").read_text() == "weights 1"
    assert versions.champion_version(project) == "v0.0.1"
    assert sh(project, sys.executable, "-m", "dvc", "status", "--json").strip() in ("{}", "")  # up to date: nothing to rerun
    # the rollback's commit holds v0.0.1's files: registering it again is v0.0.1, not a new version
    assert versions.version_champion(project, "the champion before retrain c")[0] == "v0.0.1"
    assert [v["version"] for v in versions.versions(project)] == ["v0.0.2", "v0.0.1"]
    shown = sh(project, sys.executable, "-m", "gto.cli", "show", "text-classifier", "--json")
    assert {v["version"] for v in json.loads(shown)} == {"v0.0.1", "v0.0.2"}


def test_rollback_pulls_from_the_remote_when_the_cache_lacks_the_version(project: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    sh(project, sys.executable, "-m", "dvc", "remote", "add", "-d", "store", str(remote))
    versions.version_champion(project, "v1")
    sh(project, sys.executable, "-m", "dvc", "push", "-q")
    fit(project, 2)
    versions.version_champion(project, "v2")
    import shutil

    shutil.rmtree(project / ".dvc" / "cache")  # a fresh machine: only git and the remote
    versions.rollback(project, "v0.0.1")
    assert (project / "artifacts" / "model.bin").read_text() == "weights 1"


def test_rollback_says_what_is_wrong(project: Path) -> None:
    with pytest.raises(RetrainFailed, match="no version of text-classifier is registered"):
        versions.rollback(project)
    versions.version_champion(project, "v1")
    with pytest.raises(RetrainFailed, match="v0.0.1 is the oldest version"):
        versions.rollback(project)
    with pytest.raises(RetrainFailed, match=r"has no version v9\.9\.9; versions: v0\.0\.1"):
        versions.rollback(project, "v9.9.9")


def test_champion_files_follow_dvc_yaml(tmp_path: Path) -> None:
    """What a version holds and a rollback restores: dvc.lock, params.yaml and every git-tracked output that
    dvc.yaml declares (cache: false), also under a foreach stage's `do`, not a list kept by hand."""
    from flows.retrain.commands import champion_files, results

    root = Path(__file__).resolve().parents[1]
    assert results(root) == ("dvclive", "reports")
    (tmp_path / "dvc.yaml").write_text(STAGE.replace("""artifacts:""", """  score:
    foreach: [a, b]
    do:
      cmd: python score.py ${item}
      outs:
        - scores/${item}.json:
            cache: false
        - artifacts/${item}.bin
      plots:
        - curves/${item}.csv
artifacts:"""))
    assert champion_files(tmp_path) == ("dvc.lock", "params.yaml", "reports", "scores")
