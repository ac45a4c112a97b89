"""Running DVC for the retrain flow: commands streamed into the run's log, overrides checked, one lock.

Everything here is about getting DVC commands run safely; flows/retrain/flow.py decides which, and
flows/retrain/judge.py compares the champion with the challenger.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any


import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
from prefect import get_run_logger
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run
from reweigh.params import ModelParams, ParamsError, apply_overrides, load_raw_params, validate_params

LOCK_FILE = Path(".dvc") / "tmp" / "reweigh-retrain.lock"
RESTORE_POINT = Path(".dvc") / "tmp" / "reweigh-champion"


def results(workdir: Path) -> tuple[str, ...]:
    """Where the pipeline's git-tracked outputs lie: the top folder (or file) of every out, metric and plot that
    dvc.yaml marks `cache: false` (here reports/ and dvclive/, the train stages' DVCLive logs)."""
    import yaml

    spec = yaml.safe_load((workdir / "dvc.yaml").read_text()) or {}
    found = set()
    for stage in (spec.get("stages") or {}).values():
        body = stage.get("do", stage)  # a foreach/matrix stage declares its outputs under `do`
        for kind in ("outs", "metrics", "plots"):
            for entry in body.get(kind) or []:
                for path, options in (entry.items() if isinstance(entry, dict) else ()):
                    if (options or {}).get("cache", True) is False:
                        found.add(Path(path).parts[0])
    return tuple(sorted(found))


def champion_files(workdir: Path) -> tuple[str, ...]:
    """What `dvc exp apply` rewrites besides cached outputs: dvc.lock, params.yaml and the git-tracked outputs."""
    return ("dvc.lock", "params.yaml", *results(workdir))


class RetrainFailed(RuntimeError):
    """A retrain step failed; the message names the step (and the DVC stage) and ends with DVC's output."""

    def __init__(self, step: str, detail: str, stage: str | None = None) -> None:
        self.step, self.stage, self.detail = step, stage, detail
        where = f"step '{step}'" + (f", DVC stage '{stage}'" if stage else "")
        super().__init__(f"retrain failed at {where}: {detail}")


# ---------------------------------------------------------------- running DVC


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger inside a flow run (its lines show in the UI), else a plain one."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("reweigh.retrain")


def dvc(args: list[str], cwd: Path, step: str, env: dict[str, str] | None = None, timeout: float | None = None) -> str:
    """Run `dvc ARGS` in `cwd`, stream each output line into the run's log, return the output.

    On a non-zero exit raise RetrainFailed with the step, the DVC stage named in DVC's error (if any)
    and the last lines of output.
    """
    logger = _logger()
    command = [sys.executable, "-m", "dvc", *args]
    logger.info("$ dvc %s", " ".join(args))
    lines: list[str] = []
    tail: deque[str] = deque(maxlen=30)
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        # a watchdog, not a check per line: a command that hangs silently is stopped on time too
        watchdog = threading.Timer(timeout, _kill_tree, (proc,)) if timeout else None
        if watchdog:
            watchdog.daemon = True
            watchdog.start()
        try:
            for line in proc.stdout:
                line = line.rstrip()
                lines.append(line)
                if line.strip():
                    tail.append(line)
                    logger.info("%s", line)
            code = proc.wait()
        finally:
            if watchdog:
                watchdog.cancel()
    if watchdog and watchdog.finished.is_set() and code != 0 and getattr(proc, "_reweigh_killed", False):
        raise RetrainFailed(step, f"`dvc {' '.join(args)}` ran past {timeout:.0f} s and was stopped:\n" + "\n".join(tail))
    output = "\n".join(lines)
    if code != 0:
        stage = failed_stage(output)
        raise RetrainFailed(step, f"`dvc {' '.join(args)}` exited {code}:\n" + "\n".join(tail), stage)
    return output


def _kill_tree(proc: subprocess.Popen) -> None:
    """Stop a DVC command and the stage commands it started (its whole process tree; psutil comes with DVC)."""
    import psutil

    proc._reweigh_killed = True  # type: ignore[attr-defined]
    try:
        family = psutil.Process(proc.pid).children(recursive=True) + [psutil.Process(proc.pid)]
    except psutil.NoSuchProcess:
        return
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()


def failed_stage(output: str) -> str | None:
    """The stage DVC names in 'failed to reproduce 'train@gru'' (or similar), if it names one."""
    found = re.findall(r"failed to (?:reproduce|run)[^']*'([^']+)'", output)
    return found[-1] if found else None


def dvc_json(args: list[str], cwd: Path, step: str) -> Any:
    """A `dvc … --json` command's result, parsed (quietly: no output in the log)."""
    result = subprocess.run([sys.executable, "-m", "dvc", *args, "--json"], cwd=cwd, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RetrainFailed(step, f"`dvc {' '.join(args)} --json` exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    return json.loads(result.stdout or "{}")


def git_identity_env() -> dict[str, str]:
    """`dvc exp run` commits experiments: give git a committer on machines that have none configured."""
    env = dict(os.environ)
    has_identity = subprocess.run(["git", "config", "user.email"], capture_output=True).returncode == 0
    if not has_identity:
        for who in ("AUTHOR", "COMMITTER"):
            env.setdefault(f"GIT_{who}_NAME", "reweigh retrain")
            env.setdefault(f"GIT_{who}_EMAIL", "retrain@reweigh.invalid")
    return env


# ---------------------------------------------------------------- parameters


def collect_overrides(workdir: Path, overrides: dict[str, Any], named: dict[str, Any]) -> dict[str, Any]:
    """The `key.path: value` overrides of this run, checked against params.yaml's schema before anything runs."""
    merged = dict(overrides or {})
    for key, value in named.items():
        if value is None:
            continue
        if key in ("embedding_dim", "hidden_size"):  # every model, and the pretrained weights they start from
            merged.update({f"model.{m}.{key}": value for m, section in ModelParams.model_fields.items()
                           if key in section.annotation.model_fields})
            merged[{"embedding_dim": "pretrain.dim", "hidden_size": "pretrain.hidden_size"}[key]] = value
        else:
            merged[{"dataset": "dataset.name", "epochs": "train.epochs", "vocab_size": "tokenize.vocab_size",
                    "device": "train.device"}[key]] = value
    params_file = workdir / "params.yaml"
    try:  # the same message `reweigh` gives for a bad params.yaml
        validate_params(apply_overrides(load_raw_params(params_file), merged), params_file)
    except ParamsError as exc:
        raise RetrainFailed("parameters", str(exc)) from None
    return merged


def set_param_arg(key: str, value: Any) -> str:
    """One `-S key=value`: strings as they are, everything else as JSON (which DVC reads as YAML)."""
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


# ---------------------------------------------------------------- the lock


@contextlib.contextmanager
def workspace_lock(workdir: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on the workspace; wait up to `timeout` s for another retrain to finish."""
    path = workdir / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = _logger()
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                if time.monotonic() >= deadline:
                    raise RetrainFailed("lock", f"another retrain holds {path} ({holder}); waited {timeout:.0f} s") from None
                if not waited:
                    logger.warning("another retrain holds %s (%s): waiting up to %.0f s", path, holder, timeout)
                    waited = True
                time.sleep(2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, flow run {flow_run.get_name() or '?'}, since {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def remote_url(workdir: Path, remote: str | None) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", "remote", "list"], cwd=workdir, capture_output=True, text=True, timeout=60)
    remotes = dict(line.split(None, 1) for line in result.stdout.splitlines() if len(line.split(None, 1)) == 2)
    if remote:
        return f"{remote}: {remotes.get(remote, '?').split()[0]}"
    default = subprocess.run([sys.executable, "-m", "dvc", "remote", "default"], cwd=workdir, capture_output=True, text=True, timeout=60).stdout.strip()
    return f"{default}: {remotes.get(default, '?').split()[0]}" if default else "no default remote"



def git(args: list[str], cwd: Path, check: bool = True) -> str:
    """`git ARGS` in `cwd`, its stdout; a failure raises RetrainFailed (step 'git') with git's message."""
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise RetrainFailed("git", f"`git {' '.join(args)}` exited {result.returncode}: {result.stderr.strip()[-1000:]}")
    return result.stdout if result.returncode == 0 else ""


# ---------------------------------------------------------------- the champion's restore point


def save_restore_point(workdir: Path) -> Path:
    """Copy the champion's dvc.lock, params.yaml, reports/ and dvclive/ aside before a promotion rewrites them.

    Written under a temporary name and renamed, so a restore point is always whole; its outputs need no
    copy (DVC's cache keeps every version dvc.lock names)."""
    target = workdir / RESTORE_POINT
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in champion_files(workdir):
        source = workdir / name
        if source.is_dir():
            shutil.copytree(source, partial / name)
        elif source.is_file():
            shutil.copy2(source, partial / name)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)
    return target


def remove(path: Path) -> None:
    """Delete a workspace path, folder or file (a link itself, not what it points to); nothing if it is absent."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def drop_restore_point(workdir: Path) -> None:
    shutil.rmtree(workdir / RESTORE_POINT, ignore_errors=True)


def recover_champion(workdir: Path) -> bool:
    """A restore point left behind means a promotion was cut off midway (killed during `dvc exp apply` or
    the push): put the champion's files back and `dvc checkout` its outputs. True when it did."""
    target = workdir / RESTORE_POINT
    if not target.is_dir():
        shutil.rmtree(target.with_name(target.name + ".partial"), ignore_errors=True)
        return False
    _logger().warning("a previous promotion was interrupted: restoring the champion from %s", target)
    # what the restore point holds, and anything dvc.yaml names that the champion did not have (the challenger's)
    for name in sorted({*champion_files(workdir), *(entry.name for entry in target.iterdir())}):
        saved, live = target / name, workdir / name
        remove(live)
        if saved.is_dir():
            shutil.copytree(saved, live)
        elif saved.is_file():
            shutil.copy2(saved, live)
    dvc(["checkout", "--force"], workdir, "recover")
    drop_restore_point(workdir)
    return True
