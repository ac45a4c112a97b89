"""pretrain: does the pretrain stage's embedding help? Random vs pretrained init of the neural models (both GRUs;
--quick: the GRU), with
every labelled training review and with few (dataset.train_limit), beside the TF-IDF baseline of each run.

One throwaway copy of the project (bench/pipeline.make_project; --quick: a copy of the pipeline section's
reproduced project, so the first run has nothing to do), four `dvc repro` runs in it, params.yaml edited
between them. DVC reruns only what changed: switching init reruns the two train stages and the
report; limiting the training reviews reruns everything from ingest (the tokenizer and the embedding read
the training text too). Unlabelled text and the test split are the same in every run. Each run's figures
come from the project: reports/metrics.json (test accuracy, macro F1), reports/train/<model>.json (epochs,
stop reason, seconds), data/dataset.json (rows per split), reports/pretrain.json (tokens), and the pretrain
stage's "reweigh pretrain: done in X s, peak RSS Y MiB" line in dvc's output.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from bench.accuracy import models_in
from bench.common import timer
from bench.pipeline import _dvc, deep_update, make_project, project_env

NEURAL = ("gru", "gru_attention")
RUNS = (("all", "pretrained"), ("all", "random"), ("limited", "random"), ("limited", "pretrained"))  # one dataset switch
REPRO_TIMEOUT_S = 12 * 3600  # full IMDB: both models train until patience stops them (at most train.epochs)
_DONE = re.compile(r"reweigh pretrain: done in ([\d.,]+) s, peak RSS ([\d.,]+) MiB")


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _set_params(project: Path, update: dict) -> None:
    path = project / "params.yaml"
    path.write_text(yaml.safe_dump(deep_update(yaml.safe_load(path.read_text()), update), sort_keys=False))


def _read(project: Path, name: str) -> dict[str, Any]:
    return json.loads((project / name).read_text())


def _results(project: Path, dataset: str, init: str, neural: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """This run's row per neural model, and the TF-IDF baseline's row (baseline@tfidf_lr)."""
    metrics = models_in(_read(project, "reports/metrics.json"))
    rows = []
    for model in (*neural, "tfidf_lr"):
        m, t = metrics[model], _read(project, f"reports/train/{model}.json")
        is_neural = model in neural  # the baseline has no epochs
        rows.append({"dataset": dataset, "model": model, "init": init if is_neural else None,
                     "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "best_epoch": t["best_epoch"] if is_neural else None,
                     "epochs": t["epochs"] if is_neural else None, "stop_reason": t["stop_reason"] if is_neural else None,
                     "train_seconds": t["train_seconds"]})
    return rows[:-1], rows[-1]


def _gains(models: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Test accuracy of pretrained minus random init, percentage points, per dataset and model."""
    acc = {(r["dataset"], r["model"], r["init"]): r["accuracy"] for r in models}
    return {d: {m: round(100 * (acc[d, m, "pretrained"] - acc[d, m, "random"]), 2)
                for m in dict.fromkeys(r["model"] for r in models if r["dataset"] == d)}
            for d in dict.fromkeys(r["dataset"] for r in models)}


def _neural(project: Path) -> list[str]:
    """The neural models the project's params train (train.models), in NEURAL's order."""
    trained = yaml.safe_load((project / "params.yaml").read_text())["train"].get("models") or NEURAL
    return [m for m in NEURAL if m in trained]


def _copy_reproduced(source: Path, dest: Path) -> Path:
    """A copy of a project the pipeline section reproduced with the same params: git, DVC cache, outputs."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, dest, symlinks=True, ignore=shutil.ignore_patterns("tmp"))
    return dest


def run(work: Path, archive: str | None, params_update: dict, train_limit: int,
        reuse: tuple[Path, dict[str, Any]] | None = None) -> dict[str, Any]:
    """`reuse`: (project, its stages) the pipeline section reproduced with params_update (--quick): the first
    run starts from a copy of it and has nothing to do, its pretrain figures are that section's."""
    tmp = work / "pretrain"
    if reuse:
        project = _copy_reproduced(reuse[0], tmp / "project")
    else:
        project = make_project(tmp / "project", params_update)
    env = project_env(tmp, project, archive)
    out: dict[str, Any] = {"params_override": params_update, "train_limit": train_limit, "runs": [], "models": [],
                           "baseline": {}, "datasets": {}, "pretrain": {}}
    neural = _neural(project)  # the same in every run: only the dataset and init change
    for dataset, init in RUNS:
        _set_params(project, {"dataset": {"train_limit": train_limit if dataset == "limited" else 0},
                              "model": {m: {"init": init} for m in neural}})
        with timer() as t:
            r = _dvc(project, env, "repro", timeout=REPRO_TIMEOUT_S)
        text = r.stdout + r.stderr
        if r.returncode != 0:
            raise RuntimeError(f"dvc repro ({dataset} labelled, init {init}) failed:\n{text[-3000:]}")
        out["runs"].append({"dataset": dataset, "init": init, "repro_s": round(t["s"], 1),
                            "stages_run": re.findall(r"Running stage '([^']+)'", text)})
        if reuse and len(out["runs"]) == 1:
            out["runs"][0]["reused"] = "the pipeline section's project"
        models, baseline = _results(project, dataset, init, neural)
        out["models"] += models
        if dataset not in out["datasets"]:  # the baseline and the embedding depend on the dataset only
            out["baseline"][dataset] = baseline
            out["datasets"][dataset] = _read(project, "data/dataset.json")["rows"]
            stats, done = _read(project, "reports/pretrain.json"), _DONE.search(text)
            seconds, rss = (_number(done[1]), _number(done[2])) if done else (None, None)
            if not done and reuse:  # the stage ran in the pipeline section
                ran = reuse[1].get("pretrain") or {}
                seconds, rss = ran.get("stage_s"), ran.get("stage_peak_rss_mb")
            out["pretrain"][dataset] = {"seconds": seconds, "peak_rss_mib": rss,
                                        "tokens": stats["tokens"], "documents": stats["documents"], "dim": stats["dim"]}
    out["gain_pts"] = _gains(out["models"])
    return out
