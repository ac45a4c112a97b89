"""End to end through `dvc repro`: train@gru, train@gru_attention, baseline@tfidf_lr, baseline@nbsvm, ensemble and
report on docs/adapters.md's three-class CSV (the table adapter, no code, the guide's params block), then what
DVC and `predict` make of the outputs; and the report's numbers.
"""
from __future__ import annotations

import csv
import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import NEUTRAL, Project, guide_example, make_project, select_dataset

LABELS = ["negative", "neutral", "positive"]  # docs/adapters.md's three-class example
MODELS = ["gru", "gru_attention", "tfidf_lr", "nbsvm", "ensemble"]  # the default set: neural, baselines, the ensemble
CUES = {
    "negative": "awful terrible boring hated dreadful dull".split(),
    "neutral": "average okay mediocre passable forgettable fine".split(),
    "positive": "great wonderful superb loved brilliant charming".split(),
}
PER_LABEL = 60  # the guide's test_fraction 0.25: 15 test rows per class
GUIDE_CSV = "data/raw/three_class.csv"


def write_reviews_csv(path: Path, per_label: int = PER_LABEL, seed: int = 0) -> None:
    """The guide's file: columns review and sentiment, a quoted comma and quotes in each text, rows shuffled."""
    rng = random.Random(seed)
    rows = []
    for i in range(per_label * len(LABELS)):
        label = LABELS[i % len(LABELS)]
        words = [rng.choice(CUES[label]) if rng.random() < 0.25 else rng.choice(NEUTRAL) for _ in range(rng.randint(15, 40))]
        words[3] += ","
        rows.append((f'{" ".join(words).capitalize()} "{rng.choice(CUES[label])}".', label))
    rng.shuffle(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["review", "sentiment"])
        writer.writerows(rows)


@pytest.fixture(scope="module")
def three_class(tmp_path_factory):
    """Worked example 2 of docs/adapters.md as a user follows it: the CSV under data/raw/, the guide's params
    block copied into params.yaml (the table adapter, no code), `dvc repro`. Small training knobs on top."""
    project = make_project(tmp_path_factory.mktemp("three-class"))
    write_reviews_csv(project.path / GUIDE_CSV)
    select_dataset(project, guide_example("params.yaml (three-class CSV)"))
    project.set_params({"dataset": {"val_fraction": 0.15}, "train": {"epochs": 3, "lr": 0.01},
                        "report": {"attention_examples": 2}})
    project.validated = project.run(sys.executable, "-m", "reweigh.cli", "validate").stdout
    project.dvc("repro")
    project.first_metrics = (project.path / "reports" / "metrics.json").read_bytes()
    project.first_embeddings = (project.path / "reports" / "embeddings.json").read_bytes()
    return project


@pytest.mark.slow
def test_three_class_csv_from_the_guide_runs_through_dvc_repro(three_class):
    assert "dataset 'three_class.csv' passed" in three_class.validated, three_class.validated  # the file's name
    assert "dataset 'table'" not in three_class.validated

    info = json.loads((three_class.path / "data" / "dataset.json").read_text())
    assert info["name"] == "table" and info["title"] == "three_class.csv" and info["labels"] == LABELS
    assert sum(info["rows"].values()) == PER_LABEL * len(LABELS)

    import polars as pl
    ingested = pl.read_parquet(three_class.path / "data" / "ingested.parquet")
    test_counts = dict(ingested.filter(pl.col("split") == "test").group_by("label").len().iter_rows())
    assert test_counts == {label: 15 for label in LABELS}  # test_fraction 0.25 of 60, per class
    assert ingested["text"].str.contains(",", literal=True).all()  # quoted commas stayed inside the text
    tokens = pl.read_parquet(three_class.path / "data" / "tokens.parquet")
    assert sorted(tokens["label_id"].unique().to_list()) == [0, 1, 2]

    report = (three_class.path / "reports" / "report.md").read_text()
    assert "\nDataset `three_class.csv`: classes negative, neutral, positive; rows per split " in report
    assert "Dataset `table`" not in report
    confusions = list((three_class.path / "reports" / "plots").rglob("confusion*/*.csv"))
    assert confusions, "the report writes confusion data for `dvc plots`"


def stages_run(result) -> set[str]:
    """The stages `dvc repro` ran, leaving out `sources`, the freshness check every repro runs."""
    ran = {line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage '")}
    assert "sources" in ran, result.stdout[-2000:]
    return ran - {"sources"}


def stale(project) -> dict:
    """`dvc status`, less the `sources` check's constant 'always changed'."""
    status = json.loads(project.dvc("status", "--json").stdout)
    assert status.pop("sources", None) == ["always changed"], status
    return status


@pytest.mark.slow
def test_report_files_are_complete_and_well_formed(three_class):
    reports = three_class.path / "reports"
    metrics = json.loads((reports / "metrics.json").read_text())
    comparisons = metrics.pop("comparisons")
    assert list(metrics) == MODELS
    for name, m in metrics.items():
        for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc", "pr_auc"):
            assert 0 <= m[key] <= 1, (name, key, m[key])
        assert m["parameters"] > 0
        for key in ("accuracy", "f1_macro"):  # the bootstrap interval holds the score itself
            assert m[f"{key}_ci_low"] <= m[key] <= m[f"{key}_ci_high"], (name, key)
        assert list(m["per_class"]) == LABELS and sum(c["support"] for c in m["per_class"].values()) == 45  # 25% of 180
        assert min(c["f1"] for c in m["per_class"].values()) <= m["f1_macro"] <= max(c["f1"] for c in m["per_class"].values())
        assert "threshold" in m["thresholds"]["target_recall"], "recall >= 90% is always reachable on validation"
    assert set(comparisons) == {f"{m}_vs_{b}" for m in ("gru", "gru_attention") for b in ("tfidf_lr", "nbsvm")} | {
        "nbsvm_vs_tfidf_lr", "gru_attention_vs_gru"} | {f"ensemble_vs_{m}" for m in MODELS[:4]}
    for key, c in comparisons.items():
        first, second = key.split("_vs_")
        assert c["accuracy_diff"] == pytest.approx(metrics[first]["accuracy"] - metrics[second]["accuracy"], abs=1e-5)
        assert 0 <= c["mcnemar_p"] <= 1 and c["accuracy_diff_ci_low"] <= c["accuracy_diff"] <= c["accuracy_diff_ci_high"]
        unsure = c["mcnemar_p"] >= 0.05 or c["accuracy_diff_ci_low"] <= 0 <= c["accuracy_diff_ci_high"]
        assert c["accuracy_verdict"] in (-1, 0, 1) and (c["accuracy_verdict"] == 0) == unsure, key
    assert metrics["gru"]["epochs"] >= 1 and metrics["gru_attention"]["best_epoch"] >= 1
    assert metrics["tfidf_lr"]["accuracy"] > 0.5 and metrics["nbsvm"]["accuracy"] > 0.5, "the cues make this an easy task"
    assert all(0 <= metrics[m]["val_accuracy"] <= 1 for m in MODELS)
    timings = json.loads((reports / "timings.json").read_text())
    assert all(timings[m]["train_seconds"] >= 0 for m in metrics)

    pretrain = json.loads((reports / "pretrain.json").read_text())
    read = pretrain["language_model_read"]  # pretrain.lm_max_length 32 (tests/conftest.py), reviews of 15-40 words
    assert pretrain["method"] == "ppmi_svd+bilm" and read["longest"] == 32 and read["tokens"] < pretrain["tokens"], pretrain
    for name in ("gru", "gru_attention"):
        trained = json.loads((reports / "train" / f"{name}.json").read_text())
        assert "GRU encoder" in trained["init"], (name, trained["init"])  # both start from the language model
        history = trained["history"]
        assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
        assert (three_class.path / "artifacts" / f"{name}.pt").exists()
    import polars as pl
    tokens = pl.read_parquet(three_class.path / "data" / "tokens.parquet", columns=["id", "split"])
    for name in MODELS:  # every model predicts val (thresholds) and test (scores)
        preds = pl.read_parquet(three_class.path / "data" / "predictions" / f"{name}.parquet")
        assert preds.columns == ["id", "split", "label_id", "prob_0", "prob_1", "prob_2"]
        for part in ("val", "test"):
            assert sorted(preds.filter(pl.col("split") == part)["id"]) == sorted(tokens.filter(pl.col("split") == part)["id"])
    assert np.allclose(preds.select(pl.sum_horizontal("prob_0", "prob_1", "prob_2")).to_series().to_numpy(), 1, atol=1e-4)

    figures = reports / "figures"
    expected = {*(f"confusion_{m}.png" for m in MODELS), "pr_curves.png",
                "pr_per_class.png", "thresholds.png", "training_curves.png", "shapes.png", "attention_1.png", "attention_2.png",
                "embedding_space.png"}
    assert expected <= {p.name for p in figures.glob("*.png")}
    for png in figures.glob("*.png"):
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 100, png.name
    report = (reports / "report.md").read_text()
    assert "| accuracy |" in report and "| accuracy, 95% CI | [" in report
    from reweigh.machine import one_line  # the machine the models trained on, under the metrics table
    assert f"the machine that ran the stage ({one_line(trained['machine'])})" in report
    # The headline names a winner exactly when the top two models' difference is significant.
    top, second = sorted(metrics, key=lambda m: -metrics[m]["accuracy"])[:2]
    pair = comparisons.get(f"{top}_vs_{second}") or {"accuracy_verdict": -comparisons[f"{second}_vs_{top}"]["accuracy_verdict"]}
    headline = report.split("## Verdict")[1].strip().splitlines()[0]
    assert ("wins" in headline) == (pair["accuracy_verdict"] == 1) and ("No significant winner" in headline) != ("wins" in headline)
    assert "### Is the difference real?" in report and "McNemar p" in report
    assert "## Per class" in report and all(f"| {label} | 15 |" in report for label in LABELS)
    assert "| target | model | t (from validation) | validation P / R | test P / R | test-optimal t | its test P / R |" in report
    for name in expected:
        assert f"figures/{name}" in report, f"report.md does not link {name}"
    assert "## The semantic vector space" in report and "| probe | pretrained | gru | gru_attention |" in report
    assert "One-hot against an embedding" in report
    assert report.count("; stopped by ") == 2 and "started from pretrained embedding + GRU encoder (ppmi_svd+bilm" in report

    space = json.loads((reports / "embeddings.json").read_text())
    cues = {p["token"]: p["cue_of"] for p in space["probes"]}
    assert set(cues.values()) == set(LABELS) and len(cues) == 3 * len(LABELS)
    assert set(cues) <= {w for words in CUES.values() for w in words}, "the probes are the classes' cue words"
    assert all(cues[w] == label for label, words in CUES.items() for w in words if w in cues)
    for probe in space["probes"]:
        assert set(probe["neighbours"]) == {"pretrained", "gru", "gru_attention"}
        assert all(len(rows) == 8 and rows[0][1] >= rows[-1][1] for rows in probe["neighbours"].values())
    assert space["projection"]["space"] == "pretrained" and space["one_hot"]["embedding_dim"] == 16
    confusion = pl.read_csv(reports / "plots" / "confusion" / "gru.csv")
    assert confusion.columns == ["actual", "predicted"] and set(confusion["actual"]) <= set(LABELS)
    per_class = pl.read_csv(reports / "plots" / "pr_per_class" / "nbsvm.csv")
    assert per_class.columns == ["class", "recall", "precision", "threshold"] and set(per_class["class"]) == set(LABELS)


@pytest.mark.slow
def test_dvc_reads_metrics_and_plots(three_class):
    shown = json.loads(three_class.dvc("metrics", "show", "--json").stdout)
    workspace = next(iter(shown.values()))["data"]  # keyed by revision; the workspace is ""
    assert "error" not in workspace["reports/metrics.json"]
    shown_metrics = workspace["reports/metrics.json"]["data"]
    assert "gru_attention" in shown_metrics and "mcnemar_p" in shown_metrics["comparisons"]["gru_attention_vs_gru"]
    assert "f1" in shown_metrics["gru"]["per_class"]["neutral"]
    plots = json.loads(three_class.dvc("plots", "show", "--json").stdout)
    assert "errors" not in plots, plots.get("errors")
    names = set(plots["data"])
    assert {*(f"confusion {m}" for m in MODELS), "precision-recall (test)"} <= names
    pr = plots["data"]["precision-recall (test)"][0]["content"]["data"]["values"]
    assert {row["rev"] for row in pr} and {"recall", "precision"} <= set(pr[0])
    # the per-epoch curves come from the train stages' DVCLive logs, one point per epoch run (DVC names each
    # file by what follows the files' common folder, dvclive/)
    curve = plots["data"]["validation accuracy per epoch"][0]["content"]["data"]["values"]
    epochs = json.loads((three_class.path / "reports" / "train" / "gru.json").read_text())["epochs"]
    assert sorted(int(r["step"]) for r in curve if r["filename"].startswith("gru/")) == list(range(1, epochs + 1))
    assert three_class.dvc("metrics", "diff").returncode == 0


@pytest.mark.slow
def test_one_model_param_reruns_only_it_and_retraining_is_deterministic(three_class):
    three_class.set_params({"model": {"gru": {"dropout": 0.25}}})
    try:
        assert set(stale(three_class)) == {"train@gru"}
        assert stages_run(three_class.dvc("repro")) == {"train@gru", "ensemble", "report"}  # the ensemble averages it
    finally:
        three_class.set_params({"model": {"gru": {"dropout": 0.3}}})
    # Back to the first params, retrained from scratch (not restored from DVC's run cache): same params and
    # seed must give byte-identical metrics.
    assert stages_run(three_class.dvc("repro", "--no-run-cache")) == {"train@gru", "ensemble", "report"}
    assert (three_class.path / "reports" / "metrics.json").read_bytes() == three_class.first_metrics
    assert (three_class.path / "reports" / "embeddings.json").read_bytes() == three_class.first_embeddings
    assert stale(three_class) == {}


@pytest.mark.slow
def test_predict_shows_label_probabilities_and_attended_tokens(three_class):
    text = "A wonderful, brilliant film: I loved the cast."
    out = three_class.run(sys.executable, "-m", "flows.predict", "--json", text, "dull and awful")
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == [text, "dull and awful"]
    for r in rows:
        assert r["label"] in LABELS and abs(sum(r["probabilities"].values()) - 1) < 1e-3
        assert r["top_tokens"] and all(0 <= t["weight"] <= 1 for t in r["top_tokens"])
    table = three_class.run(sys.executable, "-m", "flows.predict", "--model", "gru", text).stdout
    assert any(label in table for label in LABELS)
    for model in ("tfidf_lr", "nbsvm", "ensemble"):  # the baselines from their pickles; the ensemble averages all four
        row = json.loads(three_class.run(sys.executable, "-m", "flows.predict", "--model", model, "--json", text).stdout)
        assert row["label"] == "positive" and abs(sum(row["probabilities"].values()) - 1) < 1e-3, model
    missing = three_class.run(sys.executable, "-m", "flows.predict", check=False)
    assert missing.returncode != 0


def test_predict_loads_once_matches_the_pipeline_and_reloads_a_new_model(three_class):
    import os

    import numpy as np
    import polars as pl

    from flows.predict import predict_proba, predictor

    art = three_class.path / "artifacts"
    ingested = pl.read_parquet(three_class.path / "data" / "ingested.parquet").filter(pl.col("split") == "test").sort("id")
    piped = pl.read_parquet(three_class.path / "data" / "predictions" / "gru_attention.parquet").filter(
        pl.col("split") == "test").sort("id")
    assert ingested["id"].to_list() == piped["id"].to_list()
    probs, labels = predict_proba(ingested["text"].to_list(), "gru_attention", art)  # raw text, as a user sends it
    assert np.allclose(probs, piped.select([f"prob_{c}" for c in range(len(labels))]).to_numpy(), atol=1e-5)
    first = predictor("gru_attention", art)
    assert predictor("gru_attention", art) is first  # loaded once per process
    model = art / "gru_attention.pt"
    fresh = model.with_suffix(".new")
    fresh.write_bytes(model.read_bytes())
    os.replace(fresh, model)  # a new file in its place, as a promotion writes it
    assert predictor("gru_attention", art) is not first
    ensemble = predictor("ensemble", art)
    assert predictor("ensemble", art) is ensemble and ensemble.members["gru_attention"] is not first
    os.replace(art / "nbsvm.pkl", art / "nbsvm.moved")  # a member's file changes: the ensemble is loaded again
    try:
        with pytest.raises(FileNotFoundError, match="nbsvm.pkl is missing"):
            predictor("ensemble", art)
    finally:
        os.replace(art / "nbsvm.moved", art / "nbsvm.pkl")
    assert predictor("ensemble", art) is ensemble  # the same files again (same inode and time): nothing to reload


@pytest.mark.slow
def test_thresholds_are_chosen_on_validation_never_on_test(three_class, tmp_path):
    """Only the test rows of every prediction file change (labels and probabilities); the report, rerun on its
    own, keeps every threshold it chose and its validation figures, while its test figures move."""
    copy = Project(tmp_path / "project", {**three_class.env, "PYTHONPATH": str(tmp_path / "project")})
    shutil.copytree(three_class.path, copy.path, ignore=shutil.ignore_patterns(".dvc", ".git"))
    import polars as pl
    for name in MODELS:
        path = copy.path / "data" / "predictions" / f"{name}.parquet"
        preds = pl.read_parquet(path)
        test = pl.col("split") == "test"
        preds = preds.with_columns(  # test rows only: every label moved to the next class, probabilities rotated
            pl.when(test).then((pl.col("label_id") + 1) % 3).otherwise(pl.col("label_id")).alias("label_id"),
            *(pl.when(test).then(pl.col(f"prob_{(c + 1) % 3}")).otherwise(pl.col(f"prob_{c}")).alias(f"prob_{c}") for c in range(3)))
        preds.write_parquet(path)
    copy.run(sys.executable, "-m", "flows.report")
    before = json.loads((three_class.path / "reports" / "metrics.json").read_text())
    after = json.loads((copy.path / "reports" / "metrics.json").read_text())
    chosen_keys = ("threshold", "val_precision", "val_recall")
    for name in MODELS:
        for goal, entry in before[name]["thresholds"].items():
            chosen = {k: entry[k] for k in chosen_keys if k in entry}
            assert chosen == {k: after[name]["thresholds"][goal][k] for k in chosen}, (name, goal)
        assert after[name]["accuracy"] != before[name]["accuracy"], "the test rows did change"
    assert any(after[m]["thresholds"][g].get("test_precision") != before[m]["thresholds"][g].get("test_precision")
               for m in before if m != "comparisons" for g in before[m]["thresholds"])


@pytest.mark.slow
def test_summary_after_repro_is_short_and_names_every_model(three_class):
    """What `make repro` prints last: one row per model with its CIs, the verdict, where the report is."""
    shown = three_class.run(str(Path(sys.executable).parent / "reweigh"), "summary").stdout
    lines = shown.splitlines()
    assert len(lines) <= 20, shown
    metrics = json.loads((three_class.path / "reports" / "metrics.json").read_text())
    models = [name for name in metrics if name != "comparisons"]
    model_rows = [line for line in lines if "[" in line and line.count("[") == 2]
    assert len(model_rows) == len(models), shown
    for name, row in zip(models, model_rows):
        assert f"{metrics[name]['accuracy']:.4f} [{metrics[name]['accuracy_ci_low']:.4f}, {metrics[name]['accuracy_ci_high']:.4f}]" in row
    assert "reports/report.md" in shown and "dvc metrics show" in shown
    report = (three_class.path / "reports" / "report.md").read_text()
    verdict_first = report.split("## Verdict\n\n", 1)[1].splitlines()[0].replace("**", "")
    assert verdict_first in shown
