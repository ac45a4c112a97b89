"""Which model the HTTP service serves, at which version, and the watcher that swaps in a promoted one.

    best_model      "best": the highest validation accuracy in reports/metrics.json
    version_of      the loaded files' digests, the commit whose dvc.lock records them, its GTO version
    load_served     a model loaded and scored once, with those facts (Served)
    Watcher         polls the files; once a change has settled, loads the new version beside the old and swaps it in
"""
from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from flows.predict import ModelFileError, Predictor, load_predictor, model_files, stamp

if TYPE_CHECKING:
    from flows.service import Service

log = logging.getLogger("uvicorn.error")  # the server's own log: reloads show beside its start-up lines
POLL_SECONDS = 0.5


class ServiceError(RuntimeError):
    """The service cannot start: no such model, or its files are missing or unreadable."""


def best_model(root: Path) -> str:
    """The model with the highest validation accuracy in reports/metrics.json (the first listed on a tie): chosen
    on validation, as the report chooses its thresholds and its bar, never on test."""
    path = root / "reports" / "metrics.json"
    if not path.is_file():
        raise ServiceError(f"{path} is missing, so there is no best model to serve: run `dvc repro` first, or name one "
                           "with --model (or serve.model in params.yaml)")
    metrics = json.loads(path.read_text())
    scored = [(m, v["val_accuracy"]) for m, v in metrics.items() if isinstance(v, dict) and "val_accuracy" in v]
    if not scored:
        raise ServiceError(f"{path} records no model's val_accuracy: rerun the report (dvc repro report)")
    return max(scored, key=lambda mv: mv[1])[0]  # max keeps the first of equals


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)


def git_stamp(root: Path) -> tuple:
    """The state of HEAD, its branch and the tags, by file stats: a commit or a GTO tag changes it."""
    git = root / ".git"
    paths = [git / "HEAD", git / "packed-refs", git / "refs" / "tags"]
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            paths.append(git / head[5:])
    except OSError:
        pass
    return stamp(*paths)


def version_of(root: Path, name: str, files: tuple[Path, ...]) -> dict[str, Any]:
    """Which version the loaded files are: their MD5s (as DVC records them), the stage params dvc.lock recorded for
    them, the git commit whose dvc.lock names exactly these files, and the GTO version registered for that commit's
    contents (the champion's, after a promotion: flows/retrain/versions.py)."""
    digests = {str(f.relative_to(root)): _md5(f) for f in files}  # files: root/artifacts/..., root absolute
    lock_path = root / "dvc.lock"
    lock = yaml.safe_load(lock_path.read_text()) if lock_path.is_file() else {}
    recorded, params = {}, {}
    for stage, entry in (lock or {}).get("stages", {}).items():
        for out in entry.get("outs", []):
            recorded[out["path"]] = out.get("md5")
        if stage in (f"train@{name}", f"baseline@{name}", name):
            params = entry.get("params", {}).get("params.yaml", {})
    in_lock = all(recorded.get(path) == md5 for path, md5 in digests.items())
    head = _git(root, "rev-parse", "HEAD")
    commit = head.stdout.strip() if head.returncode == 0 else None
    committed = _git(root, "rev-parse", "-q", "--verify", "HEAD:dvc.lock").stdout.strip()
    if commit and not (in_lock and committed and committed == _git(root, "hash-object", "dvc.lock").stdout.strip()):
        commit = None  # the workspace's model is not the one HEAD's dvc.lock records
    registered = _registered(root, commit) if commit else None
    combined = hashlib.md5("".join(f"{path} {md5}\n" for path, md5 in sorted(digests.items())).encode()).hexdigest()
    label = registered or (commit[:12] if commit else f"md5:{combined[:12]}")  # unversioned: what the files hold
    return {"version": label, "registered": registered, "commit": commit, "in_dvc_lock": in_lock,
            "files": digests, "params": params}


def _registered(root: Path, commit: str) -> str | None:
    """The GTO version of text-classifier whose commit holds the same dvc.lock, params.yaml and reports/ as
    `commit` (a rollback's commit is the version it restored); None when none is registered."""
    from flows.retrain.versions import ARTIFACT, content, versions

    if not _git(root, "tag", "--list", f"{ARTIFACT}@*").stdout.strip():
        return None  # no version registered: skip GTO
    mine = content(root, commit)
    return next((v["version"] for v in versions(root) if v["commit"] == commit or content(root, v["commit"]) == mine), None)


@dataclass(frozen=True)
class Served:
    """What the service serves now: a loaded model and what it is."""

    name: str
    predictor: Predictor
    files_stamp: tuple  # the model's files when loaded: a change means a new version
    meta_stamp: tuple  # dvc.lock, reports/metrics.json and git refs: a change means new version facts
    version: dict[str, Any]
    metrics: dict[str, Any]
    loaded_at: float = field(default_factory=time.time)


def _meta_stamp(root: Path) -> tuple:
    return stamp(root / "dvc.lock", root / "reports" / "metrics.json"), git_stamp(root)


def _metrics(root: Path, name: str) -> dict[str, Any]:
    path = root / "reports" / "metrics.json"
    try:
        m = json.loads(path.read_text()).get(name, {})
    except (OSError, ValueError):
        return {}
    keys = ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "f1_macro", "f1_macro_ci_low", "f1_macro_ci_high",
            "roc_auc", "pr_auc", "val_accuracy")
    return {k: m[k] for k in keys if k in m} | ({"per_class": m["per_class"]} if "per_class" in m else {})


def load_served(root: Path, wanted: str) -> Served:
    """The model `wanted` names ("best" or a model), loaded from root/artifacts, with its version facts."""
    name = best_model(root) if wanted == "best" else wanted
    files = model_files(name, root / "artifacts")
    before, meta = stamp(*files), _meta_stamp(root)
    try:
        predictor = load_predictor(name, root / "artifacts")
    except (FileNotFoundError, ModelFileError, ValueError) as exc:
        raise ServiceError(f"cannot serve {name}: {exc}") from None
    predictor.proba(["a first text, to check the model scores"])  # a broken model fails here, not on a request
    return Served(name, predictor, before, meta, version_of(root, name, predictor.files), _metrics(root, name))


class Watcher(threading.Thread):
    """Swaps in a new version of the served model when its files change and have settled; refreshes the version
    facts when dvc.lock, the metrics or git refs change (a promotion commits and registers after writing files)."""

    def __init__(self, service: "Service") -> None:
        super().__init__(name="reweigh-model-watcher", daemon=True)
        self.service, self.stopping = service, threading.Event()
        self.pending: tuple | None = None
        self.since = 0.0
        self.failed: tuple | None = None

    def run(self) -> None:
        while not self.stopping.wait(POLL_SECONDS):
            try:
                self.check()
            except Exception:  # the watcher must outlive any one surprise; the service keeps its model
                log.exception("model watcher: check failed; still serving %s", self.service.current.version["version"])

    def check(self) -> None:
        svc, cur = self.service, self.service.current
        name = cur.name if svc.wanted != "best" else _best_or(svc.root, cur.name)
        now = stamp(*model_files(name, svc.root / "artifacts"))
        if name != cur.name or now != cur.files_stamp:
            if now != self.pending:
                self.pending, self.since = now, time.monotonic()  # changed: wait until it stops changing
                return
            if time.monotonic() - self.since < svc.settings.reload_settle or now == self.failed:
                return
            try:
                new = load_served(svc.root, name)
            except Exception as exc:
                self.failed = now
                log.error("model watcher: %s changed but cannot be loaded (%s); still serving %s", name, exc, cur.version["version"])
                return
            svc.current = new  # one attribute: a request sees the old model or the new one, whole
            log.info("model watcher: now serving %s %s (was %s %s)", new.name, new.version["version"], cur.name, cur.version["version"])
        elif _meta_stamp(svc.root) != cur.meta_stamp:
            meta = _meta_stamp(svc.root)
            svc.current = replace(cur, meta_stamp=meta, version=version_of(svc.root, cur.name, cur.predictor.files),
                                  metrics=_metrics(svc.root, cur.name))
            if svc.current.version["version"] != cur.version["version"]:
                log.info("model watcher: %s is version %s (was %s)", cur.name, svc.current.version["version"], cur.version["version"])


def _best_or(root: Path, fallback: str) -> str:
    try:
        return best_model(root)
    except (ServiceError, OSError, ValueError):
        return fallback  # reports/metrics.json being rewritten
