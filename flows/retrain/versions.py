"""Every champion a version: a git commit plus a GTO version (DVC's model registry), and the way back.

dvc.yaml declares the artifact `text-classifier` (the models, tokenizer and baselines under artifacts/,
with the data and reports their dvc.lock names). A promotion commits what `dvc exp apply` changed
(dvc.lock, params.yaml, reports/, dvclive/) and registers that commit:

    git commit -- dvc.lock params.yaml reports dvclive "retrain <experiment>: promoted ..."
    gto register text-classifier <commit>              tag text-classifier@v0.0.N (the next patch version)
    gto assign text-classifier --version v0.0.N --stage champion     tag text-classifier#champion#M

`gto show text-classifier` then lists every version and which one is the champion; the DVC remote holds
each version's data and models (the retrain pushes them). Rolling back (`reweigh rollback [VERSION]`)
restores a version's dvc.lock, params.yaml, reports/ and dvclive/ from git and its outputs with `dvc checkout`
(from the cache, else `dvc pull` from the remote), commits that, and assigns the champion stage to it
again: no training, and the next retrain judges against it because it is the workspace.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from flows.retrain.commands import RetrainFailed, champion_files, dvc, git, git_identity_env, remove, results

ARTIFACT = "text-classifier"  # as dvc.yaml's artifacts section names it
STAGE = "champion"


def _gto(args: list[str], workdir: Path) -> subprocess.CompletedProcess:
    """`gto ARGS` (GTO comes with DVC) as it ran, whatever its exit code."""
    return subprocess.run([sys.executable, "-m", "gto.cli", *args], cwd=workdir, capture_output=True, text=True,
                          timeout=300, env=git_identity_env())


def gto(args: list[str], workdir: Path, step: str) -> str:
    """`gto ARGS`, its stdout; a failure raises RetrainFailed naming the step."""
    result = _gto(args, workdir)
    if result.returncode != 0:
        raise RetrainFailed(step, f"`gto {' '.join(args)}` exited {result.returncode}: {(result.stderr or result.stdout).strip()[-2000:]}")
    return result.stdout


def versions(workdir: Path) -> list[dict[str, Any]]:
    """Every registered version, newest first: {version, commit, created_at}."""
    result = _gto(["show", ARTIFACT, "--json"], workdir)
    if result.returncode != 0:
        if "Cannot find artifact" in result.stdout + result.stderr:
            return []  # none registered yet
        raise RetrainFailed("versions", f"`gto show {ARTIFACT} --json` exited {result.returncode}: "
                                        f"{(result.stderr or result.stdout).strip()[-2000:]}")
    rows = json.loads(result.stdout or "[]")
    return [{"version": r["version"], "commit": r["commit_hexsha"], "created_at": r.get("created_at")} for r in rows]


def champion_version(workdir: Path) -> str | None:
    """The version the champion stage is assigned to, or None."""
    result = _gto(["show", f"{ARTIFACT}#{STAGE}", "--ref"], workdir)
    found = re.search(r"@(v[\w.+-]+)", result.stdout) if result.returncode == 0 else None
    return found.group(1) if found else None


def commit(workdir: Path, message: str) -> str:
    """Commit the champion's files (commands.champion_files) as the workspace has them (only those paths); HEAD's
    hash, new or not."""
    present = [f for f in champion_files(workdir) if (workdir / f).exists()]
    git(["add", "-A", "--", *present], workdir)
    staged = subprocess.run(["git", "diff", "--cached", "--quiet", "--", *present], cwd=workdir).returncode != 0
    if staged:
        result = subprocess.run(["git", "commit", "-q", "-m", message, "--", *present], cwd=workdir, capture_output=True,
                                text=True, timeout=120, env=git_identity_env())
        if result.returncode != 0:
            raise RetrainFailed("version", f"`git commit` exited {result.returncode}: {(result.stderr or result.stdout).strip()[-1000:]}")
    return git(["rev-parse", "HEAD"], workdir).strip()


def content(workdir: Path, rev: str) -> tuple[str, ...]:
    """The git object ids of the champion's files at `rev`: two commits with the same ones hold the same version."""
    return tuple(subprocess.run(["git", "rev-parse", "-q", "--verify", f"{rev}:{f}"], cwd=workdir, capture_output=True,
                                text=True).stdout.strip() for f in champion_files(workdir))


def register(workdir: Path, rev: str, message: str) -> str:
    """Register `rev` as the next version and make it the champion; the version (v0.0.N). A commit that holds
    the same files as a registered version (a rollback's commit) is that version."""
    mine = content(workdir, rev)
    version = next((v["version"] for v in versions(workdir) if v["commit"] == rev or content(workdir, v["commit"]) == mine), None)
    if version is None:
        out = gto(["register", ARTIFACT, rev, "-m", message], workdir, "version")
        found = re.search(rf"{re.escape(ARTIFACT)}@(v[\w.+-]+)", out)
        if not found:
            raise RetrainFailed("version", f"`gto register` did not say which version it created: {out.strip()[-500:]}")
        version = found.group(1)
    if champion_version(workdir) != version:
        gto(["assign", ARTIFACT, "--version", version, "--stage", STAGE, "--force", "-m", message], workdir, "version")
    return version


def version_champion(workdir: Path, message: str) -> tuple[str, str]:
    """Commit the workspace's champion (if it differs from HEAD) and make sure it is a registered version,
    the champion; (version, commit). Called before a promotion (so there is a version to roll back to) and after it."""
    rev = commit(workdir, message)
    return register(workdir, rev, message), rev


def rollback(workdir: Path, version: str | None = None, remote: str | None = None) -> dict[str, Any]:
    """Make `version` (default: the one registered before the champion) the workspace and the champion again."""
    known = versions(workdir)
    if not known:
        raise RetrainFailed("rollback", f"no version of {ARTIFACT} is registered here (`gto show {ARTIFACT}`): a promoted retrain registers one")
    current = champion_version(workdir)
    if version is None:
        order = [v["version"] for v in known]  # newest first
        older = order[order.index(current) + 1:] if current in order else order[1:]
        if not older:
            raise RetrainFailed("rollback", f"{ARTIFACT} {current} is the oldest version: nothing to roll back to "
                                            f"(versions: {', '.join(order)})")
        version = older[0]
    target = next((v for v in known if v["version"] == version), None)
    if target is None:
        raise RetrainFailed("rollback", f"{ARTIFACT} has no version {version}; versions: {', '.join(v['version'] for v in known)}")
    # the version's files, exactly: reports/ (or dvclive/, or any git-tracked output) it did not have must not
    # linger (DVC-cached ones come back below); a version from before DVCLive has no dvclive/
    for name in results(workdir):
        git(["rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", name], workdir)
        remove(workdir / name)
    held = [f for f, oid in zip(champion_files(workdir), content(workdir, target["commit"])) if oid]
    git(["checkout", target["commit"], "--", *held], workdir)
    try:
        dvc(["checkout", "--force"], workdir, "rollback")
    except RetrainFailed:  # outputs not in the local cache: the remote has every promoted version
        dvc(["pull", "--force", *(["-r", remote] if remote else [])], workdir, "rollback")
    message = f"rollback: {ARTIFACT} {version} is the champion again (was {current})"
    rev = commit(workdir, message)
    gto(["assign", ARTIFACT, "--version", version, "--stage", STAGE, "--force", "-m", message], workdir, "rollback")
    return {"version": version, "previous": current, "commit": rev, "restored_from": target["commit"]}
