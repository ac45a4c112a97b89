"""retrain: (dvc pull) → dvc repro | dvc exp run -S … → dvc metrics diff → dvc push, as one Prefect flow.

DVC decides what is reproduced and where results are versioned; this flow only runs its commands in
order, streams their output into the run's logs, and publishes what changed as a Prefect artifact.

- Overrides (`overrides`, or the named `dataset`, `epochs`, `embedding_dim`, `hidden_size`, `vocab_size`,
  `device` parameters) run `dvc exp run -S key=value …` in the workspace: DVC records the experiment and
  leaves its params, dvc.lock and outputs in place. Without overrides, plain `dvc repro`.
- Metrics are whatever dvc.yaml declares: `dvc metrics diff --all --json` against `baseline` (HEAD: the
  last committed, recorded metrics) gives the old → new table.
- A failing step stops the flow with the step (pull, reproduce, compare, push) and, for reproduce, the
  DVC stage that failed, both in the flow run's state message and in a `retrain-failure` artifact.
- One retrain per workspace at a time: an exclusive lock file under .dvc/tmp (waits up to
  `lock_timeout` seconds, then fails saying who holds it). Deployments add Prefect's own limit on top.

Served on a cron schedule by `reweigh serve` (flows/serve.py); run once with `reweigh retrain`.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
from prefect import flow, get_run_logger, task
from prefect.exceptions import MissingContextError
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run
from reweigh.params import MODEL_NAMES, Params, format_errors

LOCK_FILE = Path(".dvc") / "tmp" / "reweigh-retrain.lock"
REPORT_KEY = "retrain-report"
FAILURE_KEY = "retrain-failure"


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
    deadline = time.monotonic() + timeout if timeout else None
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            lines.append(line)
            if line.strip():
                tail.append(line)
                logger.info("%s", line)
            if deadline and time.monotonic() > deadline:
                proc.kill()
                raise RetrainFailed(step, f"`dvc {' '.join(args)}` ran past {timeout:.0f} s and was stopped")
        code = proc.wait()
    output = "\n".join(lines)
    if code != 0:
        stage = failed_stage(output)
        raise RetrainFailed(step, f"`dvc {' '.join(args)}` exited {code}:\n" + "\n".join(tail), stage)
    return output


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
        if key in ("embedding_dim", "hidden_size"):
            merged.update({f"model.{m}.{key}": value for m in MODEL_NAMES})
        else:
            merged[{"dataset": "dataset.name", "epochs": "train.epochs", "vocab_size": "tokenize.vocab_size",
                    "device": "train.device"}[key]] = value
    params_file = workdir / "params.yaml"
    raw = yaml.safe_load(params_file.read_text()) if params_file.exists() else {}
    for key, value in merged.items():
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RetrainFailed("parameters", f"override '{key}': '{part}' is not a section of params.yaml")
        node[leaf] = value
    try:
        Params.model_validate(raw)
    except ValidationError as exc:  # the same message `reweigh` gives for a bad params.yaml
        raise RetrainFailed("parameters", format_errors(params_file, exc)) from None
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


# ---------------------------------------------------------------- the steps


@task(name="dvc pull", cache_policy=NO_CACHE)
def dvc_pull(workdir: Path, remote: str | None) -> None:
    dvc(["pull", *(["-r", remote] if remote else [])], workdir, "pull")


@task(name="dvc repro", cache_policy=NO_CACHE)
def dvc_repro(workdir: Path, overrides: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    """`dvc repro`, or `dvc exp run -S …` when there are overrides; what ran and the experiment's name."""
    if overrides:
        args = ["exp", "run"] + [a for k, v in overrides.items() for a in ("-S", set_param_arg(k, v))]
        output = dvc(args, workdir, "reproduce", env=git_identity_env(), timeout=timeout)
        found = re.search(r"Ran experiment\(s\):\s*(\S+)", output)
        return {"command": "dvc " + " ".join(args), "experiment": found.group(1) if found else None}
    dvc(["repro"], workdir, "reproduce", timeout=timeout)
    return {"command": "dvc repro", "experiment": None}


@task(name="dvc metrics diff", cache_policy=NO_CACHE)
def dvc_metrics_diff(workdir: Path, baseline: str) -> dict[str, dict[str, dict[str, Any]]]:
    """{metrics file: {metric: {old, new, diff}}} from `dvc metrics diff BASELINE --all` (workspace = new)."""
    has_baseline = subprocess.run(["git", "rev-parse", "--verify", "--quiet", baseline], cwd=workdir, capture_output=True).returncode == 0
    if has_baseline:
        diff = dvc_json(["metrics", "diff", baseline, "--all"], workdir, "compare")
    else:  # no commit to compare with yet: every metric is new
        shown = dvc_json(["metrics", "show"], workdir, "compare")
        files = next(iter(shown.values()), {}).get("data", {})
        diff = {f: {k: {"old": None, "new": v} for k, v in _flatten(d.get("data", {})).items()} for f, d in files.items()}
    logger = _logger()
    for file, metrics in diff.items():
        for name, values in metrics.items():
            logger.info("%s %s: %s → %s", file, name, values.get("old"), values.get("new"))
    return diff


@task(name="dvc push", cache_policy=NO_CACHE)
def dvc_push(workdir: Path, remote: str | None) -> None:
    dvc(["push", *(["-r", remote] if remote else [])], workdir, "push")


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ---------------------------------------------------------------- the report


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def metrics_table(diff: dict[str, dict[str, dict[str, Any]]]) -> str:
    """One row per metric, the changed ones first."""
    lines = ["| file | metric | old | new | change |", "|---|---|---|---|---|"]
    rows = [(v.get("old") == v.get("new"), file, name, v) for file, metrics in diff.items() for name, v in metrics.items()]
    for _, file, name, v in sorted(rows, key=lambda row: row[:3]):
        change = v.get("diff")
        shown = "" if change is None else (f"{change:+.4g}" if isinstance(change, (int, float)) else str(change))
        lines.append(f"| {file} | {name} | {_fmt(v.get('old'))} | {_fmt(v.get('new'))} | {shown} |")
    if len(lines) == 2:
        lines.append("| — | no metrics declared in dvc.yaml | | | |")
    return "\n".join(lines)


def remote_url(workdir: Path, remote: str | None) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", "remote", "list"], cwd=workdir, capture_output=True, text=True, timeout=60)
    remotes = dict(line.split(None, 1) for line in result.stdout.splitlines() if len(line.split(None, 1)) == 2)
    if remote:
        return f"{remote}: {remotes.get(remote, '?').split()[0]}"
    default = subprocess.run([sys.executable, "-m", "dvc", "remote", "default"], cwd=workdir, capture_output=True, text=True, timeout=60).stdout.strip()
    return f"{default}: {remotes.get(default, '?').split()[0]}" if default else "no default remote"


def report_markdown(workdir: Path, ran: dict[str, Any], overrides: dict[str, Any], diff: dict, timings: dict[str, float],
                    pushed_to: str | None, baseline: str) -> str:
    reports = workdir / "reports"
    readable = [p for p in (reports / "report.md", reports / "index.html", reports / "report.html") if p.exists()]
    lines = [
        f"# Retrain `{flow_run.get_name() or 'local'}`: completed",
        "",
        f"- workspace: `{workdir}`",
        f"- ran: `{ran['command']}`" + (f" (experiment `{ran['experiment']}`)" if ran.get("experiment") else ""),
        f"- overrides: {', '.join(f'`{k}={v}`' for k, v in overrides.items()) or 'none (params.yaml as it is)'}",
        f"- report: `{readable[0] if readable else reports}`" + (" (metrics: " + ", ".join(f"`{workdir / f}`" for f in sorted(diff)) + ")" if diff else ""),
        f"- pushed to DVC remote: `{pushed_to}`" if pushed_to else "- not pushed (push=false)",
        f"- steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()),
        "",
        f"## Metrics: `{baseline}` (old) → this run (new)",
        "",
        metrics_table(diff),
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- the flow


def accelerator() -> str:
    """What training will use where train.device is auto (the worker's GPU when it has one)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return "cpu (torch missing)"
    return f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"


@flow(name="retrain", log_prints=True)
def retrain_flow(
    workdir: str | None = None,
    overrides: dict[str, Any] | None = None,
    dataset: str | None = None,
    epochs: int | None = None,
    embedding_dim: int | None = None,
    hidden_size: int | None = None,
    vocab_size: int | None = None,
    device: str | None = None,
    pull: bool = False,
    push: bool = True,
    remote: str | None = None,
    baseline: str = "HEAD",
    lock_timeout: float = 600.0,
    stage_timeout: float | None = None,
) -> dict[str, Any]:
    """Retrain the pipeline in `workdir` (default: the current directory, the project root).

    overrides: params.yaml keys → values, e.g. {"tokenize.vocab_size": 8000, "train.lr": 0.001}; they and
    the named parameters (dataset → dataset.name, epochs → train.epochs, embedding_dim / hidden_size →
    every model, vocab_size → tokenize.vocab_size, device → train.device: auto, cpu or cuda) run `dvc exp run -S …`.
    pull / push: `dvc pull` before and `dvc push` after (to `remote`, else the default remote).
    baseline: the git revision whose recorded metrics are "old" in the comparison.
    """
    root = Path(workdir or os.environ.get("REWEIGH_WORKDIR") or Path.cwd()).resolve()
    logger = _logger()
    if not (root / "dvc.yaml").exists():
        raise RetrainFailed("setup", f"{root} has no dvc.yaml: pass workdir= the project root")
    timings: dict[str, float] = {}
    step = "parameters"
    try:
        changes = collect_overrides(root, overrides or {}, {"dataset": dataset, "epochs": epochs, "embedding_dim": embedding_dim,
                                                            "hidden_size": hidden_size, "vocab_size": vocab_size, "device": device})
        logger.info("workspace %s; overrides %s; training on %s", root, changes or "none", accelerator())
        with workspace_lock(root, lock_timeout):
            if pull:
                step, started = "pull", time.perf_counter()
                dvc_pull(root, remote)
                timings["pull"] = time.perf_counter() - started
            step, started = "reproduce", time.perf_counter()
            ran = dvc_repro(root, changes, stage_timeout)
            timings["reproduce"] = time.perf_counter() - started
            step, started = "compare", time.perf_counter()
            diff = dvc_metrics_diff(root, baseline)
            timings["compare"] = time.perf_counter() - started
            pushed_to = None
            if push:
                step, started = "push", time.perf_counter()
                dvc_push(root, remote)
                pushed_to = remote_url(root, remote)
                timings["push"] = time.perf_counter() - started
    except RetrainFailed as exc:
        _publish_failure(exc, root)
        raise
    except Exception as exc:  # anything unexpected still says which step it broke
        failure = RetrainFailed(step, f"{type(exc).__name__}: {exc}")
        _publish_failure(failure, root)
        raise failure from exc
    create_markdown_artifact(
        key=REPORT_KEY,
        markdown=report_markdown(root, ran, changes, diff, timings, pushed_to, baseline),
        description="Retrain: metrics old vs new, the report's location, what ran",
    )
    print(f"retrain: done in {sum(timings.values()):.1f} s ({ran['command']})")
    return {"workdir": str(root), **ran, "overrides": changes, "metrics": diff, "timings": timings, "pushed_to": pushed_to}


def _publish_failure(exc: RetrainFailed, root: Path) -> None:
    with contextlib.suppress(Exception):
        create_markdown_artifact(
            key=FAILURE_KEY,
            markdown=f"# Retrain `{flow_run.get_name() or 'local'}`: FAILED at step `{exc.step}`"
                     + (f", DVC stage `{exc.stage}`" if exc.stage else "")
                     + f"\n\n- workspace: `{root}`\n\n```\n{exc.detail[-4000:]}\n```\n",
            description=f"Retrain failed at {exc.step}" + (f" ({exc.stage})" if exc.stage else ""),
        )


if __name__ == "__main__":
    retrain_flow()
