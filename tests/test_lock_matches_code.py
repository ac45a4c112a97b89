"""The committed dvc.lock must describe the committed code: otherwise a fresh clone is never up to date and
`dvc pull` then `dvc repro` reruns stages for nothing (issue 11)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _tracked() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


def _outputs() -> set[str]:
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    return {out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def stale_dependencies(status: dict, tracked: set[str], outputs: set[str]) -> dict[str, dict[str, object]]:
    """From `dvc status --json`: each stage's changed dependencies that git tracks (code, params), leaving out
    what other stages produce (data and reports: absent or different in a fresh clone, no fault of the lock)."""
    def produced(path: str) -> bool:
        return any(o == path or o.startswith(path + "/") or path.startswith(o + "/") for o in outputs)

    stale: dict[str, dict[str, object]] = {}
    for stage, entries in status.items():
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            for path, state in entry.get("changed deps", {}).items():
                in_git = path in tracked or any(t.startswith(path.rstrip("/") + "/") for t in tracked)
                if in_git and not produced(path):
                    stale.setdefault(stage, {})[path] = state
    return stale


def test_stale_dependencies_keeps_code_and_params_only():
    status = {"train@gru": [{"changed deps": {"flows/train.py": "modified", "data/tokens.parquet": "deleted",
                                              "params.yaml": {"train.lr": "modified"}}},
                            {"changed outs": {"artifacts/gru.pt": "deleted"}}],
              "report": [{"changed deps": {"data/predictions": "modified"}}, "always changed"]}
    tracked = {"flows/train.py", "params.yaml", "models/gru.py", "data/predictions/.gitignore"}
    outputs = {"data/tokens.parquet", "data/predictions/gru.parquet", "artifacts/gru.pt"}
    assert stale_dependencies(status, tracked, outputs) == {
        "train@gru": {"flows/train.py": "modified", "params.yaml": {"train.lr": "modified"}}}


def test_dvc_lock_matches_the_checkout():
    r = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    stale = stale_dependencies(json.loads(r.stdout or "{}"), _tracked(), _outputs())
    assert not stale, (
        "dvc.lock records other hashes or params than this checkout for: "
        + "; ".join(f"{stage}: {', '.join(deps)}" for stage, deps in stale.items())
        + ". Rerun the affected stages (`dvc repro`) and commit dvc.lock with the code.")
