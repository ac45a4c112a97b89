"""datasets: the default pipeline on data it was not tuned for, beside IMDB's two classes.

    python -m bench --sections datasets     # not in the default sections: two more `dvc repro` runs

- **imdb_ratings**: IMDB's star ratings as four classes (1-2, 3-4, 7-8, 9-10: the file names hold them),
  written as one Parquet table and read by the table adapter with no code, as a user brings their own data.
  Multi-class, so NB-SVM runs one-vs-rest, each class with its own log-count ratio.
- **imdb_1k**: IMDB with 1,000 labelled training reviews (`dataset.train_limit`), the unlabelled reviews and
  the whole test split: few labels, where pretraining on unlabelled text has to carry the neural models.

Each runs in a throwaway copy of the project (bench/pipeline.make_project) with params.yaml's defaults but
the dataset; the figures are the report's (reports/metrics.json): every model's test accuracy and macro F1
with their bootstrap CIs, and the ensemble against its best member (its paired difference, CI and McNemar p,
and whether it falls below that member by more than the member's own CI half-width).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from bench.common import timer
from bench.pipeline import _dvc, deep_update, make_project, project_env

BANDS = {"1-2": (1, 2), "3-4": (3, 4), "7-8": (7, 8), "9-10": (9, 10)}
RATINGS_FILE = "data/raw/imdb_ratings.parquet"
REPRO_TIMEOUT_S = 6 * 3600


def ratings_table(archive: str | None, per_split: int, seed: int) -> pl.DataFrame:
    """text, label (rating band), split of IMDB's reviews; at most `per_split` rows per split (0: all)."""
    from adapters.imdb import ImdbAdapter
    from flows.common import cache_dir

    df = ImdbAdapter(archive=archive, include_unsup=True, verify_counts=False).load(cache_dir())
    band = pl.lit(None, dtype=pl.String)
    for name, (low, high) in BANDS.items():
        band = pl.when(pl.col("rating").is_between(low, high)).then(pl.lit(name)).otherwise(band)
    df = df.with_columns(pl.when(pl.col("split") == "unsup").then(None).otherwise(band).alias("label"))
    if per_split:
        df = pl.concat([g.sample(n=min(per_split, g.height), seed=seed) for _, g in df.group_by("split", maintain_order=True)])
    return df.select("text", "label", "split").sort("split", "text")


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    comparisons = metrics.pop("comparisons", {})
    models = {name: {key: m[key] for key in ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "f1_macro",
                                              "f1_macro_ci_low", "f1_macro_ci_high")}
              for name, m in metrics.items()}
    out: dict[str, Any] = {"models": models}
    members = [n for n in models if n != "ensemble"]
    if "ensemble" in models and members:
        best = max(members, key=lambda n: models[n]["accuracy"])
        b, e = models[best], models["ensemble"]
        half_width = (b["accuracy_ci_high"] - b["accuracy_ci_low"]) / 2
        pair = comparisons.get(f"ensemble_vs_{best}", {})
        out["ensemble_vs_best_member"] = {
            "best_member": best, "accuracy_diff": round(e["accuracy"] - b["accuracy"], 5),
            "diff_ci": [pair.get("accuracy_diff_ci_low"), pair.get("accuracy_diff_ci_high")],
            "mcnemar_p": pair.get("mcnemar_p"), "member_ci_half_width": round(half_width, 5),
            "within_member_ci": e["accuracy"] >= b["accuracy"] - half_width,
        }
    return out


def run(work: Path, archive: str | None, params_update: dict, per_split: int, train_limit: int, seed: int) -> dict[str, Any]:
    """params_update: the benchmark's overrides (--quick: small models); per_split: rows per split of the
    ratings table (0: all); train_limit: labelled training reviews of imdb_1k."""
    imdb = {"dataset": {"options": {"archive": archive}}} if archive else {}
    runs = {
        "imdb_ratings": {"dataset": {"name": "table", "limit": 0, "train_limit": 0, "options": {
            "path": RATINGS_FILE, "split_column": "split", "title": "IMDB ratings, 4 bands"}}},
        "imdb_1k": {**imdb, "dataset": {**imdb.get("dataset", {}), "train_limit": train_limit}},
    }
    out: dict[str, Any] = {"per_split": per_split, "train_limit": train_limit, "datasets": {}}
    for name, update in runs.items():
        tmp = work / "datasets" / name
        merged = json.loads(json.dumps(params_update))
        if name == "imdb_ratings":  # another adapter: the dataset section is replaced below, not merged
            merged.pop("dataset", None)
        else:
            deep_update(merged, update)
        project = make_project(tmp / "project", merged)
        if name == "imdb_ratings":
            table = ratings_table(archive, per_split, seed)
            (project / RATINGS_FILE).parent.mkdir(parents=True, exist_ok=True)
            table.write_parquet(project / RATINGS_FILE)
            dataset = json.loads(json.dumps(update["dataset"]))
            present = set(table["label"].drop_nulls())  # a small sample may lack a band
            dataset["options"]["labels"] = [b for b in BANDS if b in present]  # in band order, not sorted
            params_file = project / "params.yaml"
            params = yaml.safe_load(params_file.read_text())
            params["dataset"] = {**{k: v for k, v in params["dataset"].items() if k not in ("name", "options")}, **dataset}
            params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        env = project_env(tmp, project, archive)
        with timer() as t:
            r = _dvc(project, env, "repro", timeout=REPRO_TIMEOUT_S)
        if r.returncode != 0:
            raise RuntimeError(f"dvc repro of {name} failed:\n{(r.stdout + r.stderr)[-3000:]}")
        info = json.loads((project / "data" / "dataset.json").read_text())
        row = {"repro_s": round(t["s"], 1), "labels": info["labels"], "rows": info["rows"],
               **_summary(json.loads((project / "reports" / "metrics.json").read_text()))}
        out["datasets"][name] = row
    return out
