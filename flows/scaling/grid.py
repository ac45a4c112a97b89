"""The grid of a scaling run as DVC experiments: which points, queued how, run by `dvc queue start`, found again.

A point is one experiment of the workspace's commit: `-S train.label_limit=N` (a learning curve: fewer
labelled rows, the same test, the tokenizer and pretraining unchanged, so DVC reruns only the train,
baseline, ensemble and report stages), or, at full size, every model's widths times w with pretraining
matched (a size curve: DVC reruns pretraining too). The largest labelled size is the workspace's own run.

Points are named `scale-<kind><value>-<params hash>`: the hash covers params.yaml with the point's overrides, so
an experiment of other params never stands in for one of these, and a point that already succeeded for this
commit (`dvc exp show`) or is waiting in the queue (`dvc queue status`) is not queued again. So a killed run,
started again, runs only what is missing.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from flows.retrain.commands import git_identity_env, set_param_arg
from reweigh.params import Params, apply_overrides, load_raw_params, validate_params

WIDTH_KEYS = ("embedding_dim", "hidden_size", "filters", "ff")  # what a width multiplier scales, where a model has it
PRETRAIN_OF = {"embedding_dim": "dim", "hidden_size": "hidden_size"}  # the pretrained weights must match these


class ScalingError(RuntimeError):
    """A scaling run cannot go on; the message says what to do."""


@dataclass
class Point:
    kind: str                      # labels | width
    value: float                   # labelled rows, or the width multiplier
    overrides: dict[str, Any] = field(default_factory=dict)
    name: str = ""                 # the DVC experiment's name; "" for the workspace's own run

    @property
    def label(self) -> str:
        return f"{int(self.value):,} labels" if self.kind == "labels" else f"width x{self.value:g}"


def labelled_counts(workdir: Path) -> pl.DataFrame:
    """Rows of train and val per class (split, label_id, len), from the tokenize stage's table."""
    tokens = workdir / "data" / "tokens.parquet"
    if not tokens.is_file():
        raise ScalingError(f"{tokens} is missing: the scaling grid starts from a finished run (make repro, or dvc repro)")
    return (pl.scan_parquet(tokens).filter(pl.col("split").is_in(["train", "val"]))
            .group_by("split", "label_id").len().collect())


def smallest_size(counts: pl.DataFrame) -> int:
    """The fewest labelled rows for which train.label_limit keeps every class a train and a val row."""
    total = int(counts["len"].sum())
    least = int(counts["len"].min())  # the rarest class in its smaller split
    return min(total, math.ceil(0.5001 / least * total))  # its share, rounded, must reach one row


def label_sizes(total: int, smallest: int, minimum: int, points: int) -> list[int]:
    """Sizes from max(minimum, smallest) to total, evenly spaced on a log scale, total included; fewer when
    the range is short (consecutive sizes at least 1.5x apart)."""
    low = min(total, max(minimum, smallest))
    if low >= total:
        return [total]
    steps = min(points - 1, int(math.log(total / low) / math.log(1.5)))
    if steps < 1:
        return [total]
    sizes = [round(low * (total / low) ** (i / steps)) for i in range(steps + 1)]
    return sorted(set(sizes[:-1])) + [total]


def width_overrides(p: Params, multiplier: float) -> dict[str, Any]:
    """Every trained model's width knobs times `multiplier` (multiples of 8: attention heads divide them), and
    the pretraining's to match the models that start from it."""
    def scaled(v: int) -> int:
        return max(8, int(round(v * multiplier / 8)) * 8)

    out: dict[str, Any] = {}
    for name in p.train.models:
        section = getattr(p.model, name)
        for key in WIDTH_KEYS:
            if key in type(section).model_fields:
                out[f"model.{name}.{key}"] = scaled(getattr(section, key))
    for key, pre in PRETRAIN_OF.items():
        values = {v for k, v in out.items() if k.endswith("." + key)}
        if values:
            out[f"pretrain.{pre}"] = scaled(getattr(p.pretrain, pre))
    return out


def params_hash(workdir: Path, overrides: dict[str, Any]) -> str:
    raw = apply_overrides(load_raw_params(workdir / "params.yaml"), overrides)
    raw.pop("scaling", None)  # the grid's own settings do not change what a point trains
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:7]


def grid(workdir: Path, p: Params, quick: bool = False) -> tuple[Point, list[Point]]:
    """The workspace's own run (the full size) and the experiments to add to it."""
    counts = labelled_counts(workdir)
    total = int(counts["len"].sum())
    if p.train.label_limit:
        raise ScalingError(f"params.yaml sets train.label_limit={p.train.label_limit}: the grid's largest point is the "
                           "workspace's run on all labels; set it to 0 and reproduce (dvc repro) first")
    points = 3 if quick else p.scaling.points
    sizes = label_sizes(total, smallest_size(counts), p.scaling.min_labels, points)
    full = Point("labels", total)
    extra = []
    for n in sizes[:-1]:
        over = {"train.label_limit": n}
        extra.append(Point("labels", n, over, f"scale-n{n}-{params_hash(workdir, over)}"))
    for w in ([] if quick else p.scaling.widths):
        over = width_overrides(p, w)
        validate_params(apply_overrides(load_raw_params(workdir / "params.yaml"), over))
        extra.append(Point("width", w, over, f"scale-w{w:g}-{params_hash(workdir, over)}".replace(".", "_")))
    return full, extra


# ---------------------------------------------------------------- DVC experiments


def dvc(args: list[str], workdir: Path, timeout: float = 600) -> str:
    r = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=workdir, capture_output=True, text=True, timeout=timeout,
                       env=git_identity_env())
    if r.returncode != 0:
        raise ScalingError(f"`dvc {' '.join(args)}` exited {r.returncode}: {(r.stderr or r.stdout).strip()[-1500:]}")
    return r.stdout


def finished(workdir: Path) -> set[str]:
    """Names of this commit's experiments that have run to the end: DVC gives each a git ref,
    refs/exps/<commit[:2]>/<commit[2:]>/<name>. Read with git, not `dvc exp show`, while a queue worker runs:
    `exp show` collects from the worker's refs as they are written and can hang on one that is not there yet
    (it waited 900 s in CI; DVC's issues #8762, #7693)."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workdir, capture_output=True, text=True).stdout.strip()
    r = subprocess.run(["git", "for-each-ref", "--format=%(refname)", f"refs/exps/{head[:2]}/{head[2:]}/"],
                       cwd=workdir, capture_output=True, text=True)
    return {line.rsplit("/", 1)[-1] for line in r.stdout.split()} if head else set()


def experiments(workdir: Path, tries: int = 3) -> dict[str, dict[str, Any]]:
    """This commit's experiments by name: state (success, queued, running, failed) and, when done, metrics and params.
    Called only when no queue worker is running (see `finished`); a hung or failed call is tried again."""
    for attempt in range(1, tries + 1):
        try:
            shown = json.loads(dvc(["exp", "show", "--json"], workdir, timeout=180) or "null")
            break
        except (ScalingError, subprocess.TimeoutExpired):
            if attempt == tries:
                raise
            time.sleep(5)
    out: dict[str, dict[str, Any]] = {}
    for entry in shown or []:
        for exp in entry.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state") or "success"
            for rev in exp.get("revs") or []:
                name = rev.get("name") or exp.get("name")
                data = rev.get("data") or {}
                if name:
                    out[name] = {"state": state if not rev.get("error") else "failed", "rev": rev.get("rev"),
                                 "metrics": {f: (v or {}).get("data", {}) for f, v in (data.get("metrics") or {}).items()},
                                 "params": ((data.get("params") or {}).get("params.yaml") or {}).get("data", {})}
    return out


def queue_status(workdir: Path) -> tuple[dict[str, str], bool]:
    """`dvc queue status`, read once: each task's name and state (queued, running, failed, success), and whether
    a worker is alive (active or idle)."""
    r = subprocess.run([sys.executable, "-m", "dvc", "queue", "status"], cwd=workdir, capture_output=True, text=True, timeout=300)
    states = {}
    for line in r.stdout.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 4 and cells[0] != "Task":
            states[cells[1]] = cells[3].lower()
    found = re.search(r"Worker status:\s*(\d+) active, (\d+) idle", r.stdout)
    return states, bool(found and (int(found.group(1)) or int(found.group(2))))


def copy_paths(workdir: Path, p: Params) -> list[str]:
    """Data an experiment's temporary copy needs but git does not hold: a path of dataset.options inside the
    project that is untracked or ignored (a table under data/raw/, say)."""
    paths = []
    for value in p.dataset.options.values():
        if not isinstance(value, str) or not value:
            continue
        path = Path(value) if Path(value).is_absolute() else workdir / value
        try:
            rel = path.resolve().relative_to(workdir.resolve())
        except ValueError:
            continue  # outside the project: the experiment reads it where it is
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", str(rel)], cwd=workdir, capture_output=True).returncode == 0
        if path.exists() and not tracked and str(rel) != ".":
            paths.append(str(rel))
    return paths


def enqueue(workdir: Path, points: list[Point], paths: list[str]) -> None:
    for point in points:
        args = ["exp", "run", "--queue", "-n", point.name]
        for key, value in point.overrides.items():
            args += ["-S", set_param_arg(key, value)]
        for path in paths:
            args += ["--copy-paths", path]
        dvc(args, workdir)


def forget(workdir: Path, names: list[str]) -> None:
    """Drop the queue's tasks of these experiments (failed ones, or 'running' ones whose worker is gone)."""
    for args in (["queue", "kill", "--force", *names], ["queue", "remove", *names]):
        subprocess.run([sys.executable, "-m", "dvc", *args], cwd=workdir, capture_output=True, text=True, timeout=300)


def start(workdir: Path, jobs: int) -> None:
    """`dvc queue start`: its worker runs on in the background and inherits the command's output, so the output
    goes to a file (.dvc/tmp/reweigh-queue-start.log), never to a pipe: reading a pipe would wait for the worker."""
    log = workdir / ".dvc" / "tmp" / "reweigh-queue-start.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        code = subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "--jobs", str(jobs)], cwd=workdir,
                              stdout=out, stderr=subprocess.STDOUT, env=git_identity_env(), timeout=600).returncode
    if code != 0:
        raise ScalingError(f"`dvc queue start --jobs {jobs}` exited {code}: {log.read_text()[-1500:]}")


def wait(workdir: Path, names: list[str], poll: float = 10.0, timeout: float | None = None,
         say=print) -> dict[str, str]:
    """Until each named experiment has succeeded or failed (or the queue's workers are gone): name → state."""
    deadline = None if timeout is None else time.monotonic() + timeout
    reported: dict[str, str] = {}
    while True:
        done = finished(workdir)
        queued, alive = queue_status(workdir)
        states = {n: ("success" if n in done else queued.get(n, "missing")) for n in names}
        for n, s in states.items():
            if reported.get(n) != s:
                say(f"  {n}: {s}")
                reported[n] = s
        pending = [n for n, s in states.items() if s in ("queued", "running")]
        if not pending:
            return states
        if not alive:
            if not any(s == "running" for s in states.values()):
                return states
        if deadline is not None and time.monotonic() > deadline:
            raise ScalingError(f"experiments still pending after {timeout:.0f} s: {', '.join(pending)}")
        time.sleep(poll)
