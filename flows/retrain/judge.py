"""Champion against challenger: what a retrain changed, and whether its models replace the current ones.

The champion is the workspace as the retrain found it: its dvc.lock, reports/ and the outputs they name.
The challenger is a DVC experiment run in a temporary copy (`dvc exp run --temp`), so until it is promoted
nothing of the champion is touched, even when the run is killed. Both are read the same way, from their
dvc.lock: files that DVC caches come from the cache, the rest (reports/) from the workspace or from git.

Both sides' models are scored on the same rows with the same code (flows/predict.py), so the comparison
is like for like, on two sets: the challenger's test split (the newest data) and the reference set (the
champion's own test split, or the labelled file `retrain.reference` names), which a bad batch cannot
reach. The rule (retrain.promote):
- `always`: promote;
- `if_not_worse` (default): promote when, on each set, the challenger's best neural model scores at least
  the champion's best neural model minus `retrain.tolerance`, by `retrain.promote_metric` (macro F1 by
  default: with imbalanced classes accuracy hides a model that gave up on the small class), and is not
  worse at all with McNemar p < `retrain.significance`.
"""
from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from flows.retrain.commands import RetrainFailed, git
from reweigh.params import BASELINE_NAMES, ENSEMBLE, MODEL_NAMES, role

INGESTED = "data/ingested.parquet"
SOURCES = "reports/sources.json"
SCORED_MODELS = (*MODEL_NAMES, *BASELINE_NAMES, ENSEMBLE)  # the default set's; a side scores the models its dvc.lock ran


def lock_models(lock: dict[str, Any]) -> tuple[str, ...]:
    """The neural models a dvc.lock trained (its train@<name> stages: params.yaml's train.models then), in order."""
    found = tuple(s.split("@", 1)[1] for s in (lock.get("stages") or {}) if s.startswith("train@"))
    return found or MODEL_NAMES


def lock_baselines(lock: dict[str, Any]) -> tuple[str, ...]:
    """The baselines a dvc.lock fitted (its baseline@<name> stages); none for a lock from before baseline.models
    (its single `baseline` stage), whose baseline this code no longer loads: it never decides a promotion."""
    return tuple(s.split("@", 1)[1] for s in (lock.get("stages") or {}) if s.startswith("baseline@"))


def artifact_files(models: tuple[str, ...], baselines: tuple[str, ...] = (), ensemble: bool = False) -> tuple[str, ...]:
    """What `predict` needs for these models: the tokenizer, each neural model's .pt, each baseline's .pkl and,
    with an ensemble stage, artifacts/ensemble.json (its members and weights)."""
    return ("artifacts/tokenizer.json", *(f"artifacts/{m}.pt" for m in models), *(f"artifacts/{b}.pkl" for b in baselines),
            *((f"artifacts/{ENSEMBLE}.json",) if ensemble else ()))


def lock_artifact_files(lock: dict[str, Any]) -> tuple[str, ...]:
    """artifact_files of every model a dvc.lock ran."""
    return artifact_files(lock_models(lock), lock_baselines(lock), ENSEMBLE in (lock.get("stages") or {}))


ARTIFACT_FILES = artifact_files(MODEL_NAMES, BASELINE_NAMES, ensemble=True)  # the default set's


# ---------------------------------------------------------------- reading a side


@dataclass
class Side:
    """One version of the pipeline's results: its dvc.lock, its git-tracked reports and its revision."""

    name: str  # champion | challenger
    lock: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)  # git-tracked outputs (reports/...): path → text
    rev: str | None = None  # a git revision (the experiment's commit); None = the workspace


def experiment_rev(workdir: Path, name: str) -> str:
    """The commit DVC made for experiment `name` (refs/exps/<baseline>/<name>)."""
    refs = git(["for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"], workdir).splitlines()
    found = [line.split()[0] for line in refs if line.split()[-1].endswith(f"/{name}")]
    if not found:
        raise RetrainFailed("compare", f"DVC recorded no experiment named {name} (git for-each-ref refs/exps)")
    return found[0]


def challenger_side(workdir: Path, rev: str, tracked: list[str]) -> Side:
    lock = yaml.safe_load(git(["show", f"{rev}:dvc.lock"], workdir)) or {}
    files = {p: git(["show", f"{rev}:{p}"], workdir, check=False) for p in tracked}
    return Side("challenger", lock, {p: t for p, t in files.items() if t}, rev)


def champion_side(workdir: Path, tracked: list[str]) -> Side | None:
    """The workspace's results, or None when it has none yet (first run: nothing to defend)."""
    lock_file = workdir / "dvc.lock"
    if not lock_file.exists():
        return None
    lock = yaml.safe_load(lock_file.read_text()) or {}
    files = {p: (workdir / p).read_text() for p in tracked if (workdir / p).is_file()}
    return Side("champion", lock, files)


def fetch(workdir: Path, side: Side, paths: tuple[str, ...] | list[str], into: Path) -> dict[str, Path] | None:
    """Copy `paths` of this side (DVC outputs) into `into`, read through DVC's own file system at the side's
    revision (`dvc.api.DVCFileSystem`: the workspace, or the cache, or the remote for an experiment);
    {path: local copy}, or None when any is missing."""
    from dvc.api import DVCFileSystem

    into.mkdir(parents=True, exist_ok=True)
    fs = DVCFileSystem(str(workdir), rev=side.rev)
    out = {}
    for path in paths:
        if not fs.isfile(path):
            return None
        out[path] = into / Path(path).name
        fs.get_file(path, str(out[path]))
    return out


def materialise(workdir: Path, side: Side, into: Path) -> Path | None:
    """This side's tokenizer and models in `into`/artifacts/ (for flows.predict); None if any is missing."""
    target = into / "artifacts"
    return target if fetch(workdir, side, lock_artifact_files(side.lock), target) is not None else None


def ingested_table(workdir: Path, side: Side, into: Path) -> Path | None:
    """A local copy of this side's data/ingested.parquet, or None."""
    found = fetch(workdir, side, [INGESTED], into)
    return found[INGESTED] if found else None


# ---------------------------------------------------------------- what changed


def split_label_counts(parquet: Path | None) -> dict[str, dict[str, int]]:
    """{split: {label: rows}} of an ingested table (unlabelled rows counted under '(none)')."""
    if parquet is None or not parquet.is_file():
        return {}
    df = pl.read_parquet(parquet, columns=["split", "label"]).with_columns(pl.col("label").fill_null("(none)"))
    out: dict[str, dict[str, int]] = {}
    for split, label, n in df.group_by("split", "label").len().sort("split", "label").iter_rows():
        out.setdefault(split, {})[label] = n
    return out


def data_rows(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> list[tuple[str, str, int, int]]:
    """(split, label, rows before, rows after) for every split/label on either side, in a stable order."""
    keys = sorted({(s, lab) for side in (before, after) for s, labels in side.items() for lab in labels})
    return [(s, lab, before.get(s, {}).get(lab, 0), after.get(s, {}).get(lab, 0)) for s, lab in keys]


def metrics_files(workdir: Path) -> list[str]:
    """Every metrics file dvc.yaml declares (templated paths left out): the reports a side's git commit holds."""
    spec = yaml.safe_load((workdir / "dvc.yaml").read_text()) or {}
    found: list[str] = []
    for stage in (spec.get("stages") or {}).values():
        for entry in (stage.get("do") or stage).get("metrics") or []:
            path = next(iter(entry)) if isinstance(entry, dict) else entry
            if "${" not in path and path not in found:
                found.append(path)
    return found


def metric_changes(workdir: Path, challenger: Side) -> list[tuple[str, str, Any, Any]]:
    """(file, metric, champion's value, challenger's value) for each metric that differs: `dvc metrics diff`
    between the workspace (the champion) and the experiment's commit, templated metrics files included."""
    result = subprocess.run([sys.executable, "-m", "dvc", "metrics", "diff", str(challenger.rev), "--json"], cwd=workdir,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RetrainFailed("compare", f"`dvc metrics diff {challenger.rev} --json` exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    diff = json.loads(result.stdout or "{}")  # {file: {metric: {old: the experiment's, new: the workspace's}}}
    return [(file, name, change.get("new"), change.get("old"))
            for file, metrics in diff.items() for name, change in sorted(metrics.items())
            if change.get("old") != change.get("new")]


# ---------------------------------------------------------------- scoring and the decision


def predictions(artifacts: Path, texts: list[str], chunk: int = 256) -> dict[str, list[str]]:
    """{model: predicted label per text} for every model in `artifacts`, predicted in chunks."""
    from flows.predict import ensemble_spec, mix, predict_proba
    from models.registry import MODELS

    neural = tuple(m for m in MODELS if (artifacts / f"{m}.pt").is_file())  # what materialise copied: the side's set
    baselines = tuple(b for b in BASELINE_NAMES if (artifacts / f"{b}.pkl").is_file())
    spec_file = artifacts / f"{ENSEMBLE}.json"  # copied when the side's dvc.lock has an ensemble stage
    spec = ensemble_spec(artifacts) if spec_file.is_file() and json.loads(spec_file.read_text()).get("enabled") else None
    out: dict[str, list[str]] = {}
    for i in range(0, len(texts), chunk):
        probs = {m: predict_proba(texts[i:i + chunk], m, artifacts) for m in (*neural, *baselines)}  # (n, C), labels
        if spec:  # the members' probabilities averaged as `predict --model ensemble` does, without predicting twice
            probs[ENSEMBLE] = (mix(spec, probs), spec["labels"])
        for m, (p, names) in probs.items():
            out.setdefault(m, []).extend(names[k] for k in p.argmax(1))
    return out


def scores_of(predicted: dict[str, list[str]], labels: list[str]) -> dict[str, dict[str, float]]:
    """{model: {accuracy, macro_f1}} of each model's predictions against `labels`."""
    from sklearn.metrics import accuracy_score, f1_score

    scores = {}
    for model, guess in predicted.items():
        classes = sorted(set(labels) | set(guess))
        scores[model] = {"accuracy": float(accuracy_score(labels, guess)),
                         "macro_f1": float(f1_score(labels, guess, labels=classes, average="macro", zero_division=0))}
    return scores


def score(artifacts: Path, texts: list[str], labels: list[str], chunk: int = 256) -> dict[str, dict[str, float]]:
    """{model: {accuracy, macro_f1}} of every model in `artifacts` on (texts, labels)."""
    return scores_of(predictions(artifacts, texts, chunk), labels)


@dataclass
class Judgement:
    """One judged set of rows: each side's best neural model on it, and whether the challenger passes."""

    name: str  # "new test split" | "reference set"
    rows: int
    challenger: tuple[str, float]  # (best neural model, its score)
    champion: tuple[str, float] | None = None
    p: float | None = None  # McNemar's exact test, the two models' per-row correctness on these rows
    ok: bool = True
    reason: str = ""
    scores: dict[str, Any] = field(default_factory=dict)  # {champion | challenger: {model: {accuracy, macro_f1}} or None}


@dataclass
class Decision:
    promote: bool
    reason: str
    metric: str
    champion: tuple[str, float] | None = None  # (best neural model, its score) on the new test split
    challenger: tuple[str, float] | None = None
    judgements: list[Judgement] = field(default_factory=list)


def best_neural(scores: dict[str, dict[str, float]], metric: str) -> tuple[str, float]:
    name = max((m for m in scores if role(m) == "neural"), key=lambda m: scores[m][metric])
    return name, scores[name][metric]


def judge_set(name: str, labels: list[str], metric: str, tolerance: float, significance: float,
              champion: dict[str, list[str]] | None, challenger: dict[str, list[str]]) -> Judgement:
    """The challenger passes on these rows unless its best neural model is worse than the champion's by more
    than `tolerance`, or worse at all with McNemar p < `significance` (a drop too consistent to be noise)."""
    from flows.report.stats import mcnemar_exact

    scores = {"champion": scores_of(champion, labels) if champion else None, "challenger": scores_of(challenger, labels)}
    new = best_neural(scores["challenger"], metric)
    if champion is None:
        return Judgement(name, len(labels), new, reason="no champion to compare with", scores=scores)
    old = best_neural(scores["champion"], metric)
    y = np.array(labels, dtype=object)
    p = mcnemar_exact(np.array(champion[old[0]], dtype=object) == y, np.array(challenger[new[0]], dtype=object) == y)["p"]
    gap = new[1] - old[1]
    said = f"{name} ({len(labels):,} rows): challenger {new[0]} {metric} {new[1]:.4f} vs champion {old[0]} {old[1]:.4f} ({gap:+.4f}, McNemar p {p:.3g})"
    if gap < -tolerance:
        return Judgement(name, len(labels), new, old, p, False, f"{said}: worse by more than the tolerance {tolerance}", scores)
    if gap < 0 and p < significance:
        return Judgement(name, len(labels), new, old, p, False, f"{said}: worse, and significantly (p < {significance})", scores)
    return Judgement(name, len(labels), new, old, p, True, f"{said}: not worse beyond the tolerance {tolerance}", scores)


def decide(rule: str, metric: str, judgements: list[Judgement]) -> Decision:
    """Promote or not, and why: the challenger must pass on every judged set (the new test split first)."""
    first = judgements[0]
    if first.champion is None:
        return Decision(True, "there is no champion yet (the workspace had no trained models)", metric, None, first.challenger, judgements)
    failed = [j for j in judgements if not j.ok]
    if rule == "always":
        reason = "retrain.promote is always; " + "; ".join(j.reason for j in judgements)
        return Decision(True, reason, metric, first.champion, first.challenger, judgements)
    reason = "; ".join(j.reason for j in (failed or judgements))
    return Decision(not failed, reason, metric, first.champion, first.challenger, judgements)


def read_reference(path: Path) -> tuple[list[str], list[str]]:
    """A labelled file's (texts, labels): csv, tsv, parquet or jsonl with `text` and `label` columns."""
    readers = {".csv": pl.read_csv, ".tsv": lambda f: pl.read_csv(f, separator="\t"), ".parquet": pl.read_parquet,
               ".jsonl": pl.read_ndjson, ".ndjson": pl.read_ndjson}
    if not path.is_file():
        raise RetrainFailed("compare", f"retrain.reference: {path} does not exist; name a labelled file (text, label columns) "
                                       "or set it to null to judge on the champion's test split")
    if path.suffix.lower() not in readers:
        raise RetrainFailed("compare", f"retrain.reference: {path} is not one of {', '.join(readers)}")
    df = readers[path.suffix.lower()](path)
    missing = {"text", "label"} - set(df.columns)
    if missing or df.height == 0:
        raise RetrainFailed("compare", f"retrain.reference: {path} needs rows with columns text and label "
                                       f"(missing: {sorted(missing) or 'none'}, rows: {df.height}); columns: {df.columns}")
    df = df.select(pl.col("text").cast(pl.String), pl.col("label").cast(pl.String)).drop_nulls()
    return df["text"].to_list(), df["label"].to_list()


def newest_test_split(parquet: Path) -> tuple[list[str], list[str]]:
    df = pl.read_parquet(parquet, columns=["text", "label", "split"]).filter(pl.col("split") == "test")
    return df["text"].to_list(), df["label"].to_list()
