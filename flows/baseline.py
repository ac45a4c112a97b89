"""baseline@NAME: fit one linear baseline on the cleaned text, the bars every neural model must clear.

    python -m flows.baseline nbsvm       # or tfidf_lr; dvc.yaml runs each of baseline.models (`foreach`)

Fitted on split train only (like the neural models; val is theirs for early stopping), then predicts val
(from which the report chooses the strongest baseline and the decision thresholds) and test (on which it
scores). Reads `baseline.<name>.*`, `seed` and the cleaned text; the pipelines are in models/baselines.py.
Writes artifacts/<name>.pkl (the fitted scikit-learn pipeline, which `predict` loads too),
data/predictions/<name>.parquet (id, split, label_id, prob_<class id>) and reports/train/<name>.json.
"""
from __future__ import annotations

import reweigh  # noqa: F401  (offline, quiet library defaults before prefect is imported)
import pickle
import sys
import time

import polars as pl
from prefect import flow

from flows.common import ARTIFACTS, DATA, params, read_dataset_info, run_stage
from flows.outputs import history_path, limit_labels, prediction_frame, predictions_path, predictions_table
from models.baselines import BASELINES, describe, make_baseline
from reweigh.io import atomic_path, file_sha256, write_json, write_parquet

INPUT = DATA / "clean.parquet"


def model_path(name: str):
    return ARTIFACTS / f"{name}.pkl"


def labelled_splits(labels: list[str], label_limit: int = 0, seed: int = 0) -> dict[str, pl.DataFrame]:
    """train, val and test rows of the cleaned table (id, text, label_id), label ids in data/dataset.json's order;
    train and val cut to `label_limit` rows together as the neural models cut them (flows/train.py limit_labels)."""
    df = pl.read_parquet(INPUT, columns=["id", "text", "label", "split"]).filter(pl.col("split").is_in(["train", "val", "test"]))
    df = df.with_columns(pl.col("label").replace_strict(labels, list(range(len(labels))), return_dtype=pl.Int64).alias("label_id"))
    df = limit_labels(df, label_limit, seed)
    return {s: df.filter(pl.col("split") == s) for s in ("train", "val", "test")}


@flow(name="baseline", flow_run_name="baseline-{name}", log_prints=True)
def baseline_flow(name: str) -> str:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}: python -m flows.baseline {{{'|'.join(BASELINES)}}}")
    p = params()
    labels = read_dataset_info()["labels"]
    train, val, test = labelled_splits(labels, p.train.label_limit, p.seed).values()

    started = time.perf_counter()
    pipe = make_baseline(name, getattr(p.baseline, name), p.seed).fit(train["text"].to_list(), train["label_id"].to_numpy())
    seconds = time.perf_counter() - started
    if list(pipe.classes_) != list(range(len(labels))):
        raise ValueError(f"baseline {name}: train split lacks some classes ({pipe.classes_} of {len(labels)})")
    # (N, C) each, columns in class-id order: classes_ are 0..C-1
    val_probs, probs = (pipe.predict_proba(part["text"].to_list()) for part in (val, test))
    accuracy = float((probs.argmax(1) == test["label_id"].to_numpy()).mean())

    # scikit-learn keeps a memory address (id of the stop-word list) on the vectoriser; without it the
    # pickle is byte-identical for the same data and seed.
    pipe.steps[0][1].__dict__.pop("_stop_words_id", None)
    with atomic_path(model_path(name)) as tmp:
        tmp.write_bytes(pickle.dumps({"model": name, "pipeline": pipe, "labels": labels, "clean_steps": list(p.clean.steps)}))
    write_parquet(predictions_table([prediction_frame("val", val["id"], val["label_id"].to_numpy(), val_probs),
                                     prediction_frame("test", test["id"], test["label_id"].to_numpy(), probs)]),
                  predictions_path(name))
    size = describe(pipe)
    write_json({"model": name, **size, "epochs": 0, "train_seconds": round(seconds, 1),
                "predictions_sha256": file_sha256(predictions_path(name))}, history_path(name))
    print(f"baseline {name}: {size['features']:,} features, test accuracy {accuracy:.4f}, {seconds:.0f} s → {predictions_path(name)}")
    return str(predictions_path(name))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in BASELINES:
        print(f"usage: python -m flows.baseline {{{'|'.join(BASELINES)}}}", file=sys.stderr)
        sys.exit(2)
    run_stage(lambda: baseline_flow(args[0]), f"baseline {args[0]}")


if __name__ == "__main__":
    main()
