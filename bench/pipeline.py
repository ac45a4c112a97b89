"""whole pipeline: a cold `dvc repro` in a throwaway copy of the project, stage by stage; a no-op repro;
Prefect's overhead per stage (the clean stage's flow called as a flow vs its bare function, in a process of
its own with Prefect's temporary API: what a stage run alone with plain `dvc repro` pays).

Every stage reports to one Prefect server, as under `reweigh repro` (`make repro`).

Each stage runs as `dvc repro --single-item STAGE`, in pipeline order, inside its own spawned wrapper
process: its wall time includes DVC's own work (hashing, lock file), the stage's "done in X s" line is the
stage command's own time, and its peak RSS is the largest of the processes it ran (dvc itself, the stage
command), read with getrusage(RUSAGE_CHILDREN) after they exit.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from bench.common import ROOT, children_rss_mb, in_child, timer

# Copied when the project is not a git checkout (a git checkout copies what git tracks or would track).
PROJECT_FILES = ["adapters", "flows", "models", "reweigh", "dvc.yaml", "params.yaml", "pyproject.toml"]
_SKIP_TOP = {"data", "artifacts", "reports", "tests", "docs", "bench", ".venv", "dvc.lock"}


def deep_update(base: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def _project_files(root: Path) -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return PROJECT_FILES
    files = [f for f in out if f and f.split("/")[0] not in _SKIP_TOP and not f.startswith(".dvc/")
             and (root / f).is_file() and "__pycache__" not in f]
    return files or PROJECT_FILES


def make_project(dest: Path, params_update: dict, root: Path = ROOT) -> Path:
    """Copy the project's code (no outputs, no dvc.lock) into dest, apply params, make it a git + DVC repo."""
    dest.mkdir(parents=True)
    for name in _project_files(root):
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    shutil.copytree(root / ".dvc", dest / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    # byte-compiled, as a checkout is after its first run: with PYTHONDONTWRITEBYTECODE set (this machine)
    # every stage would compile the project's modules again, about a second each
    import compileall

    for folder in ("adapters", "flows", "models", "reweigh"):
        if (dest / folder).is_dir():
            compileall.compile_dir(dest / folder, quiet=1)
    params_file = dest / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params_file.write_text(yaml.safe_dump(deep_update(params, params_update), sort_keys=False))
    git = ["git", "-c", "user.email=bench@reweigh", "-c", "user.name=bench"]
    for cmd in (["git", "init", "-q"], git + ["add", "-A"], git + ["commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


# The Prefect API every project's stages report to, as under `reweigh repro` (what `make repro` runs): one
# server for the whole benchmark (bench/__main__.py), so a stage's time is its work, not a temporary API's start.
PREFECT_API: dict[str, str | None] = {"url": None}


def project_env(tmp: Path, project: Path, archive: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "DO_NOT_TRACK": "1",
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(project),
    })
    env.pop("PREFECT_API_URL", None)
    if PREFECT_API["url"]:
        env["PREFECT_API_URL"] = PREFECT_API["url"]
    env.pop("REWEIGH_PARAMS", None)
    if archive:
        env["REWEIGH_IMDB_ARCHIVE"] = archive
    return env


def _dvc(project: Path, env: dict, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=timeout)


def stage_order(project: Path, env: dict) -> list[str]:
    """Every stage of dvc.yaml in an order that runs each after the stages it depends on (`dvc dag`)."""
    from graphlib import TopologicalSorter

    r = _dvc(project, env, "dag", "--dot")
    if r.returncode != 0:
        raise RuntimeError(f"dvc dag failed: {r.stderr[-2000:]}")
    nodes = re.findall(r'^"([^"]+)";$', r.stdout, flags=re.M)
    sorter = TopologicalSorter({n: set() for n in nodes})
    for a, b in re.findall(r'^"([^"]+)" -> "([^"]+)";$', r.stdout, flags=re.M):
        sorter.add(b, a)
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():  # among the ready stages, keep dvc.yaml's order
        ready = sorted(sorter.get_ready(), key=lambda n: nodes.index(n) if n in nodes else len(nodes))
        order += ready
        sorter.done(*ready)
    return order


def _run_stage(project: str, env: dict, stage: str) -> dict[str, Any]:
    with timer() as t:
        r = _dvc(Path(project), env, "repro", "--single-item", stage)
    text = r.stdout + r.stderr
    done = re.findall(r"reweigh .+?: done in ([\d.]+) s", text)
    return {"wall_s": round(t["s"], 2), "stage_s": float(done[-1]) if done else None,
            "stage_peak_rss_mb": children_rss_mb(), "returncode": r.returncode,
            "tail": text[-1500:] if r.returncode else ""}


def _flow_calls(project: str, module: str, flow_name: str, bare: bool, calls: int) -> dict[str, Any]:
    os.chdir(project)
    sys.path.insert(0, project)
    import importlib

    with timer() as t_import:
        mod = importlib.import_module(module)
    flow = getattr(mod, flow_name)
    from flows.common import stop_temporary_prefect_servers

    times = []
    try:
        for _ in range(calls):
            with timer() as t:
                flow.fn() if bare else flow()
            times.append(round(t["s"], 3))
    finally:  # this worker ends without atexit handlers, where Prefect would stop its server
        stop_temporary_prefect_servers()
    return {"import_s": round(t_import["s"], 3), "call_s": times}


_WHY = {
    "ingest": "reads every review out of the tar.gz stream (gzip + one Python step per member) and validates the table with Great Expectations",
    "clean": "runs the polars cleaning chain over every review (mostly regex passes)",
    "tokenize": "trains the tokenizer on train + unsup text, then encodes every labelled review",
    "train": "trains a recurrent network on the CPU: a GRU reads each review one token after another (the time steps cannot run in parallel), forward and backward, every epoch, then predicts val and test",
    "baseline": "fits a linear baseline on the training text's n-grams (TF-IDF + logistic regression, or NB-SVM)",
    "ensemble": "averages the members' probabilities",
    "report": "scores every model, draws the figures and runs the attention examples",
}


def why(stage: str, stages: dict[str, Any], total: float) -> str:
    s = stages[stage]
    share = s["wall_s"] / total if total else 0.0
    return f"{stage} takes {share:.0%} of the cold repro ({s['wall_s']:.0f} s): it {_WHY.get(stage.split('@')[0], 'does the most work')}."


def run(work: Path, archive: str | None, params_update: dict) -> dict[str, Any]:
    tmp = work / "pipeline"
    project = make_project(tmp / "project", params_update)
    env = project_env(tmp, project, archive)
    order = stage_order(project, env)
    stages: dict[str, Any] = {}
    for stage in order:
        row = in_child(_run_stage, str(project), env, stage)
        row.pop("peak_rss_mb", None)  # the wrapper's own; the stage's is stage_peak_rss_mb
        stages[stage] = row
        (work / "pipeline_stages.json").write_text(__import__("json").dumps(stages, indent=2))  # progress, if cut short
        if row["returncode"] != 0:
            raise RuntimeError(f"stage {stage} failed:\n{row['tail']}")
    with timer() as t_noop:
        noop = _dvc(project, env, "repro")
    ran_again = re.findall(r"Running stage '([^']+)'", noop.stdout)

    flow_env = {k: env[k] for k in ("PREFECT_HOME", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
                                     "PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK")}
    as_flow = in_child(_flow_calls, str(project), "flows.clean", "clean_flow", False, 2, env=flow_env)
    bare = in_child(_flow_calls, str(project), "flows.clean", "clean_flow", True, 2, env=flow_env)
    slowest = max(stages, key=lambda s: stages[s]["wall_s"]) if stages else None
    return {
        "params_override": params_update,
        "stages": stages,
        "cold_repro_s": round(sum(s["wall_s"] for s in stages.values()), 2),
        "noop_repro_s": round(t_noop["s"], 2),
        "noop_stages_run": ran_again,
        "noop_returncode": noop.returncode,
        "slowest_stage": slowest,
        "slowest_stage_why": why(slowest, stages, sum(x["wall_s"] for x in stages.values())) if slowest else None,
        "prefect_overhead": {
            "stage": "clean",
            "as_flow_s": as_flow["call_s"],
            "bare_s": bare["call_s"],
            "first_call_overhead_s": round(as_flow["call_s"][0] - bare["call_s"][0], 3),
            "later_call_overhead_s": round(as_flow["call_s"][-1] - bare["call_s"][-1], 3),
            "as_flow_peak_rss_mb": as_flow["peak_rss_mb"],
            "bare_peak_rss_mb": bare["peak_rss_mb"],
        },
        "project": str(project),
    }
