"""End to end through `dvc repro`: train@gru, train@gru_attention, baseline and report on a 3-class table
dataset (the generic adapter), then what DVC and `predict` make of the outputs; and the report's numbers.
"""
from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import NEUTRAL, make_project

LABELS = ["bad", "meh", "good"]
CUES = {
    "bad": "awful terrible boring hated dreadful dull".split(),
    "meh": "average okay mediocre passable forgettable fine".split(),
    "good": "great wonderful superb loved brilliant charming".split(),
}


def write_reviews_csv(path, n_per_label: int = 70, seed: int = 0) -> None:
    rng = random.Random(seed)
    lines = ["body,stars"]
    for i in range(n_per_label * len(LABELS)):
        label = LABELS[i % len(LABELS)]
        words = [rng.choice(CUES[label]) if rng.random() < 0.25 else rng.choice(NEUTRAL) for _ in range(rng.randint(15, 40))]
        lines.append(f"\"{' '.join(words).capitalize()}.\",{label}")
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def three_class(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("three-class")
    csv = tmp / "reviews.csv"
    write_reviews_csv(csv)
    project = make_project(tmp)
    params_file = project.path / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["dataset"] = {"name": "table", "val_fraction": 0.15, "limit": 0, "options": {
        "path": str(csv), "text_column": "body", "label_column": "stars", "labels": LABELS, "test_fraction": 0.3}}
    params["train"].update(epochs=3, lr=0.01)
    params["report"]["attention_examples"] = 2
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    project.dvc("repro")
    project.first_metrics = (project.path / "reports" / "metrics.json").read_bytes()
    project.first_embeddings = (project.path / "reports" / "embeddings.json").read_bytes()
    return project


def stages_run(result) -> set[str]:
    return {line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage '")}


@pytest.mark.slow
def test_report_files_are_complete_and_well_formed(three_class):
    reports = three_class.path / "reports"
    metrics = json.loads((reports / "metrics.json").read_text())
    assert set(metrics) == {"gru", "gru_attention", "baseline"}
    for name, m in metrics.items():
        for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc", "pr_auc"):
            assert 0 <= m[key] <= 1, (name, key, m[key])
        assert m["parameters"] > 0
    assert metrics["gru"]["epochs"] >= 1 and metrics["gru_attention"]["best_epoch"] >= 1
    assert metrics["baseline"]["accuracy"] > 0.5, "the cues make this an easy task"
    timings = json.loads((reports / "timings.json").read_text())
    assert all(timings[m]["train_seconds"] >= 0 for m in metrics)

    for name in ("gru", "gru_attention"):
        history = json.loads((reports / "train" / f"{name}.json").read_text())["history"]
        assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
        assert (three_class.path / "artifacts" / f"{name}.pt").exists()
    import polars as pl
    preds = pl.read_parquet(three_class.path / "data" / "predictions" / "gru_attention.parquet")
    assert preds.columns == ["id", "label_id", "prob_0", "prob_1", "prob_2"]
    assert np.allclose(preds.select(pl.sum_horizontal("prob_0", "prob_1", "prob_2")).to_series().to_numpy(), 1, atol=1e-4)

    figures = reports / "figures"
    expected = {"confusion_gru.png", "confusion_gru_attention.png", "confusion_baseline.png", "pr_curves.png",
                "thresholds.png", "training_curves.png", "shapes.png", "attention_1.png", "attention_2.png", "embedding_space.png"}
    assert expected <= {p.name for p in figures.glob("*.png")}
    for png in figures.glob("*.png"):
        with Image.open(png) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 100, png.name
    report = (reports / "report.md").read_text()
    assert "wins" in report and "| accuracy |" in report
    for name in expected:
        assert f"figures/{name}" in report, f"report.md does not link {name}"
    assert "## The semantic vector space" in report and "| probe | pretrained | gru | gru_attention |" in report
    assert "One-hot against an embedding" in report
    assert report.count("; stopped by ") == 2 and "started from pretrained embedding (ppmi_svd" in report

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


@pytest.mark.slow
def test_dvc_reads_metrics_and_plots(three_class):
    shown = json.loads(three_class.dvc("metrics", "show", "--json").stdout)
    workspace = next(iter(shown.values()))["data"]  # keyed by revision; the workspace is ""
    assert "gru_attention" in workspace["reports/metrics.json"]["data"]
    plots = json.loads(three_class.dvc("plots", "show", "--json").stdout)
    assert "errors" not in plots, plots.get("errors")
    names = set(plots["data"])
    assert {"confusion gru", "confusion gru_attention", "confusion baseline", "precision-recall (test)"} <= names
    pr = plots["data"]["precision-recall (test)"][0]["content"]["data"]["values"]
    assert {row["rev"] for row in pr} and {"recall", "precision"} <= set(pr[0])
    assert three_class.dvc("metrics", "diff").returncode == 0


@pytest.mark.slow
def test_one_model_param_reruns_only_it_and_retraining_is_deterministic(three_class):
    three_class.set_params({"model": {"gru": {"dropout": 0.25}}})
    try:
        assert set(json.loads(three_class.dvc("status", "--json").stdout)) == {"train@gru"}
        assert stages_run(three_class.dvc("repro")) == {"train@gru", "report"}
    finally:
        three_class.set_params({"model": {"gru": {"dropout": 0.3}}})
    # Back to the first params, retrained from scratch (not restored from DVC's run cache): same params and
    # seed must give byte-identical metrics.
    assert stages_run(three_class.dvc("repro", "--no-run-cache")) == {"train@gru", "report"}
    assert (three_class.path / "reports" / "metrics.json").read_bytes() == three_class.first_metrics
    assert (three_class.path / "reports" / "embeddings.json").read_bytes() == three_class.first_embeddings
    assert json.loads(three_class.dvc("status", "--json").stdout) == {}


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
    assert "good" in table or "bad" in table or "meh" in table
    baseline = three_class.run(sys.executable, "-m", "flows.predict", "--model", "baseline", "--json", text).stdout
    assert json.loads(baseline)["label"] == "good"
    missing = three_class.run(sys.executable, "-m", "flows.predict", check=False)
    assert missing.returncode != 0
