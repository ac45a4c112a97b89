"""baseline: TF-IDF + logistic regression on the cleaned text, the bar every neural model must clear.

Fitted on split train only (like the neural models; val is theirs for early stopping), then predicts val
(from which the report chooses decision thresholds) and test (on which it scores).
Writes artifacts/baseline.pkl (the fitted scikit-learn pipeline, which `predict` can use too),
data/predictions/baseline.parquet (id, split, label_id, prob_<class id>) and reports/train/baseline.json.
"""
from __future__ import annotations

import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
import pickle
import time

import numpy as np
import polars as pl
from prefect import flow
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from flows.common import ARTIFACTS, DATA, REPORTS, params, read_dataset_info, run_stage
from flows.train import prediction_frame, predictions_table
from reweigh.io import atomic_path, write_json, write_parquet
from reweigh.params import BaselineParams

INPUT = DATA / "clean.parquet"
MODEL = ARTIFACTS / "baseline.pkl"
PREDICTIONS = DATA / "predictions" / "baseline.parquet"
SUMMARY = REPORTS / "train" / "baseline.json"


def make_pipeline(cfg: BaselineParams, seed: int) -> Pipeline:
    return Pipeline([
        ("tfidf", TfidfVectorizer(ngram_range=(1, cfg.ngram_max), min_df=cfg.min_df, max_features=cfg.max_features,
                                  sublinear_tf=True, dtype=np.float32)),
        ("logreg", LogisticRegression(C=cfg.C, max_iter=2000, random_state=seed)),
    ])


@flow(name="baseline", log_prints=True)
def baseline_flow() -> str:
    p = params()
    labels = read_dataset_info()["labels"]
    df = pl.read_parquet(INPUT, columns=["id", "text", "label", "split"]).filter(pl.col("split").is_in(["train", "val", "test"]))
    df = df.with_columns(pl.col("label").replace_strict(labels, list(range(len(labels))), return_dtype=pl.Int64).alias("label_id"))
    train, val, test = (df.filter(pl.col("split") == s) for s in ("train", "val", "test"))

    started = time.perf_counter()
    pipe = make_pipeline(p.baseline, p.seed).fit(train["text"].to_list(), train["label_id"].to_numpy())
    seconds = time.perf_counter() - started
    if list(pipe.classes_) != list(range(len(labels))):
        raise ValueError(f"baseline: train split lacks some classes ({pipe.classes_} of {len(labels)})")
    # (N, C) each, columns in class-id order: classes_ are 0..C-1
    val_probs, probs = (pipe.predict_proba(part["text"].to_list()) for part in (val, test))
    accuracy = float((probs.argmax(1) == test["label_id"].to_numpy()).mean())

    # scikit-learn keeps a memory address (id of the stop-word list) on the vectoriser; without it the
    # pickle is byte-identical for the same data and seed.
    pipe.named_steps["tfidf"].__dict__.pop("_stop_words_id", None)
    with atomic_path(MODEL) as tmp:
        tmp.write_bytes(pickle.dumps({"pipeline": pipe, "labels": labels, "clean_steps": list(p.clean.steps)}))
    write_parquet(predictions_table([prediction_frame("val", val["id"], val["label_id"].to_numpy(), val_probs),
                                     prediction_frame("test", test["id"], test["label_id"].to_numpy(), probs)]), PREDICTIONS)
    n_features = len(pipe.named_steps["tfidf"].vocabulary_)
    write_json({"model": "baseline", "parameters": int(pipe.named_steps["logreg"].coef_.size + pipe.named_steps["logreg"].intercept_.size),
                "features": n_features, "epochs": 0, "train_seconds": round(seconds, 1)}, SUMMARY)
    print(f"baseline: {n_features:,} TF-IDF features, test accuracy {accuracy:.4f}, {seconds:.0f} s → {PREDICTIONS}")
    return str(PREDICTIONS)


if __name__ == "__main__":
    run_stage(baseline_flow, "baseline")
