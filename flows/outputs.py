"""What every model stage (train@*, baseline@*, ensemble) hands the report: where its predictions and history
go, the prediction table's shape, and which labelled rows a learning-curve point keeps (train.label_limit).

Torch-free, so the baseline and ensemble stages, which import it, do not load torch.
"""
from __future__ import annotations

import numpy as np
import polars as pl

from flows.common import DATA, REPORTS
from reweigh.params import ParamsError
from reweigh.splits import stratified_split


def predictions_path(name: str):
    return DATA / "predictions" / f"{name}.parquet"


def history_path(name: str):
    return REPORTS / "train" / f"{name}.json"


def limit_labels(frame: pl.DataFrame, limit: int, seed: int) -> pl.DataFrame:
    """Keep `limit` labelled rows of train and val together (train.label_limit), each split cut in the same
    proportion, a seeded sample stratified by label_id; test (and any other split) untouched. The models and
    baselines all keep the same rows (chosen by id, whatever the table's order): a point of a learning curve.
    frame: id, split, label_id, ... (data/tokens.parquet, or the cleaned table with its label ids)."""
    labelled = frame.filter(pl.col("split").is_in(["train", "val"]))
    if not limit or limit >= labelled.height:
        return frame
    fraction = limit / labelled.height
    kept = []
    for split in ("train", "val"):
        rows = labelled.filter(pl.col("split") == split).sort("id")
        keep = stratified_split(rows["label_id"], fraction, seed, "keep", "drop")
        kept.append(rows.filter(keep == "keep"))
        short = set(rows["label_id"].unique()) - set(kept[-1]["label_id"].unique())
        if short:
            per_class = rows.group_by("label_id").len()
            smallest = int(per_class["len"].min())
            need = int(np.ceil(0.5 / smallest * labelled.height))  # rounds the smallest class up to one row
            raise ParamsError(
                f"train.label_limit={limit} keeps no {split} row of class id(s) {sorted(short)} (the smallest class has "
                f"{smallest:,} {split} rows of {rows.height:,}): set it to at least {need:,}, or 0 for all "
                f"{labelled.height:,} labelled rows")
    ids = pl.concat([k["id"] for k in kept])
    return frame.filter(~pl.col("split").is_in(["train", "val"]) | pl.col("id").is_in(ids.implode()))


def prediction_frame(split: str, ids: pl.Series, label_ids, probs) -> pl.DataFrame:
    """id, split, label_id, prob_0 .. prob_{C-1} of one split's rows: what every model hands the report stage.
    probs: (N, C) class probabilities, rows in the order of ids (N,)."""
    return pl.DataFrame({"id": ids, "split": pl.Series([split] * len(ids), dtype=pl.String),
                         "label_id": pl.Series(label_ids, dtype=pl.Int64)}).with_columns(
        pl.Series(f"prob_{c}", probs[:, c], dtype=pl.Float64) for c in range(probs.shape[1])
    )


def predictions_table(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """The val and test frames as one table (val rows first), checked to hold both splits."""
    table = pl.concat(frames)
    missing = {"val", "test"} - set(table["split"])
    if missing:
        raise ValueError(f"predictions lack the {sorted(missing)} split(s): the report needs val (to choose "
                         f"thresholds) and test (to score); check dataset.val_fraction and the ingest stage")
    return table
