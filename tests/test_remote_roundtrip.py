"""DVC remote round trip: what a retrain pushed restores a fresh clone, and `dvc repro` then has nothing to do
(but the `sources` check, which always runs).

The harness (tests/retrain_harness.py) ran the baseline `dvc repro`, `dvc push`ed it to a temp local remote
and committed dvc.lock (then accepted the promoted retrains: the workspace, committed). Here a fresh `git clone` (no data/, no artifacts/, no DVC cache) points at the same
remote (`dvc remote modify --local`, as a user swaps in S3/GCS/Azure), pulls, and must be up to date; then
the literal sequence: push, remove data/, artifacts/ and the cache (git restores its own files there), pull,
repro: still up to date.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from conftest import Project
from retrain_harness import Served, served_retrain  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def assert_nothing_to_do(clone: Project, output: str) -> None:
    """Only the always-run `sources` check ran; every other stage was skipped and dvc.lock is unchanged."""
    assert re.findall(r"Running stage '([^']+)'", output) == ["sources"], output
    assert "Stage 'ingest' didn't change, skipping" in output, output
    assert clone.run("git", "status", "--porcelain", "dvc.lock", "reports").stdout == ""
    assert json.loads(clone.dvc("status", "--json").stdout) == {"sources": ["always changed"]}


def _outputs(project: Project) -> list[str]:
    import yaml

    lock = yaml.safe_load((project.path / "dvc.lock").read_text())
    return sorted({o["path"] for stage in lock["stages"].values() for o in stage.get("outs", [])})


def test_fresh_clone_pulls_everything_and_repro_has_nothing_to_do(served_retrain: Served, tmp_path) -> None:
    source = served_retrain.project
    clone_dir = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(source.path), str(clone_dir)], check=True, timeout=120)
    clone = Project(clone_dir, dict(source.env, PYTHONPATH=str(clone_dir)))
    outputs = _outputs(clone)
    assert outputs and not any((clone_dir / o).exists() for o in outputs if o.startswith(("data/", "artifacts/")))
    assert not (clone_dir / ".dvc" / "cache").exists()

    clone.dvc("remote", "modify", "--local", "local", "url", str(served_retrain.remote))
    clone.dvc("pull")
    missing = [o for o in outputs if not (clone_dir / o).exists()]
    assert not missing, f"dvc pull did not restore {missing}"
    assert_nothing_to_do(clone, clone.dvc("repro").stdout)

    # push → remove data/, artifacts/ and the DVC cache → pull → repro: nothing to do
    clone.dvc("push")
    for folder in ("data", "artifacts", ".dvc/cache"):
        shutil.rmtree(clone_dir / folder, ignore_errors=True)
    # removing the folders also removed the .gitignore files DVC keeps in them (git-tracked, and part of
    # the hash of a folder dependency such as data/predictions): git restores them, as a fresh clone has them
    clone.run("git", "checkout", "--", ".")
    assert not any((clone_dir / o).exists() for o in outputs if o.startswith("data/"))
    clone.dvc("pull")
    assert not [o for o in outputs if not (clone_dir / o).exists()]
    assert_nothing_to_do(clone, clone.dvc("repro").stdout)
