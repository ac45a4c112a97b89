"""The benchmark's datasets section: IMDB's ratings as a four-class table, and how it judges the ensemble.

The section's `dvc repro` runs are the pipeline's, tested elsewhere; here, what it builds and concludes."""
from __future__ import annotations

import polars as pl

from bench.datasets import BANDS, _summary, ratings_table
from conftest import make_imdb_archive


def test_ratings_table_bands_every_labelled_review_and_leaves_unsup_unlabelled(tmp_path, monkeypatch):
    monkeypatch.setenv("REWEIGH_CACHE", str(tmp_path / "cache"))
    archive = make_imdb_archive(tmp_path / "aclImdb_v1.tar.gz", n_per_label=30, n_unsup=10)
    table = ratings_table(str(archive), per_split=0, seed=0)
    assert table.columns == ["text", "label", "split"]
    assert dict(table.group_by("split").len().iter_rows()) == {"train": 60, "test": 60, "unsup": 10}
    assert table.filter(pl.col("split") == "unsup")["label"].null_count() == 10
    labelled = table.filter(pl.col("split") != "unsup")
    assert labelled["label"].null_count() == 0 and set(labelled["label"]) <= set(BANDS)
    assert len(set(labelled["label"])) == 4  # the synthetic ratings cover every band

    sample = ratings_table(str(archive), per_split=5, seed=0)
    assert dict(sample.group_by("split").len().iter_rows()) == {"train": 5, "test": 5, "unsup": 5}
    assert sample.equals(ratings_table(str(archive), per_split=5, seed=0)), "seeded"


def _model(acc: float, half: float) -> dict:
    return {"accuracy": acc, "accuracy_ci_low": acc - half, "accuracy_ci_high": acc + half,
            "f1_macro": acc, "f1_macro_ci_low": acc - half, "f1_macro_ci_high": acc + half}


def test_the_ensemble_is_judged_against_its_best_member_and_that_members_ci():
    metrics = {"gru": _model(0.80, 0.02), "nbsvm": _model(0.84, 0.02), "ensemble": _model(0.83, 0.02),
               "comparisons": {"ensemble_vs_nbsvm": {"accuracy_diff_ci_low": -0.03, "accuracy_diff_ci_high": 0.01,
                                                     "mcnemar_p": 0.4}}}
    e = _summary(metrics)["ensemble_vs_best_member"]
    assert e["best_member"] == "nbsvm" and abs(e["accuracy_diff"] + 0.01) < 1e-9 and e["within_member_ci"]
    assert e["diff_ci"] == [-0.03, 0.01] and e["mcnemar_p"] == 0.4
    worse = {"nbsvm": _model(0.84, 0.02), "ensemble": _model(0.81, 0.02), "comparisons": {}}
    assert _summary(worse)["ensemble_vs_best_member"]["within_member_ci"] is False
