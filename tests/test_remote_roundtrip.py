"""DVC remote round trip: what a retrain pushed restores a fresh clone, and `dvc repro` then has nothing to do.

The harness (tests/retrain_harness.py) ran the baseline `dvc repro`, `dvc push`ed it to a temp local remote
and committed dvc.lock. Here a fresh `git clone` (no data/, no artifacts/, no DVC cache) points at the same
remote (`dvc remote modify --local`, as a user swaps in S3/GCS/Azure), pulls, and must be up to date; then
the literal sequence: push, remove data/, artifacts/ and the cache (git restores its own files there), pull,
repro: still up to date.
"""
from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import Project
from retrain_harness import Served, served_retrain  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
UP_TO_DATE = "Data and pipelines are up to date."


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
    assert UP_TO_DATE in clone.dvc("repro").stdout

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
    result = clone.dvc("repro")
    assert UP_TO_DATE in result.stdout, result.stdout
    assert "Running stage" not in result.stdout
