"""Worked example 2 of docs/adapters.md: a three-class CSV through the table adapter, no code, the params
block copied from the guide, run by `dvc repro`, so every model and the report see three classes.
"""
from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml

from conftest import Project, guide_example, make_project, select_dataset

pytestmark = pytest.mark.slow

LABELS = ["negative", "neutral", "positive"]
CUES = {
    "negative": "broken refund awful returned disappointed cracked useless".split(),
    "neutral": "arrived works fine expected average okay standard".split(),
    "positive": "loved superb excellent perfect delighted brilliant recommend".split(),
}
FILLER = "the item box it was and i my this with after day".split()


def write_reviews(path: Path, per_label: int = 60, seed: int = 0) -> None:
    """A CSV with quoted commas and quotes in the text, rows in no particular order."""
    rng = random.Random(seed)
    rows = []
    for label, cues in CUES.items():
        for _ in range(per_label):
            words = [rng.choice(cues) if rng.random() < 0.3 else rng.choice(FILLER) for _ in range(14)]
            words[3] += ","
            rows.append({"review": f'{" ".join(words)} "{rng.choice(cues)}"', "sentiment": label})
    rng.shuffle(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["review", "sentiment"])
        writer.writeheader()
        writer.writerows(rows)


def test_three_class_csv_from_the_guide_runs_through_dvc_repro(tmp_path):
    project = make_project(tmp_path)
    write_reviews(project.path / "data" / "raw" / "three_class.csv")
    select_dataset(project, guide_example("params.yaml (three-class CSV)"))

    checked = project.run(sys.executable, "-m", "reweigh.cli", "validate")
    assert "dataset 'three_class.csv' passed" in checked.stdout, checked.stdout  # the file's name, not the adapter's
    assert "dataset 'table'" not in checked.stdout

    project.dvc("repro")

    info = json.loads((project.path / "data" / "dataset.json").read_text())
    assert info["name"] == "table" and info["title"] == "three_class.csv" and info["labels"] == LABELS
    assert sum(info["rows"].values()) == 180

    ingested = pl.read_parquet(project.path / "data" / "ingested.parquet")
    test_counts = dict(ingested.filter(pl.col("split") == "test").group_by("label").len().iter_rows())
    assert test_counts == {label: 15 for label in LABELS}  # test_fraction 0.25 of 60, per class
    assert ingested["text"].str.contains(",", literal=True).all()  # quoted commas stayed inside the text

    tokens = pl.read_parquet(project.path / "data" / "tokens.parquet")
    assert sorted(tokens["label_id"].unique().to_list()) == [0, 1, 2]

    stages = yaml.safe_load((project.path / "dvc.yaml").read_text())["stages"]
    if "report" in stages:  # the whole pipeline: three-class models and a multi-class report
        metrics = project.path / "reports" / "metrics.json"
        assert metrics.is_file() and json.loads(metrics.read_text())
        report = (project.path / "reports" / "report.md").read_text()
        assert "\nDataset `three_class.csv`: classes negative, neutral, positive; rows per split " in report
        assert "Dataset `table`" not in report
        text = metrics.read_text() + report
        assert all(label in text for label in LABELS)
        assert list((project.path / "reports" / "figures").glob("*.png"))
        confusions = list((project.path / "reports" / "plots").rglob("confusion*/*.csv"))
        assert confusions, "the report writes confusion data for `dvc plots`"
        for path in confusions:  # every model's confusion matrix is 3 x 3
            table = pl.read_csv(path)
            assert set(table["actual"]) == set(LABELS) and set(table["predicted"]) <= set(LABELS)
